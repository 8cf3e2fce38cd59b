"""The metrics that need no stack: the settings of the endpoint, and the database pool's
gauges and error counter around ``run_db`` (a real thread pool on a SQLite file)."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.request

import peewee
import pytest
from prometheus_client import REGISTRY

from devicehub.config import Settings
from devicehub.runtime import metrics_endpoint
from devicehub.storage import db
from devicehub.testing.stack import free_port

IN_USE = "devicehub_db_connections_in_use"
WAITING = "devicehub_db_calls_waiting"
ERRORS = "devicehub_db_errors_total"


def test_the_endpoint_is_on_loopback_port_9464_by_default_and_port_0_turns_it_off():
    settings = Settings.from_env({})
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", 9464)
    off = Settings.from_env({"DEVICEHUB_METRICS_PORT": "0"})
    assert off.metrics_port == 0
    assert metrics_endpoint.start(off, workers=True) is None
    assert metrics_endpoint.start(off, workers=False) is None
    chosen = Settings.from_env(
        {"DEVICEHUB_METRICS_HOST": "0.0.0.0", "DEVICEHUB_METRICS_PORT": "9100"}
    )
    assert (chosen.metrics_host, chosen.metrics_port) == ("0.0.0.0", 9100)


@pytest.mark.parametrize("raw", ["70000", "-1", "metrics"])
def test_a_metrics_port_that_is_no_port_is_refused(raw):
    with pytest.raises(SystemExit, match="DEVICEHUB_METRICS_PORT"):
        Settings.from_env({"DEVICEHUB_METRICS_PORT": raw})


def test_a_busy_metrics_port_leaves_the_service_running_without_the_endpoint(caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = Settings.from_env({"DEVICEHUB_METRICS_PORT": str(port)})
        assert metrics_endpoint.start(taken, workers=False) is None
    assert "running without the metrics endpoint" in caplog.text


def test_the_endpoint_serves_this_process_with_one_worker():
    settings = Settings.from_env({"DEVICEHUB_METRICS_PORT": str(free_port())})
    endpoint = metrics_endpoint.start(settings, workers=False)
    assert endpoint is not None
    try:
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
    finally:
        asyncio.run(endpoint.stop())
    assert "# TYPE devicehub_rpc_requests_total counter" in body


@pytest.fixture
def pool(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path / 'pool.sqlite3'}", pool_size=1)
    db.start_executor(1)
    yield database
    db.stop_executor()


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_pool_gauges_count_calls_running_and_waiting_and_a_cancelled_wait(pool):
    assert _value("devicehub_db_pool_connections") == 1
    release = threading.Event()
    running = threading.Event()

    def hold() -> None:
        running.set()
        release.wait(10)

    async def scenario() -> tuple[float, float, float, float]:
        first = asyncio.ensure_future(db.run_db(hold))
        await asyncio.to_thread(running.wait, 10)
        queued = asyncio.ensure_future(db.run_db(lambda: None))
        cancelled = asyncio.ensure_future(db.run_db(lambda: None))
        await asyncio.sleep(0)  # both submitted
        busy = (_value(IN_USE), _value(WAITING))
        cancelled.cancel()  # leaves the queue without running
        release.set()
        await first
        await queued
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return (*busy, _value(IN_USE), _value(WAITING))

    in_use_before = _value(IN_USE)
    waiting_before = _value(WAITING)
    busy_in_use, busy_waiting, idle_in_use, idle_waiting = asyncio.run(scenario())
    assert (busy_in_use - in_use_before, busy_waiting - waiting_before) == (1, 2)
    assert (idle_in_use, idle_waiting) == (in_use_before, waiting_before)


def test_a_failed_database_call_is_counted_by_its_error_class(pool):
    before = _value(ERRORS, error="OperationalError")

    def broken() -> None:
        db.execute("SELECT * FROM no_such_table")

    async def call() -> None:
        await db.run_db(broken)

    with pytest.raises(peewee.OperationalError):
        asyncio.run(call())
    assert _value(ERRORS, error="OperationalError") == before + 1
