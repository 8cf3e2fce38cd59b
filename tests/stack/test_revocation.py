"""Tokens die with their account: deleting it, changing its password or its admin flag
revokes every access and refresh token it had, in every worker process, and ends its open
message streams (gRPC, SSE, WebSocket).

Revocation must not wait for a backstop: every wait below is bounded by ``PROPAGATION``
seconds, far below the 60 s after which every process re-reads all revocations anyway.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time

import grpc
import jwt
import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

import devicehub.storage.db as db
from devicehub.broker import REVOKED, MessageBroker
from devicehub.storage.migrate import MIGRATIONS_DIR, apply_migrations
from devicehub.testing.stack import Stack, unique
from devicehub.v1 import (
    account_pb2,
    account_pb2_grpc,
    binding_pb2,
    binding_pb2_grpc,
    device_type_pb2,
    device_type_pb2_grpc,
)

from api_client import connect, create_child, metadata, new_device, query_database
from bound_accounts import user_with_bound_device
from stack_settings import SECRET_KEY
from streams import Subscription, send_text, ws_url
from worker_processes import WORKERS, worker_channel

INVALID = "Could not validate credentials"
PASSWORD = "password-123"
ME = "/api/v1/accounts/me"
PASSWORD_PATH = "/api/v1/accounts/me/password"
PROPAGATION = 5.0  # seconds another worker may take to hear of a revocation
STREAM_END = 15.0
# Protected reads of both REST APIs; the 401 body differs by API.
REST_READS = {
    "/api/device/device-types/": {"status": "error", "message": INVALID, "code": "UNAUTHENTICATED"},
    "/api/device/user-devices/": {"status": "error", "message": INVALID, "code": "UNAUTHENTICATED"},
    "/api/v1/accounts/children": {"detail": INVALID},
    ME: {"detail": INVALID},
}
# Envoy spreads REST calls over the workers; this many of each reach both.
REST_REPEATS = 4


def register(stack: Stack) -> dict:
    username = unique("rev").lower()
    response = stack.request(
        "POST", "/api/v1/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return response.json()


def login(stack: Stack, username: str, password: str = PASSWORD) -> requests.Response:
    return stack.request(
        "POST", "/api/v1/auth/token", json={"username": username, "password": password}
    )


def token_pair(stack: Stack, username: str, password: str = PASSWORD) -> dict:
    response = login(stack, username, password)
    assert response.status_code == 200, response.text
    return response.json()


def grpc_reads(channel: grpc.Channel, token: str) -> list:
    """The protected reads of the brief, over gRPC: /me, children, user devices, types."""
    auth = metadata(token)
    accounts = account_pb2_grpc.AccountServiceStub(channel)
    bindings = binding_pb2_grpc.BindingServiceStub(channel)
    types = device_type_pb2_grpc.DeviceTypeServiceStub(channel)
    return [
        lambda: accounts.GetMyAccount(account_pb2.GetMyAccountRequest(), metadata=auth),
        lambda: accounts.ListChildren(account_pb2.ListChildrenRequest(), metadata=auth),
        lambda: bindings.ListUserDevices(binding_pb2.ListUserDevicesRequest(), metadata=auth),
        lambda: types.ListDeviceTypes(device_type_pb2.ListDeviceTypesRequest(), metadata=auth),
    ]


def grpc_code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def accepted_on_every_worker(stack: Stack, token: str) -> None:
    """Each worker serves the token (which also caches its version there)."""
    for index in range(WORKERS):
        with worker_channel(stack, index) as channel:
            for call in grpc_reads(channel, token):
                assert grpc_code(call) == grpc.StatusCode.OK


def refused_on_every_worker(stack: Stack, token: str) -> None:
    """Every worker refuses the token over gRPC within PROPAGATION seconds, and every
    protected read over REST (spread by Envoy over the workers) answers 401."""
    for index in range(WORKERS):
        with worker_channel(stack, index) as channel:
            calls = grpc_reads(channel, token)
            deadline = time.monotonic() + PROPAGATION
            while grpc_code(calls[0]) != grpc.StatusCode.UNAUTHENTICATED:
                assert time.monotonic() < deadline, f"worker {index} still accepts the token"
                time.sleep(0.05)
            for call in calls:
                assert grpc_code(call) == grpc.StatusCode.UNAUTHENTICATED
    for path, body in REST_READS.items():
        for _ in range(REST_REPEATS):
            response = stack.request("GET", path, token)
            assert response.status_code == 401, (path, response.text)
            assert response.json() == body


def refresh(stack: Stack, refresh_token: str) -> requests.Response:
    return stack.request("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})


class SseReader:
    """A REST message stream through Envoy; records its events and when it ends."""

    def __init__(self, stack: Stack, token: str) -> None:
        self.response = requests.get(
            stack.url("/api/device/messages/stream/"),
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=(5, 60),
        )
        assert self.response.status_code == 200, self.response.text
        self.lines: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    self.lines.put(line)
        except Exception:  # a reset counts as ended too
            pass
        finally:
            self.ended.set()

    def first_event(self) -> str:
        return self.lines.get(timeout=STREAM_END)

    def close(self) -> None:
        threading.Thread(target=self.response.close, daemon=True).start()


def stream_end(subscription: Subscription) -> grpc.RpcError:
    """The error a gRPC subscription ended with (heartbeats and messages skipped)."""
    deadline = time.monotonic() + STREAM_END
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("the gRPC stream is still open")
        try:
            event = subscription.events.get(timeout=remaining)
        except queue.Empty:
            continue
        if isinstance(event, grpc.RpcError):
            return event


def test_deleted_accounts_token_is_refused_everywhere_and_its_devices_unbound(stack):
    account, token = user_with_bound_device(stack)  # one device bound to the account itself
    child = create_child(stack, token)
    connected = connect(stack, token, new_device(stack), child["id"])  # one to its child
    assert connected.status_code == 200, connected.text
    pair = token_pair(stack, account["username"])
    device_rows = query_database(
        stack, "SELECT device_id FROM binding WHERE account_id = ?", (account["id"],)
    )
    accepted_on_every_worker(stack, token)

    deleted = stack.request("DELETE", ME, token)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""

    refused_on_every_worker(stack, token)
    refused_on_every_worker(stack, pair["access_token"])
    assert refresh(stack, pair["refresh_token"]).status_code == 401
    assert login(stack, account["username"]).status_code == 401
    # The children went with the account; its devices stay registered, unbound.
    assert query_database(stack, "SELECT id FROM child WHERE id = ?", (child["id"],)) == []
    assert (
        query_database(stack, "SELECT id FROM binding WHERE account_id = ?", (account["id"],)) == []
    )
    assert len(device_rows) == 2
    for (device_id,) in device_rows:
        device = stack.request("GET", f"/api/device/devices/{device_id}/", stack.admin_token)
        assert device.status_code == 200, device.text
        assert device.json()["is_active"] is False


def test_open_streams_of_a_deleted_account_end_on_every_worker(stack):
    account, token = user_with_bound_device(stack)
    # A pending message: every stream emits it first, so each one is known to be open.
    send_text(stack, token, account["id"], "before")
    streams: list[Subscription] = []
    sse: SseReader | None = None
    socket = None
    with contextlib.ExitStack() as cleanup:
        for index in range(WORKERS):
            channel = cleanup.enter_context(worker_channel(stack, index))
            subscription = Subscription(channel, token)
            cleanup.callback(subscription.cancel)
            streams.append(subscription)
        for subscription in streams:
            assert subscription.messages(1)[0].message.content == "before"
        sse = SseReader(stack, token)
        cleanup.callback(sse.close)
        assert "before" in sse.first_event()
        socket = cleanup.enter_context(
            ws_connect(ws_url(stack, account["id"], token), open_timeout=STREAM_END)
        )
        assert "before" in socket.recv(timeout=STREAM_END)

        assert stack.request("DELETE", ME, token).status_code == 204

        for subscription in streams:
            ended = stream_end(subscription)
            assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
            assert ended.details() == INVALID
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=STREAM_END)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert sse.ended.wait(STREAM_END), "the SSE stream is still open"


def test_password_change_revokes_access_and_refresh_tokens(stack):
    account = register(stack)
    pair = token_pair(stack, account["username"])
    token = pair["access_token"]
    accepted_on_every_worker(stack, token)
    with worker_channel(stack, 1) as channel:
        subscription = Subscription(channel, token)
        try:
            changed = stack.request(
                "POST",
                PASSWORD_PATH,
                token,
                json={"current_password": PASSWORD, "new_password": "new-password-456"},
            )
            assert changed.status_code == 200, changed.text
            assert changed.json() == {}
            assert stream_end(subscription).code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            subscription.cancel()

    refused_on_every_worker(stack, token)
    assert refresh(stack, pair["refresh_token"]).status_code == 401
    assert login(stack, account["username"]).status_code == 401
    fresh = token_pair(stack, account["username"], "new-password-456")
    accepted_on_every_worker(stack, fresh["access_token"])
    assert refresh(stack, fresh["refresh_token"]).status_code == 200


def test_tokens_from_before_versions_count_as_version_0(stack):
    """Tokens issued before migration 0006 carry no ``ver``: they keep working until the
    account's first revocation."""
    account = register(stack)
    now = int(time.time())
    claims = {"sub": str(account["id"]), "adm": False, "typ": "access", "iat": now}
    legacy = jwt.encode({**claims, "exp": now + 600}, SECRET_KEY, algorithm="HS256")
    legacy_refresh = jwt.encode(
        {**claims, "typ": "refresh", "exp": now + 600}, SECRET_KEY, algorithm="HS256"
    )
    accepted_on_every_worker(stack, legacy)
    assert refresh(stack, legacy_refresh).status_code == 200
    changed = stack.request(
        "POST",
        PASSWORD_PATH,
        legacy,
        json={"current_password": PASSWORD, "new_password": "new-password-456"},
    )
    assert changed.status_code == 200, changed.text
    refused_on_every_worker(stack, legacy)
    assert refresh(stack, legacy_refresh).status_code == 401


