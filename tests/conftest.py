"""Test harness: the real stack, started once per test session for each database.

Every test that takes ``stack`` runs twice: against a devicehub server on the embedded
SQLite default and against one on a throwaway PostgreSQL cluster. Each stack is a real
``devicehub serve`` process (gRPC server + Envoy) on free loopback ports; tests talk to
it over REST through Envoy and over gRPC, exactly like clients do.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fake_alimtalk
import fake_weather
import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devicehub.testing.pgcluster import DURABLE_SETTINGS, ThrowawayCluster

REPO_ROOT = Path(__file__).resolve().parents[1]
DEVICEHUB = str(Path(sys.executable).parent / "devicehub")
SECRET_KEY = "test-secret-" + uuid.uuid4().hex
ADMIN_PASSWORD = "admin-password-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def envoy_admin(env: dict[str, str], path: str) -> str:
    """GET ``path`` from the Envoy admin interface of the stack running with ``env``: a Unix
    socket in its data directory (``curl --unix-socket``), never a TCP port."""
    connection = _UnixHTTPConnection(str(Path(env["DEVICEHUB_DATA_DIR"]) / "envoy-admin.sock"))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read().decode()
        assert response.status == 200, (response.status, body)
        return body
    finally:
        connection.close()


def within_one_window(seconds: float, needed: float) -> None:
    """Throttle windows are fixed and aligned to the clock (every process agrees on them):
    waits for a fresh window when the current one ends within ``needed`` seconds, so that
    a test counting hits never sees its counts start again halfway."""
    remaining = seconds - time.time() % seconds
    if remaining < needed:
        time.sleep(remaining + 0.5)


def unique(prefix: str = "") -> str:
    """A short unique suffix for codes and names, so tests never collide."""
    return prefix + uuid.uuid4().hex[:8].upper()


@dataclass
class Stack:
    """One running devicehub (gRPC server + Envoy) and clients for it."""

    backend: str
    env: dict[str, str]
    database_url: str
    rest_url: str
    grpc_target: str
    process: subprocess.Popen
    admin_token: str = ""
    _channels: list[grpc.Channel] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.rest_url + path

    def request(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        return requests.request(method, self.url(path), headers=headers, timeout=30, **kwargs)

    def channel(self, via_envoy: bool = False) -> grpc.Channel:
        target = self.rest_url.removeprefix("http://") if via_envoy else self.grpc_target
        channel = grpc.insecure_channel(target)
        self._channels.append(channel)
        return channel

    def login(self, username: str, password: str) -> str:
        response = self.request(
            "POST", "/api/v1/auth/token", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def new_user(self, phone: str = "01012345678") -> tuple[dict, str]:
        """Registers a fresh non-admin account; returns it and its access token."""
        username = unique("user").lower()
        response = self.request(
            "POST",
            "/api/v1/auth/register",
            json={"username": username, "password": "password-123", "phone": phone},
        )
        assert response.status_code == 200, response.text
        return response.json(), self.login(username, "password-123")

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _wait_ready(stack: Stack, deadline: float) -> None:
    """Waits until gRPC health says SERVING and Envoy answers REST."""
    channel = grpc.insecure_channel(stack.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        while time.monotonic() < deadline:
            if stack.process.poll() is not None:
                raise RuntimeError(f"devicehub serve exited with {stack.process.returncode}")
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                serving = status == health_pb2.HealthCheckResponse.SERVING
                # Envoy answers an unknown path with 404 once it listens.
                ping = stack.url("/api/v1/no-such-route")
                if serving and requests.get(ping, timeout=1).status_code == 404:
                    return
            except (grpc.RpcError, requests.ConnectionError):
                pass
            time.sleep(0.2)
        raise RuntimeError("devicehub did not become ready in time")
    finally:
        channel.close()


RTC_APP_ID = "0123456789abcdef01234567"
RTC_APP_KEY = "rtc-app-key-for-tests"


def stack_env(
    tmp: Path, database_url: str, alimtalk_url: str = "", weather_url: str = ""
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DEVICEHUB_DATA_DIR=str(tmp),
        DEVICEHUB_DATABASE_URL=database_url,
        DEVICEHUB_GRPC_PORT=str(free_port()),
        DEVICEHUB_HTTP_PORT=str(free_port()),
        DEVICEHUB_WS_PORT=str(free_port()),
        DEVICEHUB_SECRET_KEY=SECRET_KEY,
        DEVICEHUB_LOG_LEVEL="WARNING",
        DEVICEHUB_ALIMTALK_BASE_URL=alimtalk_url,
        DEVICEHUB_ALIMTALK_APP_KEY=fake_alimtalk.APP_KEY,
        DEVICEHUB_ALIMTALK_SECRET_KEY=fake_alimtalk.SECRET_KEY,
        DEVICEHUB_ALIMTALK_SENDER_KEY=fake_alimtalk.SENDER_KEY,
        DEVICEHUB_ALIMTALK_TEMPLATE_CODE=fake_alimtalk.TEMPLATE_CODE,
        DEVICEHUB_ALIMTALK_TIMEOUT="2",
        DEVICEHUB_WEATHER_GEOCODING_URL=weather_url or "http://127.0.0.1:9",
        DEVICEHUB_WEATHER_FORECAST_URL=weather_url or "http://127.0.0.1:9",
        DEVICEHUB_WEATHER_TIMEOUT="2",
        DEVICEHUB_RTC_APP_ID=RTC_APP_ID,
        DEVICEHUB_RTC_APP_KEY=RTC_APP_KEY,
        # Every test reaches the session stack from one address (127.0.0.1): its address
        # throttles are far above what the suite sends (test_throttle.py runs the defaults).
        DEVICEHUB_RTC_ADDRESS_MACS="1000000",
        DEVICEHUB_RTC_ADDRESS_MISSES="1000000",
        DEVICEHUB_LOGIN_FAILURES_PER_ADDRESS="1000000",
        DEVICEHUB_LOGIN_FAILURES_PER_USERNAME="1000000",
        DEVICEHUB_REGISTRATIONS_PER_ADDRESS="1000000",
        # Every stack runs worker processes, like a production server on a 2-core machine.
        DEVICEHUB_WORKERS="2",
    )
    return env


def start_stack(backend: str, env: dict[str, str], log_path: Path) -> Stack:
    subprocess.run(
        [DEVICEHUB, "create-admin", "admin", "--password", ADMIN_PASSWORD],
        env=env,
        check=True,
        capture_output=True,
    )
    log = log_path.open("w")
    process = subprocess.Popen([DEVICEHUB, "serve"], env=env, stdout=log, stderr=log)
    stack = Stack(
        backend=backend,
        env=env,
        database_url=env["DEVICEHUB_DATABASE_URL"],
        rest_url=f"http://127.0.0.1:{env['DEVICEHUB_HTTP_PORT']}",
        grpc_target=f"127.0.0.1:{env['DEVICEHUB_GRPC_PORT']}",
        process=process,
    )
    try:
        _wait_ready(stack, time.monotonic() + 60)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"stack failed to start:\n{log_path.read_text()[-4000:]}") from None
    stack.admin_token = stack.login("admin", ADMIN_PASSWORD)
    return stack


def stop_process(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


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


def backend_database(request, backend: str, tmp: Path, cluster: str = "pg_cluster") -> str:
    """The database of a stack of ``backend``: a SQLite file in ``tmp``, or a new database
    in the PostgreSQL cluster of the session fixture named ``cluster``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'devicehub.sqlite3'}"
    return request.getfixturevalue(cluster).create_database(unique("dh").lower())


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory, alimtalk_provider, weather_provider) -> Iterator[Stack]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"stack-{backend}")
    database_url = backend_database(request, backend, tmp)
    env = stack_env(tmp, database_url, alimtalk_provider.base_url, weather_provider.base_url)
    started = start_stack(backend, env, tmp / "serve.log")
    yield started
    started.close()
    stop_process(started.process)


