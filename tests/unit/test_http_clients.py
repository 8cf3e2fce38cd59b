"""The provider adapters share one HTTP client per process: calls reuse its connection and
``close()`` (the server's shutdown) ends it. Against the fake providers on loopback, keeping
connections open as real providers do."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import Iterator

import fake_alimtalk
import pytest
from fake_alimtalk import FakeAlimtalk
from fake_weather import FakeWeather

from devicehub.integrations.alimtalk import AlimtalkClient, AlimtalkConfig
from devicehub.integrations.weather import WeatherClient, WeatherConfig


@pytest.fixture
def weather_fake() -> Iterator[FakeWeather]:
    provider = FakeWeather(keep_alive=True)
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
def alimtalk_fake() -> Iterator[FakeAlimtalk]:
    provider = FakeAlimtalk(keep_alive=True)
    provider.start()
    yield provider
    provider.stop()


def wait_for_closed(provider: FakeWeather | FakeAlimtalk, count: int) -> None:
    """The provider sees a closed connection once its handler thread reads the end."""
    deadline = time.monotonic() + 5
    while provider.connections_closed < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert provider.connections_closed == count


def test_weather_lookups_reuse_one_connection_until_close(weather_fake) -> None:
    client = WeatherClient(WeatherConfig(weather_fake.base_url, weather_fake.base_url))

    async def two_lookups_then_shutdown() -> None:
        for _ in range(2):
            answer = await client.current("北京")
            assert answer.temperature == "25°C"
        assert len(weather_fake.requests) == 4  # geocoding + forecast, twice
        assert weather_fake.connections_opened == 1
        assert weather_fake.connections_closed == 0
        await client.close()

    asyncio.run(two_lookups_then_shutdown())
    wait_for_closed(weather_fake, 1)
    assert weather_fake.connections_opened == 1


def test_alimtalk_sends_reuse_one_connection_until_close(alimtalk_fake) -> None:
    client = AlimtalkClient(
        AlimtalkConfig(
            alimtalk_fake.base_url,
            fake_alimtalk.APP_KEY,
            fake_alimtalk.SECRET_KEY,
            fake_alimtalk.SENDER_KEY,
            fake_alimtalk.TEMPLATE_CODE,
        )
    )

    async def two_sends_then_shutdown() -> None:
        for recipient in ("01012345678", "01087654321"):
            result = await client.send(recipient, {"deviceName": "lux"})
            assert result.ok, result
        assert alimtalk_fake.connections_opened == 1
        assert alimtalk_fake.connections_closed == 0
        await client.close()

    asyncio.run(two_sends_then_shutdown())
    wait_for_closed(alimtalk_fake, 1)
    assert alimtalk_fake.connections_opened == 1


def test_close_before_any_call_is_harmless(weather_fake) -> None:
    client = WeatherClient(WeatherConfig(weather_fake.base_url, weather_fake.base_url))
    asyncio.run(client.close())
    assert weather_fake.connections_opened == 0


def test_a_new_event_loop_gets_a_new_connection(weather_fake) -> None:
    """Connections belong to the loop that opened them: reusing one on another loop fails
    (RuntimeError: Event loop is closed), so each loop gets a client of its own."""
    client = WeatherClient(WeatherConfig(weather_fake.base_url, weather_fake.base_url))
    asyncio.run(client.current("北京"))

    async def lookup_then_shutdown() -> None:
        await client.current("北京")
        await client.close()

    asyncio.run(lookup_then_shutdown())
    assert weather_fake.connections_opened == 2
    # The first loop is gone, so its connection could not be closed by close(): only the
    # collector reclaims it (with the ResourceWarning of an unclosed socket).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    wait_for_closed(weather_fake, 2)
