"""The Open-Meteo weather adapter against a fake provider on loopback, plus its conversions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from fake_weather import FakeCity, FakeWeather

from devicehub.integrations.weather import (
    WEATHER_CODES,
    CityNotFound,
    Weather,
    WeatherClient,
    WeatherConfig,
    WeatherUnavailable,
    beaufort,
    compass_direction,
    describe_weather_code,
    format_humidity,
    format_temperature,
    wind_description,
)

CURRENT = "temperature_2m,relative_humidity_2m,weather_code,wind_speed_10m,wind_direction_10m"


@pytest.fixture
def fake() -> Iterator[FakeWeather]:
    server = FakeWeather()
    server.start()
    yield server
    server.stop()


def client_for(fake: FakeWeather, timeout: float = 2.0) -> WeatherClient:
    return WeatherClient(WeatherConfig(fake.base_url, fake.base_url, timeout))


def lookup(fake: FakeWeather, city: str, timeout: float = 2.0) -> Weather:
    return asyncio.run(client_for(fake, timeout).current(city))


# --- the client against the fake provider ---------------------------------------------


def test_documented_example(fake: FakeWeather) -> None:
    assert lookup(fake, "北京") == Weather(
        city="北京", weather="晴", temperature="25°C", humidity="50%", wind="东北风3级"
    )
    assert [r["path"] for r in fake.requests] == ["/v1/search", "/v1/forecast"]
    search, forecast = fake.requests
    assert search["query"] == {"name": "北京", "count": "1", "language": "zh", "format": "json"}
    assert forecast["query"] == {
        "latitude": "39.9075",
        "longitude": "116.39723",
        "current": CURRENT,
        "wind_speed_unit": "kmh",
        "timezone": "auto",
    }


def test_city_is_stripped_and_echoed(fake: FakeWeather) -> None:
    assert lookup(fake, "  北京\n").city == "北京"
    assert fake.requests[0]["query"]["name"] == "北京"


@pytest.mark.parametrize("city", ["", "   ", "\t\n"])
def test_empty_city_is_rejected_without_a_request(fake: FakeWeather, city: str) -> None:
    with pytest.raises(ValueError):
        lookup(fake, city)
    assert fake.requests == []


def test_other_city_values(fake: FakeWeather) -> None:
    fake.cities["哈尔滨"] = FakeCity(
        45.75,
        126.65,
        {
            "temperature_2m": -12.5,
            "relative_humidity_2m": 81,
            "weather_code": 73,
            "wind_speed_10m": 40.3,
            "wind_direction_10m": 300,
        },
    )
    assert lookup(fake, "哈尔滨") == Weather("哈尔滨", "中雪", "-13°C", "81%", "西北风6级")


def test_calm_air_without_direction(fake: FakeWeather) -> None:
    current = fake.cities["北京"].current
    current["wind_speed_10m"] = 0.0
    current["wind_direction_10m"] = None
    assert lookup(fake, "北京").wind == "静风0级"


def test_city_not_found(fake: FakeWeather) -> None:
    with pytest.raises(CityNotFound, match="火星城"):
        lookup(fake, "火星城")
    assert [r["path"] for r in fake.requests] == ["/v1/search"]


def test_provider_down(fake: FakeWeather) -> None:
    fake.stop()
    with pytest.raises(WeatherUnavailable, match="unreachable"):
        lookup(fake, "北京")
    fake.start()  # restartable on the same port
    assert lookup(fake, "北京").weather == "晴"


def test_http_500(fake: FakeWeather) -> None:
    fake.status = 500
    with pytest.raises(WeatherUnavailable, match="geocoding call answered HTTP 500"):
        lookup(fake, "北京")


def test_http_500_from_forecast_only(fake: FakeWeather) -> None:
    fake.status, fake.fault_path = 500, "/v1/forecast"
    with pytest.raises(WeatherUnavailable, match="forecast call answered HTTP 500"):
        lookup(fake, "北京")
    assert [r["path"] for r in fake.requests] == ["/v1/search", "/v1/forecast"]


def test_malformed_json(fake: FakeWeather) -> None:
    fake.malformed = True
    with pytest.raises(WeatherUnavailable, match="geocoding response is not JSON"):
        lookup(fake, "北京")


def test_malformed_json_from_forecast_only(fake: FakeWeather) -> None:
    fake.malformed, fake.fault_path = True, "/v1/forecast"
    with pytest.raises(WeatherUnavailable, match="forecast response is not JSON"):
        lookup(fake, "北京")


def test_timeout(fake: FakeWeather) -> None:
    fake.delay = 1.0
    started = time.monotonic()
    with pytest.raises(WeatherUnavailable, match=r"timed out after 0\.3 s"):
        lookup(fake, "北京", timeout=0.3)
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize(
    "field",
    ["temperature_2m", "relative_humidity_2m", "weather_code", "wind_speed_10m"],
)
def test_incomplete_forecast(fake: FakeWeather, field: str) -> None:
    del fake.cities["北京"].current[field]
    with pytest.raises(WeatherUnavailable, match=f"missing current.{field}"):
        lookup(fake, "北京")


def test_missing_direction_with_wind(fake: FakeWeather) -> None:
    del fake.cities["北京"].current["wind_direction_10m"]
    with pytest.raises(WeatherUnavailable, match="wind direction is missing"):
        lookup(fake, "北京")


def test_unknown_weather_code_from_provider(fake: FakeWeather) -> None:
    fake.cities["北京"].current["weather_code"] = 42
    with pytest.raises(WeatherUnavailable, match="unknown WMO weather code: 42"):
        lookup(fake, "北京")


def test_unexpected_units(fake: FakeWeather) -> None:
    fake.cities["北京"].units["temperature_2m"] = "°F"
    with pytest.raises(WeatherUnavailable, match="temperature_2m in '°F'"):
        lookup(fake, "北京")


# --- pure conversions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "force"),
    [
        (0, 0),
        (0.9, 0),
        (1, 1),
        (5, 1),
        (5.9, 1),
        (6, 2),
        (11, 2),
        (12, 3),
        (19, 3),
        (20, 4),
        (28, 4),
        (29, 5),
        (38, 5),
        (39, 6),
        (49, 6),
        (50, 7),
        (61, 7),
        (62, 8),
        (74, 8),
        (75, 9),
        (88, 9),
        (89, 10),
        (102, 10),
        (103, 11),
        (117, 11),
        (117.9, 11),
        (118, 12),
        (250, 12),
    ],
)
def test_beaufort(speed: float, force: int) -> None:
    assert beaufort(speed) == force


@pytest.mark.parametrize("speed", [-1, float("nan"), float("inf"), True, "5"])
def test_beaufort_rejects_nonsense(speed: object) -> None:
    with pytest.raises(ValueError):
        beaufort(speed)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("deg", "point"),
    [
        (0, "北"),
        (22.4, "北"),
        (22.5, "东北"),
        (45, "东北"),
        (90, "东"),
        (135, "东南"),
        (180, "南"),
        (225, "西南"),
        (270, "西"),
        (315, "西北"),
        (337.4, "西北"),
        (337.5, "北"),
        (359.9, "北"),
        (360, "北"),
        (-45, "西北"),
    ],
)
def test_compass_direction(deg: float, point: str) -> None:
    assert compass_direction(deg) == point


@pytest.mark.parametrize(
    ("speed", "deg", "text"),
    [
        (12.0, 45, "东北风3级"),
        (3.0, 0, "北风1级"),
        (30, 180, "南风5级"),
        (0.5, 90, "静风0级"),
        (0, None, "静风0级"),
    ],
)
def test_wind_description(speed: float, deg: float | None, text: str) -> None:
    assert wind_description(speed, deg) == text


EXPECTED_CODES = {
    0: "晴",
    1: "晴间多云",
    2: "多云",
    3: "阴",
    45: "雾",
    48: "雾",
    51: "毛毛雨",
    53: "毛毛雨",
    55: "毛毛雨",
    56: "冻毛毛雨",
    57: "冻毛毛雨",
    61: "小雨",
    63: "中雨",
    65: "大雨",
    66: "冻雨",
    67: "冻雨",
    71: "小雪",
    73: "中雪",
    75: "大雪",
    77: "米雪",
    80: "阵雨",
    81: "阵雨",
    82: "阵雨",
    85: "阵雪",
    86: "阵雪",
    95: "雷阵雨",
    96: "雷阵雨伴有冰雹",
    99: "雷阵雨伴有冰雹",
}


def test_weather_code_table_covers_every_open_meteo_code() -> None:
    assert WEATHER_CODES == EXPECTED_CODES


@pytest.mark.parametrize(("code", "text"), sorted(EXPECTED_CODES.items()))
def test_describe_weather_code(code: int, text: str) -> None:
    assert describe_weather_code(code) == text


def test_describe_integral_float_code() -> None:
    assert describe_weather_code(3.0) == "阴"  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [4, 42, 100, -1, 2.5, True, None, "0"])
def test_describe_unknown_weather_code(code: object) -> None:
    with pytest.raises(ValueError, match="WMO weather code"):
        describe_weather_code(code)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("celsius", "text"),
    [(25.2, "25°C"), (24.5, "25°C"), (25.5, "26°C"), (-0.4, "0°C"), (-3.5, "-4°C"), (0, "0°C")],
)
def test_format_temperature(celsius: float, text: str) -> None:
    assert format_temperature(celsius) == text


@pytest.mark.parametrize(
    ("percent", "text"), [(50, "50%"), (0, "0%"), (100, "100%"), (49.5, "50%")]
)
def test_format_humidity(percent: float, text: str) -> None:
    assert format_humidity(percent) == text


@pytest.mark.parametrize("percent", [-1, 100.5, float("nan")])
def test_format_humidity_rejects_out_of_range(percent: float) -> None:
    with pytest.raises(ValueError):
        format_humidity(percent)
