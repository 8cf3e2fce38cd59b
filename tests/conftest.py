"""Test fixtures: the real stack, started once per test session for each database.

Every test that takes ``stack`` runs twice: against a devicehub server on the embedded
SQLite default and against one on a throwaway PostgreSQL cluster. Each stack is a real
``devicehub serve`` process (gRPC server + Envoy) on free loopback ports
(devicehub.testing.stack); tests talk to it over REST through Envoy and over gRPC, exactly
like clients do, with the helpers of tests/api_client.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import fake_alimtalk
import fake_weather
import pytest

from devicehub.testing.pgcluster import DURABLE_SETTINGS, ThrowawayCluster
from devicehub.testing.stack import Stack, start_stack

from api_client import LuxSetup, lux_setup
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[ThrowawayCluster]:
    with ThrowawayCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def durable_pg_cluster() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL cluster with production durability (fsync, synchronous commit and
    full-page writes on), for the fault tests: restarts and crashes behave as in production."""
    with ThrowawayCluster(settings=DURABLE_SETTINGS) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def alimtalk_provider() -> Iterator[fake_alimtalk.FakeAlimtalk]:
    """The fake notification provider every stack is configured to use."""
    provider = fake_alimtalk.FakeAlimtalk()
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def weather_provider() -> Iterator[fake_weather.FakeWeather]:
    """The fake weather provider (Open-Meteo format) every stack is configured to use."""
    provider = fake_weather.FakeWeather()
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory, alimtalk_provider, weather_provider) -> Iterator[Stack]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"stack-{backend}")
    database_url = backend_database(request, backend, tmp)
    env = stack_env(tmp, database_url, alimtalk_provider.base_url, weather_provider.base_url)
    started = start_stack(backend, env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


@pytest.fixture
def admin(stack: Stack) -> str:
    """The admin's access token."""
    return stack.admin_token


@pytest.fixture
def user(stack: Stack) -> tuple[dict, str]:
    """A fresh non-admin account and its access token."""
    return stack.new_user()


@pytest.fixture
def lux(stack: Stack) -> LuxSetup:
    return lux_setup(stack)


@pytest.fixture
def in_process_db(stack: Stack):
    """The stack's database opened in the test process, for domain-level tests."""
    import devicehub.storage.db as db

    database = db.open_database(stack.database_url, pool_size=2)
    yield database
    database.close_all()
