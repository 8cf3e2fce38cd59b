"""Current weather for a city through Open-Meteo (https://open-meteo.com): the provider adapter.

Two key-less calls, each against its own configurable base URL:

1. Geocoding: ``GET {geocoding_url}/v1/search?name=<city>&count=1&language=zh&format=json``
   answers ``{"results": [{"name", "latitude", "longitude", "country", ...}]}``; the
   ``results`` key is absent (or the list empty) when nothing matches.
2. Forecast: ``GET {forecast_url}/v1/forecast?latitude=..&longitude=..&current=temperature_2m,
   relative_humidity_2m,weather_code,wind_speed_10m,wind_direction_10m&wind_speed_unit=kmh
   &timezone=auto`` answers ``{"current": {...}, "current_units": {...}}``.

The result is formatted like the device API's ``weather`` message (``"晴"``, ``"25°C"``,
``"50%"``, ``"东北风3级"``). Nothing is ever made up: an unreachable, slow, failing or
unintelligible provider raises :class:`WeatherUnavailable`, an unknown city raises
:class:`CityNotFound`. Every call of a process goes through one shared HTTP client
(``http_client.py``), closed on shutdown.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from devicehub import metrics
from devicehub.integrations.http_client import SharedHttpClient

GEOCODING_PATH = "/v1/search"
FORECAST_PATH = "/v1/forecast"
CURRENT_FIELDS = (
    "temperature_2m",
    "relative_humidity_2m",
    "weather_code",
    "wind_speed_10m",
    "wind_direction_10m",
)
# The units the formatting below assumes; a provider answering in others is refused.
EXPECTED_UNITS = {
    "temperature_2m": "°C",
    "relative_humidity_2m": "%",
    "wind_speed_10m": "km/h",
}


@dataclass(frozen=True)
class WeatherConfig:
    geocoding_url: str = "https://geocoding-api.open-meteo.com"
    forecast_url: str = "https://api.open-meteo.com"
    timeout: float = 5.0  # seconds, for each of the two provider calls


@dataclass(frozen=True)
class Weather:
    """Current weather, every field formatted exactly as the device API documents it."""

    city: str
    weather: str
    temperature: str
    humidity: str
    wind: str


class WeatherUnavailable(Exception):
    """The provider could not give an answer: unreachable, timeout, non-2xx or bad response."""


class CityNotFound(Exception):
    """The geocoding call found no place with the requested name."""


# Every WMO weather interpretation code Open-Meteo emits, in the wording of Chinese
# weather reports (China Meteorological Administration terms where one exists).
WEATHER_CODES: dict[int, str] = {
    0: "晴",
    1: "晴间多云",
    2: "多云",
    3: "阴",
    45: "雾",
    48: "雾",  # depositing rime fog
    51: "毛毛雨",  # light
    53: "毛毛雨",  # moderate
    55: "毛毛雨",  # dense
    56: "冻毛毛雨",  # light freezing drizzle
    57: "冻毛毛雨",  # dense freezing drizzle
    61: "小雨",
    63: "中雨",
    65: "大雨",
    66: "冻雨",  # light freezing rain
    67: "冻雨",  # heavy freezing rain
    71: "小雪",
    73: "中雪",
    75: "大雪",
    77: "米雪",  # snow grains
    80: "阵雨",  # slight
    81: "阵雨",  # moderate
    82: "阵雨",  # violent
    85: "阵雪",  # slight
    86: "阵雪",  # heavy
    95: "雷阵雨",  # slight or moderate thunderstorm
    96: "雷阵雨伴有冰雹",  # thunderstorm with slight hail
    99: "雷阵雨伴有冰雹",  # thunderstorm with heavy hail
}

# Lower bounds (km/h) of Beaufort forces 1..12.
BEAUFORT_KMH = (1, 6, 12, 20, 29, 39, 50, 62, 75, 89, 103, 118)

# Where the wind blows FROM, clockwise from north in 45° sectors centred on each point.
COMPASS_POINTS = ("北", "东北", "东", "东南", "南", "西南", "西", "西北")


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def _round_half_up(value: float) -> int:
    """Round to the nearest integer, halves away from zero (24.5 -> 25, -0.5 -> -1)."""
    return int(Decimal(repr(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def describe_weather_code(code: int | float) -> str:
    """Chinese text for a WMO weather code; ValueError for a code outside the table."""
    if isinstance(code, bool):
        raise ValueError(f"not a WMO weather code: {code!r}")
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    if not isinstance(code, int) or code not in WEATHER_CODES:
        raise ValueError(f"unknown WMO weather code: {code!r}")
    return WEATHER_CODES[code]


def beaufort(speed_kmh: float) -> int:
    """Beaufort force (0-12) of a wind speed in km/h."""
    speed = _finite(speed_kmh, "wind speed")
    if speed < 0:
        raise ValueError(f"wind speed must not be negative, got {speed_kmh!r}")
    return sum(1 for bound in BEAUFORT_KMH if speed >= bound)


def compass_direction(deg: float) -> str:
    """8-point Chinese compass point for a direction in degrees (0 and 360 are 北).

    Sectors are 45° wide and centred on the points; a boundary belongs to the next point
    clockwise (22.4 -> 北, 22.5 -> 东北, 337.5 -> 北).
    """
    degrees = _finite(deg, "wind direction") % 360.0
    return COMPASS_POINTS[int((degrees + 22.5) // 45.0) % 8]


def wind_description(speed_kmh: float, direction_deg: float | None) -> str:
    """``"<direction>风<force>级"``, e.g. ``"东北风3级"`` for 12 km/h from 45°.

    Calm air (force 0) has no direction, so it reads ``"静风0级"`` whatever the direction.
    """
    force = beaufort(speed_kmh)
    if force == 0:
        return "静风0级"
    if direction_deg is None:
        raise ValueError("wind direction is missing")
    return f"{compass_direction(direction_deg)}风{force}级"


def format_temperature(celsius: float) -> str:
    """``"25°C"`` for 25.2."""
    return f"{_round_half_up(_finite(celsius, 'temperature'))}°C"


def format_humidity(percent: float) -> str:
    """``"50%"`` for 50; ValueError outside 0-100."""
    value = _finite(percent, "relative humidity")
    if not 0 <= value <= 100:
        raise ValueError(f"relative humidity out of range: {percent!r}")
    return f"{_round_half_up(value)}%"


class WeatherClient:
    """Looks up the current weather of a city: geocode, then forecast."""

    def __init__(self, config: WeatherConfig) -> None:
        self.config = config
        self._http = SharedHttpClient(config.timeout)

    async def close(self) -> None:
        await self._http.close()

    async def current(self, city: str) -> Weather:
        name = city.strip() if isinstance(city, str) else ""
        if not name:
            raise ValueError("city must be a non-empty string")
        try:
            latitude, longitude = await self._geocode(name)
            current = await self._forecast(latitude, longitude)
            weather = _to_weather(name, current)
        except CityNotFound:
            metrics.provider_call("weather", "city_not_found")
            raise
        except WeatherUnavailable:
            metrics.provider_call("weather", "unavailable")
            raise
        metrics.provider_call("weather", "ok")
        return weather

    async def _geocode(self, name: str) -> tuple[float, float]:
        payload = await self._get_json(
            "geocoding",
            self.config.geocoding_url,
            GEOCODING_PATH,
            {"name": name, "count": "1", "language": "zh", "format": "json"},
        )
        results = payload.get("results")
        if results is None or results == []:
            raise CityNotFound(f"no place named {name!r} known to the weather provider")
        if not isinstance(results, list) or not isinstance(results[0], dict):
            raise WeatherUnavailable("weather provider geocoding response: 'results' malformed")
        place = results[0]
        try:
            latitude = _finite(place["latitude"], "latitude")
            longitude = _finite(place["longitude"], "longitude")
        except (KeyError, ValueError) as error:
            raise WeatherUnavailable(
                f"weather provider geocoding response incomplete: {error}"
            ) from None
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise WeatherUnavailable(
                f"weather provider geocoding response: bad coordinates {latitude}, {longitude}"
            )
        return latitude, longitude

    async def _forecast(self, latitude: float, longitude: float) -> dict[str, Any]:
        payload = await self._get_json(
            "forecast",
            self.config.forecast_url,
            FORECAST_PATH,
            {
                "latitude": repr(latitude),
                "longitude": repr(longitude),
                "current": ",".join(CURRENT_FIELDS),
                "wind_speed_unit": "kmh",
                "timezone": "auto",
            },
        )
        current = payload.get("current")
        if not isinstance(current, dict):
            raise WeatherUnavailable("weather provider forecast response incomplete: no 'current'")
        # Calm air may have no direction (wind_description needs one only for force >= 1).
        missing = [
            field
            for field in CURRENT_FIELDS
            if field != "wind_direction_10m" and current.get(field) is None
        ]
        if missing:
            raise WeatherUnavailable(
                f"weather provider forecast response incomplete: missing current.{missing[0]}"
            )
        units = payload.get("current_units")
        if isinstance(units, dict):
            for field, unit in EXPECTED_UNITS.items():
                if field in units and units[field] != unit:
                    raise WeatherUnavailable(
                        f"weather provider forecast response: {field} in {units[field]!r},"
                        f" expected {unit!r}"
                    )
        return current

    async def _get_json(
        self, call: str, base_url: str, path: str, params: dict[str, str]
    ) -> dict[str, Any]:
        url = base_url.rstrip("/") + path
        timeout = self.config.timeout
        try:
            # httpx's timeout bounds each network operation; this bounds the whole call.
            async with asyncio.timeout(timeout):
                response = await self._http.client().get(url, params=params)
        except (TimeoutError, httpx.TimeoutException):
            raise WeatherUnavailable(
                f"weather provider {call} call timed out after {timeout:g} s"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise WeatherUnavailable(
                f"weather provider {call} call failed, provider unreachable: {error!r}"
            ) from None
        if not response.is_success:
            reason = ""
            try:
                body = response.json()
                if isinstance(body, dict) and body.get("reason"):
                    reason = f": {body['reason']}"
            except ValueError:
                pass
            raise WeatherUnavailable(
                f"weather provider {call} call answered HTTP {response.status_code}{reason}"
            )
        try:
            payload = response.json()
        except ValueError:
            raise WeatherUnavailable(
                f"weather provider {call} response is not JSON: {response.text[:200]!r}"
            ) from None
        if not isinstance(payload, dict):
            raise WeatherUnavailable(f"weather provider {call} response is not a JSON object")
        return payload


def _to_weather(city: str, current: dict[str, Any]) -> Weather:
    try:
        return Weather(
            city=city,
            weather=describe_weather_code(current["weather_code"]),
            temperature=format_temperature(current["temperature_2m"]),
            humidity=format_humidity(current["relative_humidity_2m"]),
            wind=wind_description(current["wind_speed_10m"], current.get("wind_direction_10m")),
        )
    except ValueError as error:
        raise WeatherUnavailable(f"weather provider forecast response unusable: {error}") from None