def test_demoted_admin_loses_admin_writes_at_once(stack):
    account = register(stack)
    path = f"/api/v1/accounts/{account['id']}/admin"
    promoted = stack.request("PUT", path, stack.admin_token, json={"is_admin": True})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {**account, "is_admin": True}
    token = token_pair(stack, account["username"])["access_token"]

    def create_type(token: str) -> requests.Response:
        body = {"name": "speaker", "code": unique("R"), "description": ""}
        return stack.request("POST", "/api/device/device-types/", token, json=body)

    for _ in range(REST_REPEATS):
        assert create_type(token).status_code == 200
    accepted_on_every_worker(stack, token)

    demoted = stack.request("PUT", path, stack.admin_token, json={"is_admin": False})
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["is_admin"] is False

    # The old token (which says admin) is revoked outright on every worker...
    refused_on_every_worker(stack, token)
    for _ in range(REST_REPEATS):
        response = create_type(token)
        assert response.status_code == 401, response.text
        assert response.json() == {
            "status": "error",
            "message": INVALID,
            "code": "UNAUTHENTICATED",
        }
    # ...and a new one carries the withdrawn flag.
    fresh = token_pair(stack, account["username"])["access_token"]
    assert stack.request("GET", ME, fresh).json()["is_admin"] is False
    for _ in range(REST_REPEATS):
        response = create_type(fresh)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "PERMISSION_DENIED"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'upgrade.sqlite3'}"
    return request.getfixturevalue("pg_cluster").create_database(unique("rev").lower())