@pytest.fixture
def admin(stack: Stack) -> str:
    """The admin's access token."""
    return stack.admin_token


@pytest.fixture
def user(stack: Stack) -> tuple[dict, str]:
    """A fresh non-admin account and its access token."""
    return stack.new_user()


def create_type(stack: Stack, token: str, code: str | None = None, name: str = "智能音箱") -> dict:
    response = stack.request(
        "POST",
        "/api/device/device-types/",
        token,
        json={"name": name, "code": code or unique("T"), "description": "test type"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def create_batch(stack: Stack, token: str, device_type: int) -> dict:
    response = stack.request(
        "POST",
        "/api/device/device-batches/",
        token,
        json={
            "device_type": device_type,
            "batch_number": unique("B"),
            "production_date": "2023-01-01",
            "quantity": 500,
            "description": "test batch",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def random_mac() -> str:
    return ":".join(f"{b:02X}" for b in uuid.uuid4().bytes[:6])


def list_all(stack: Stack, path: str, token: str) -> list[dict]:
    response = stack.request("GET", path, token)
    assert response.status_code == 200, response.text
    return response.json()


def create_device(stack: Stack, token: str, device_type: int, batch: int) -> dict:
    response = stack.request(
        "POST",
        "/api/device/devices/",
        token,
        json={
            "device_type": device_type,
            "batch": batch,
            "serial_number": unique("S"),
            "mac_address": random_mac(),
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def batch_create_devices(
    stack: Stack, token: str, device_type: int, batch: int, count: int, mac_prefix: str
) -> list[int]:
    """Registers ``count`` devices with batch_create (serials from 00001); their ids."""
    response = stack.request(
        "POST",
        "/api/device/devices/batch_create/",
        token,
        json={
            "device_type": device_type,
            "batch": batch,
            "start_serial": "00001",
            "count": count,
            "mac_prefix": mac_prefix,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def create_child(stack: Stack, token: str, first_name: str = "Min") -> dict:
    response = stack.request(
        "POST",
        "/api/v1/accounts/children",
        token,
        json={
            "first_name": first_name,
            "last_name": "Kim",
            "birthdate": "2015-03-01",
            "gender": "female",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class LuxSetup:
    """A non-admin parent with a child, and a registered device bound to that child."""

    token: str
    account: dict
    child: dict
    device: dict


def connect(stack: Stack, token: str, device: dict, child_id: int):
    return stack.request(
        "POST",
        "/api/v1/lux/device/set-my-device",
        token,
        params={
            "serial_code": device["device_code"],
            "mac_id": device["mac_address"],
            "unique_id": device["unique_id"],
            "real_user_id": child_id,
        },
    )


def new_device(stack: Stack) -> dict:
    """A freshly registered (unbound) device of a fresh type and batch."""
    admin = stack.admin_token
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    return create_device(stack, admin, device_type["id"], batch["id"])


def lux_setup(stack: Stack) -> LuxSetup:
    """A fresh parent with a child and a new device connected to it."""
    account, token = stack.new_user()
    child = create_child(stack, token)
    device = new_device(stack)
    response = connect(stack, token, device, child["id"])
    assert response.status_code == 200, response.text
    return LuxSetup(token=token, account=account, child=child, device=device)


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


def query_database(stack: Stack, sql: str, params: tuple = ()) -> list[tuple]:
    """Reads the stack's database directly (for what no API exposes, e.g. temp records).

    ``sql`` uses ``?`` placeholders on both databases.
    """
    if stack.backend == "sqlite":
        import sqlite3

        path = stack.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as connection:
            return connection.execute(sql, params).fetchall()
    import psycopg2

    with psycopg2.connect(stack.database_url) as connection, connection.cursor() as cursor:
        cursor.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall()
