"""Fault tests: PostgreSQL restarts under live subscribers and pooled connections.

The stack here runs on its own database in a cluster with production durability, and the
tests restart that cluster (``pg_ctl restart -m fast`` and ``-m immediate``, back to back)
while gRPC, server-sent-event and WebSocket subscribers stay connected. The promises:

- after any number of restarts every live subscription receives every message stored
  after the database is back, exactly once, without reconnecting and without a service
  restart;
- while a server process cannot LISTEN, its health says NOT_SERVING, and SERVING again
  once it can;
- token revocations, which travel on the same LISTEN connection, reach every process
  after the restarts too;
- pooled connections that the restart killed are replaced before use: no call after the
  database is back fails because of one.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from websockets.sync.client import connect

from devicehub.testing.pgcluster import ThrowawayCluster
from devicehub.testing.stack import Stack, start_stack
from devicehub.v1 import account_pb2, account_pb2_grpc

from api_client import create_child, metadata, query_database
from bound_accounts import user_with_bound_device
from stack_settings import ADMIN_PASSWORD, stack_env
from streams import MESSAGES, SseStream, Subscription, ws_url
from worker_processes import health_status, wait_until, worker_channel

RECOVERY_TIMEOUT = 30.0
WAIT = 20.0


@pytest.fixture(scope="module")
def pg_stack(
    durable_pg_cluster: ThrowawayCluster, tmp_path_factory, alimtalk_provider, weather_provider
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack-faults-db")
    database_url = durable_pg_cluster.create_database("faults_db")
    env = stack_env(tmp, database_url, alimtalk_provider.base_url, weather_provider.base_url)
    started = start_stack("postgresql", env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


class WebSocketStream:
    """The documented WebSocket channel through Envoy, read by a thread into a queue."""

    def __init__(self, stack: Stack, user_id: int, token: str) -> None:
        self.socket = connect(ws_url(stack, user_id, token), open_timeout=10)
        self.events: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self.socket:
                self.events.put(json.loads(frame))
        except Exception as error:
            self.events.put(error)

    def close(self) -> None:
        self.socket.close()


def _ids_until(next_id, last_id: int) -> list[int]:
    """Message ids from ``next_id()`` until ``last_id`` arrives (or the wait runs out)."""
    ids: list[int] = []
    deadline = time.monotonic() + WAIT
    while not ids or ids[-1] < last_id:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"message {last_id} not received; got {ids}")
        message_id = next_id(remaining)
        if message_id is not None:
            ids.append(message_id)
    return ids


def _grpc_next(subscription: Subscription):
    def next_id(timeout: float) -> int | None:
        event = subscription.next_event(timeout)
        return event.message.id if event.WhichOneof("event") == "message" else None

    return next_id


def _queue_next(events: queue.Queue, kind: str):
    def next_id(timeout: float) -> int | None:
        try:
            event = events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(event, Exception):
            pytest.fail(f"{kind} stream ended: {event!r}")
        if kind == "sse":
            return int(event["message"]["id"]) if "message" in event else None
        return int(event["id"])

    return next_id


def _stored_ids(stack: Stack, account_id: int, after_id: int) -> list[int]:
    rows = query_database(
        stack,
        "SELECT id FROM message WHERE account_id = ? AND id > ? ORDER BY id",
        (account_id, after_id),
    )
    return [row[0] for row in rows]


def _send_until_accepted(stack: Stack, token: str, user_id: int, content: str) -> float:
    """Sends until the service accepts again after a restart; seconds it took."""
    started = time.monotonic()
    while True:
        try:
            response = stack.request(
                "POST",
                MESSAGES,
                token,
                json={"type": "text", "message": {"content": content}, "user_id": str(user_id)},
            )
            if response.status_code == 200:
                return time.monotonic() - started
            assert response.status_code == 503, response.text  # database still coming back
        except OSError:
            pass
        if time.monotonic() - started > RECOVERY_TIMEOUT:
            pytest.fail(f"sending did not recover within {RECOVERY_TIMEOUT} s")
        time.sleep(0.1)


def _refused(stub: account_pb2_grpc.AccountServiceStub, token: str) -> bool:
    try:
        stub.GetMyAccount(account_pb2.GetMyAccountRequest(), metadata=metadata(token), timeout=5)
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def _listen_connections(cluster: ThrowawayCluster, dbname: str) -> int:
    return int(
        cluster.psql(
            "SELECT count(*) FROM pg_stat_activity"
            f" WHERE datname = '{dbname}' AND query LIKE 'LISTEN%'"
        )
    )


def test_live_delivery_survives_repeated_database_restarts(pg_stack, durable_pg_cluster):
    stack = pg_stack
    account, token = user_with_bound_device(stack)
    user_id = account["id"]
    with worker_channel(stack, 0) as first, worker_channel(stack, 1) as second:
        grpc_subscriptions = [Subscription(first, token), Subscription(second, token)]
        sse = [SseStream(stack, token), SseStream(stack, token)]
        websocket = WebSocketStream(stack, user_id, token)
        readers = {
            "grpc worker 0": _grpc_next(grpc_subscriptions[0]),
            "grpc worker 1": _grpc_next(grpc_subscriptions[1]),
            "sse 1": _queue_next(sse[0].events, "sse"),
            "sse 2": _queue_next(sse[1].events, "sse"),
            "websocket": _queue_next(websocket.events, "ws"),
        }
        try:
            _send_until_accepted(stack, token, user_id, "warm-up")
            (warm_up,) = _stored_ids(stack, user_id, 0)
            for name, next_id in readers.items():
                assert _ids_until(next_id, warm_up) == [warm_up], name
            last = warm_up
            recoveries = []
            # Single restarts of both kinds, then two back to back before anything is sent.
            for modes in (["fast"], ["immediate"], ["fast", "immediate"], ["immediate", "fast"]):
                for mode in modes:
                    durable_pg_cluster.restart(mode)
                recoveries.append(_send_until_accepted(stack, token, user_id, "+".join(modes)))
                for i in range(2):
                    response = stack.request(
                        "POST",
                        MESSAGES,
                        token,
                        json={"type": "text", "message": {"content": f"m{i}"}, "user_id": ""},
                    )
                    assert response.status_code == 200, response.text
                expected = _stored_ids(stack, user_id, last)
                assert len(expected) >= 3, expected
                for name, next_id in readers.items():
                    received = _ids_until(next_id, expected[-1])
                    assert received == expected, (name, modes, received, expected)
                last = expected[-1]
            print(f"send recovery after restarts (s): {[round(r, 2) for r in recoveries]}")
            # Both workers LISTEN again, and say they serve: once the readiness probe has
            # seen the database answer too (a probe that ran into the last restart is
            # repeated every 0.25 s; before, only after the full 2 s interval).
            assert wait_until(lambda: _listen_connections(durable_pg_cluster, "faults_db") == 2)
            for channel in (first, second):
                assert wait_until(
                    lambda c=channel: health_status(c) == health_pb2.HealthCheckResponse.SERVING,
                    5,
                )
            # Revocations travel on the same listener: a password change after the
            # restarts ends the old token on both workers.
            response = stack.request(
                "POST",
                "/api/v1/accounts/me/password",
                token,
                json={"current_password": "password-123", "new_password": "password-456"},
            )
            assert response.status_code == 200, response.text
            for channel in (first, second):
                stub = account_pb2_grpc.AccountServiceStub(channel)
                assert wait_until(lambda s=stub: _refused(s, token), 5)
        finally:
            for subscription in grpc_subscriptions:
                subscription.cancel()
            for stream in sse:
                stream.close()
            websocket.close()


def test_health_is_not_serving_while_the_listener_cannot_reconnect(pg_stack, durable_pg_cluster):
    stack = pg_stack
    account, token = user_with_bound_device(stack)
    serving = health_pb2.HealthCheckResponse.SERVING
    with worker_channel(stack, 0) as first, worker_channel(stack, 1) as second:
        try:
            durable_pg_cluster.psql("ALTER DATABASE faults_db WITH ALLOW_CONNECTIONS false")
            durable_pg_cluster.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = 'faults_db' AND query LIKE 'LISTEN%'"
            )
            for channel in (first, second):
                assert wait_until(lambda c=channel: health_status(c) != serving, 15)
        finally:
            durable_pg_cluster.psql("ALTER DATABASE faults_db WITH ALLOW_CONNECTIONS true")
        for channel in (first, second):
            assert wait_until(lambda c=channel: health_status(c) == serving, 15)
        # And live delivery works again on both.
        subscriptions = [Subscription(first, token), Subscription(second, token)]
        try:
            _send_until_accepted(stack, token, account["id"], "after")
            (sent,) = _stored_ids(stack, account["id"], 0)
            for subscription in subscriptions:
                assert _ids_until(_grpc_next(subscription), sent) == [sent]
        finally:
            for subscription in subscriptions:
                subscription.cancel()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_no_call_fails_on_a_connection_the_restart_killed(pg_stack, durable_pg_cluster, mode):
    stack = pg_stack
    _, token = stack.new_user()
    create_child(stack, token)
    paths = [
        "/api/v1/accounts/me",
        "/api/v1/lux/device/get-all-device",
        "/api/v1/accounts/children",
    ]
    for path in paths:  # every pooled connection of both workers has been used
        for _ in range(10):
            assert stack.request("GET", path, token).status_code == 200
    durable_pg_cluster.restart(mode)
    # Wait until the service answers again (the listener reconnects), then let it idle.
    assert wait_until(
        lambda: stack.request("GET", "/api/v1/ping").status_code == 200, RECOVERY_TIMEOUT
    )
    time.sleep(1)
    failures = []
    for call in range(60):
        path = paths[call % len(paths)]
        response = stack.request("GET", path, token)
        if response.status_code != 200:
            failures.append((path, response.status_code, response.text))
    assert failures == []


def test_grpc_calls_after_a_restart_do_not_fail_on_dead_connections(pg_stack, durable_pg_cluster):
    """The same over native gRPC, on each worker's own socket."""
    stack = pg_stack
    _, token = stack.new_user()
    with worker_channel(stack, 0) as first, worker_channel(stack, 1) as second:
        stubs = [account_pb2_grpc.AccountServiceStub(c) for c in (first, second)]
        request = account_pb2.GetMyAccountRequest()
        for stub in stubs:
            for _ in range(10):
                stub.GetMyAccount(request, metadata=metadata(token), timeout=10)
        durable_pg_cluster.restart("fast")
        assert wait_until(
            lambda: stack.request("GET", "/api/v1/ping").status_code == 200, RECOVERY_TIMEOUT
        )
        time.sleep(1)
        codes = []
        for call in range(40):
            try:
                stubs[call % 2].GetMyAccount(request, metadata=metadata(token), timeout=10)
            except grpc.RpcError as error:
                codes.append(error.code())
        assert codes == []