def test_accounts_from_before_0006_start_at_version_0(database_url, tmp_path):
    before = tmp_path / "before-0006"
    before.mkdir()
    for script in sorted(MIGRATIONS_DIR.glob("000[1-5]_*.py")):
        shutil.copy(script, before)
    database = db.open_database(database_url, pool_size=1)
    try:
        apply_migrations(database, before)
        with database.connection_context():
            database.execute_sql(
                "INSERT INTO account (username, password_hash, created_at, updated_at)"
                " VALUES ('old', 'x', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
            )
        assert "0006_token_version" in apply_migrations(database)
        with database.connection_context():
            rows = database.execute_sql("SELECT token_version FROM account").fetchall()
        assert [tuple(row) for row in rows] == [(0,)]
    finally:
        database.close_all()


def test_close_account_ends_the_streams_of_revoked_tokens_only():
    """Which subscriptions a revocation ends (broker rules, no stack): those opened with
    the account's older tokens, an admin's included, and, for a deleted account, every
    stream of its messages."""
    broker = MessageBroker(poll=lambda after_id: None, newest_id=lambda: None)
    own_v0 = broker.subscribe(7, caller_id=7, token_version=0)
    own_v1 = broker.subscribe(7, caller_id=7, token_version=1)
    admin_reads_7 = broker.subscribe(7, caller_id=1, token_version=0)
    admin_reads_9 = broker.subscribe(9, caller_id=1, token_version=0)

    def revoked(subscription) -> bool:
        return not subscription.queue.empty() and subscription.queue.get_nowait() is REVOKED

    broker.close_account(7, 1)  # account 7's password changed: version 0 -> 1
    assert [revoked(s) for s in (own_v0, own_v1, admin_reads_7, admin_reads_9)] == [
        True,
        False,
        False,
        False,
    ]
    broker.close_account(1, 1)  # the admin was demoted
    assert [revoked(s) for s in (own_v1, admin_reads_7, admin_reads_9)] == [False, True, True]
    fresh_admin = broker.subscribe(7, caller_id=1, token_version=1)
    broker.close_account(7, None)  # account 7 deleted
    assert [revoked(s) for s in (own_v1, fresh_admin)] == [True, True]
