"""A fake Open-Meteo (geocoding + forecast) on loopback.

Serves both ``GET /v1/search`` (geocoding) and ``GET /v1/forecast`` on one port, so
``base_url`` works for both ``WeatherConfig.geocoding_url`` and ``forecast_url``. Speaks
the documented formats: a search for a name in ``cities`` answers ``{"results": [...]}``,
any other name answers ``{"generationtime_ms": ...}`` without ``results``; a forecast
for a known city's coordinates answers ``{"current": ..., "current_units": ...}``.

Faults: ``status`` (answer that HTTP status with an Open-Meteo error body), ``malformed``
(answer 200 with broken JSON), ``delay`` (sleep that many seconds before answering);
``fault_path`` limits them to one path (e.g. ``"/v1/forecast"``), ``None`` means both.
``stop()`` closes the port (provider down) and ``start()`` reopens it on the same port.

``keep_alive`` and the connection counters: ``fake_provider.FakeProvider``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fake_provider import FakeProvider

SEARCH_PATH = "/v1/search"
FORECAST_PATH = "/v1/forecast"
CURRENT_UNITS = {
    "time": "iso8601",
    "interval": "seconds",
    "temperature_2m": "°C",
    "relative_humidity_2m": "%",
    "weather_code": "wmo code",
    "wind_speed_10m": "km/h",
    "wind_direction_10m": "°",
}


@dataclass
class FakeCity:
    """A known place: coordinates and the ``current`` block its forecast answers."""

    latitude: float
    longitude: float
    current: dict[str, Any]
    country: str = "中国"
    units: dict[str, str] = field(default_factory=lambda: dict(CURRENT_UNITS))


def beijing() -> FakeCity:
    """The device API's example: 晴, 25°C, 50%, 东北风3级."""
    return FakeCity(
        latitude=39.9075,
        longitude=116.39723,
        current={
            "time": "2025-06-01T14:00",
            "interval": 900,
            "temperature_2m": 25.2,
            "relative_humidity_2m": 50,
            "weather_code": 0,
            "wind_speed_10m": 12.0,
            "wind_direction_10m": 45,
        },
    )


class FakeWeather(FakeProvider):
    def __init__(self, keep_alive: bool = False) -> None:
        super().__init__(keep_alive)
        self.cities: dict[str, FakeCity] = {"北京": beijing()}
        self.requests: list[dict[str, Any]] = []
        self.status: int | None = None
        self.malformed = False
        self.delay = 0.0
        self.fault_path: str | None = None

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == SEARCH_PATH:
            city = self.cities.get(query.get("name", ""))
            if city is None:
                return 200, {"generationtime_ms": 0.5}
            result = {
                "id": 1816670,
                "name": query["name"],
                "latitude": city.latitude,
                "longitude": city.longitude,
                "country": city.country,
                "timezone": "Asia/Shanghai",
            }
            return 200, {"results": [result], "generationtime_ms": 0.5}
        if path == FORECAST_PATH:
            try:
                latitude = float(query["latitude"])
                longitude = float(query["longitude"])
            except (KeyError, ValueError):
                return 400, {"error": True, "reason": "Parameter 'latitude' is required"}
            for city in self.cities.values():
                if (city.latitude, city.longitude) == (latitude, longitude):
                    return 200, {
                        "latitude": latitude,
                        "longitude": longitude,
                        "timezone": "Asia/Shanghai",
                        "current_units": city.units,
                        "current": city.current,
                    }
            return 400, {"error": True, "reason": "fake: no city at these coordinates"}
        return 404, {"error": True, "reason": "Not Found"}

    def start(self) -> None:
        fake = self

        class Handler(self.handler_base()):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                fake.requests.append(
                    {"path": url.path, "query": query, "headers": dict(self.headers)}
                )
                faulty = fake.fault_path in (None, url.path)
                if faulty and fake.delay:
                    time.sleep(fake.delay)
                if faulty and fake.status is not None:
                    status, raw = fake.status, b'{"error":true,"reason":"fake provider failure"}'
                elif faulty and fake.malformed:
                    status, raw = 200, b'{"results": [{"name": "\xe5\x8c'
                else:
                    status, payload = fake._answer(url.path, query)
                    raw = json.dumps(payload, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json; charset=utf-8")
                    self.send_header("content-length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:  # the client gave up (timeout tests)
                    pass

        self.serve(Handler, poll_interval=0.05)
