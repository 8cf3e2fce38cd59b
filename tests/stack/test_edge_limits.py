"""The Envoy edge under overload and hostile input (issue 10, defects 2, 9 and the edge side
of 8): message streams cannot take unary calls down, the admin interface is a private Unix
socket, and every limit answers in the documented error shape, never text/plain and never
a status that invites a retry."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from devicehub.testing.stack import DEVICEHUB, Stack, envoy_admin, start_stack
from devicehub.v1 import movement_pb2, movement_pb2_grpc

from api_client import metadata
from documented_errors import without_request_id
from lux_uploads import DEVLOG_SAVED, MOVEMENT_SAVED, legacy_entry
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env

MOVEMENT = "/api/v1/lux/device/movement"
DEVLOG = "/api/v1/lux/device/devlog"
STREAM = "/api/device/messages/stream/"
TOO_LARGE = {"detail": "Request body too large"}
TOO_LARGE_DEVICE = {
    "status": "error",
    "message": "Request body too large",
    "code": "REQUEST_TOO_LARGE",
}
STREAM_LIMIT = {
    "status": "error",
    "message": "Too many open streams. Please try again later.",
    "code": "STREAM_LIMIT_REACHED",
}
MAX_MESSAGE_BYTES = 512  # gateway/rest_edge.lua


# --- helpers --------------------------------------------------------------------------


def raise_open_file_limit() -> None:
    """This process holds over a thousand sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def http_port(stack: Stack) -> int:
    return int(stack.env["DEVICEHUB_HTTP_PORT"])


def open_stream(stack: Stack, token: str) -> socket.socket:
    """Opens one SSE stream through Envoy and leaves it open (nothing is read)."""
    sock = socket.create_connection(("127.0.0.1", http_port(stack)), timeout=30)
    request = f"GET {STREAM} HTTP/1.1\r\nHost: devicehub\r\nAuthorization: Bearer {token}\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Reads an HTTP/1.1 response with a content-length (or up to the end of the headers
    and the first chunk); returns status, headers (lower case) and body."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside the body"
            body += chunk
    return status, headers, body


def cluster_stat(stack: Stack, name: str) -> int:
    """One Envoy counter or gauge, read over the admin socket (0 if absent)."""
    text = envoy_admin(stack.env, f"/stats?filter=^{name}$")
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def wait_for_stat(stack: Stack, name: str, at_least: int, seconds: float = 120) -> int:
    deadline = time.monotonic() + seconds
    while (value := cluster_stat(stack, name)) < at_least:
        assert time.monotonic() < deadline, f"{name} stayed at {value}, expected {at_least}"
        time.sleep(0.5)
    return value


def assert_unary_calls_work(stack: Stack, token: str) -> None:
    assert stack.request("GET", "/api/v1/ping").status_code == 200
    assert stack.login("admin", ADMIN_PASSWORD)
    me = stack.request("GET", "/api/v1/accounts/me", token)
    assert me.status_code == 200, me.text


def strict_json(raw: bytes) -> dict:
    """The body as JSON, refusing anything that is not valid UTF-8."""
    return json.loads(raw.decode("utf-8", errors="strict"))


def envoy_pid(stack: Stack) -> int:
    """The Envoy process started by the stack's ``devicehub serve``."""
    pending = [stack.process.pid]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "envoy":
                return pid
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
    raise AssertionError("no envoy process under devicehub serve")


def tcp_listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc, so nothing is assumed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# --- streams cannot take unary calls down (defect 2) ----------------------------------


def test_more_streams_than_envoys_old_default_leave_unary_calls_working(stack, user):
    """Envoy's default circuit breaker (1,024 requests per cluster) was shared by streams
    and unary calls: 1,030 open SSE streams made ping, login and /me answer 503."""
    raise_open_file_limit()
    _, token = user
    count = 1_100
    before = cluster_stat(stack, "http.rest.downstream_rq_active")
    streams = []
    try:
        for _ in range(count):
            streams.append(open_stream(stack, token))
        wait_for_stat(stack, "http.rest.downstream_rq_active", before + count)
        assert_unary_calls_work(stack, token)
        assert wait_for_stat(stack, "cluster.devicehub_stream.upstream_rq_active", count) >= count
        assert cluster_stat(stack, "cluster.devicehub_stream.upstream_rq_pending_overflow") == 0
    finally:
        for sock in streams:
            sock.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def limited_stack(request, tmp_path) -> Iterator[Stack]:
    """A stack of its own that allows only 20 open streams."""
    database_url = backend_database(request, request.param, tmp_path)
    env = stack_env(tmp_path, database_url)
    env.update(DEVICEHUB_MAX_STREAMS="20", DEVICEHUB_STREAM_HEARTBEAT="1")
    started = start_stack(request.param, env, tmp_path / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


def test_stream_beyond_the_limit_is_refused_in_documented_shape(limited_stack):
    stack = limited_stack
    raise_open_file_limit()
    token = stack.admin_token
    streams = [open_stream(stack, token) for _ in range(20)]
    try:
        wait_for_stat(stack, "cluster.devicehub_stream.upstream_rq_active", 20)
        extra = open_stream(stack, token)
        streams.append(extra)
        status, headers, body = read_response(extra)
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert without_request_id(strict_json(body)) == STREAM_LIMIT
        assert_unary_calls_work(stack, token)
        # A closed stream frees its place for a new one.
        streams.pop(0).close()
        deadline = time.monotonic() + 60
        while cluster_stat(stack, "cluster.devicehub_stream.upstream_rq_active") > 19:
            assert time.monotonic() < deadline, "the closed stream stayed open in Envoy"
            time.sleep(0.2)
        replacement = open_stream(stack, token)
        streams.append(replacement)
        status, headers, _ = read_response(replacement)  # the first heartbeat brings it
        assert status == 200 and headers["content-type"] == "text/event-stream"
    finally:
        for sock in streams:
            sock.close()


def open_websocket(stack: Stack, account_id: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", http_port(stack)), timeout=30)
    sock.sendall(
        (
            f"GET /api/device/messages/{account_id}/?token={token} HTTP/1.1\r\n"
            "Host: devicehub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


def test_websocket_beyond_the_limit_is_refused_in_documented_shape(limited_stack):
    stack = limited_stack
    raise_open_file_limit()
    token = stack.admin_token
    account_id = stack.request("GET", "/api/v1/accounts/me", token).json()["id"]
    sockets = []
    try:
        for _ in range(20):
            sockets.append(open_websocket(stack, account_id, token))
            status, _, _ = read_response(sockets[-1])
            assert status == 101
        sockets.append(open_websocket(stack, account_id, token))
        status, headers, body = read_response(sockets[-1])
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert without_request_id(strict_json(body)) == STREAM_LIMIT
        assert_unary_calls_work(stack, token)
    finally:
        for sock in sockets:
            sock.close()


# --- the admin interface (defect 9) ---------------------------------------------------


def test_envoy_admin_is_a_private_unix_socket(stack):
    path = Path(stack.env["DEVICEHUB_DATA_DIR"]) / "envoy-admin.sock"
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert "cluster.devicehub_grpc.upstream_rq_total" in envoy_admin(stack.env, "/stats")
    # Envoy listens on the REST port only: no TCP admin port.
    assert tcp_listening_ports(envoy_pid(stack)) == {http_port(stack)}


def test_envoy_starts_with_a_connection_limit(stack):
    log = (Path(stack.env["DEVICEHUB_DATA_DIR"]) / "serve.log").read_text()
    assert "no configured limit to the number of allowed active downstream connections" not in log
    assert "REST  listening" in log  # the log is the stack's, Envoy's warnings included


def test_too_long_admin_socket_path_fails_clearly(tmp_path):
    env = stack_env(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    env["DEVICEHUB_ENVOY_ADMIN_SOCKET"] = str(tmp_path / ("s" * 120))
    result = subprocess.run(
        [DEVICEHUB, "gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DEVICEHUB_ENVOY_ADMIN_SOCKET" in result.stderr
    assert "longer than 107 bytes" in result.stderr


# --- error shapes from the edge (defect 8, the edge side) -----------------------------


def test_largest_documented_uploads_fit_the_body_limit(stack, lux):
    """10,000 movement samples and 1,000 devlog entries, pretty-printed with realistic
    values, are accepted (the body limit must never refuse a valid documented request)."""
    movement = {
        "real_user_id": lux.child["id"],
        "device_id": lux.device["id"],
        "movement_data": [
            {"val": -32768 + i % 65536, "timestamp": 1736411840 + i} for i in range(10_000)
        ],
    }
    body = json.dumps(movement, indent=4).encode()
    response = stack.request(
        "POST", MOVEMENT, lux.token, data=body, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()) == (200, MOVEMENT_SAVED)

    entries = [legacy_entry(lux, log_file_id=1_000_000 + i) for i in range(1_000)]
    for item in entries:
        item["detail_data"]["treatment_time"] = 2_147_483_647
    body = json.dumps(entries, indent=4, ensure_ascii=False).encode()
    response = stack.request(
        "POST", DEVLOG, lux.token, data=body, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()) == (200, DEVLOG_SAVED)


def test_huge_movement_body_is_413_before_it_is_read_in_full(stack, lux):
    """20 MB are announced, 6 MB sent: the 413 comes without the rest (it is not parsed
    in full; before, such bodies reached the gRPC server's limit and came back 429)."""
    sample = b'{"val": 10, "timestamp": 1736411840},'
    start = f'{{"real_user_id": {lux.child["id"]}, "device_id": {lux.device["id"]}, '
    start += '"movement_data": ['
    sent = start.encode() + sample * (6_000_000 // len(sample))
    with socket.create_connection(("127.0.0.1", http_port(stack)), timeout=30) as sock:
        sock.sendall(
            f"POST {MOVEMENT} HTTP/1.1\r\nHost: devicehub\r\nAuthorization: Bearer {lux.token}"
            f"\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n".encode()
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(sent)
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert strict_json(body) == TOO_LARGE


def test_oversized_body_is_413_in_documented_shape(stack, admin):
    body = b'{"name": "' + b"x" * 5_000_000 + b'", "code": "BIG"}'
    response = stack.request(
        "POST",
        "/api/device/device-types/",
        admin,
        data=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == TOO_LARGE_DEVICE


def test_body_that_outgrows_the_server_limit_once_transcoded_is_413(stack, lux):
    """Under the edge's limit as JSON, over the gRPC server's 4 MiB once transcoded (a
    negative int32 takes 10 bytes): 413, not 429 "Too many requests"."""
    samples = ",".join(['{"val":-1}'] * 370_000)
    body = (
        f'{{"real_user_id":{lux.child["id"]},"device_id":{lux.device["id"]},'
        f'"movement_data":[{samples}]}}'
    ).encode()
    assert len(body) < 4 * 1024 * 1024
    response = stack.request(
        "POST", MOVEMENT, lux.token, data=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE


def test_devlog_body_over_the_limit_is_413(stack, lux):
    """The devlog path is also read by the Lua filter (the earlier bare-array body is
    rewritten there): the same limit and the same 413."""
    body = json.dumps([legacy_entry(lux)] * 20_000).encode()
    assert len(body) > 4 * 1024 * 1024
    response = stack.request(
        "POST", DEVLOG, lux.token, data=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE


@pytest.mark.parametrize("size", [62_000, 200_000])
def test_oversized_headers_are_431_in_documented_shape(stack, admin, size):
    big = {"x-padding": "a" * size}
    device = stack.request("GET", "/api/device/devices/", admin, headers=dict(big))
    assert device.status_code == 431
    assert device.headers["content-type"] == "application/json"
    assert device.json() == {
        "status": "error",
        "message": "Request headers too large",
        "code": "HEADERS_TOO_LARGE",
    }
    lux = stack.request("GET", "/api/v1/accounts/me", admin, headers=dict(big))
    assert lux.status_code == 431
    assert lux.json() == {"detail": "Request headers too large"}


@pytest.mark.parametrize("size", [9_000, 30_000, 58_000])
def test_long_urls_and_headers_under_the_limit_are_served(stack, admin, size):
    """Under the edge's 60 KiB the request is served: the URL reaches the gRPC server twice
    (:path and x-envoy-original-path), and gRPC's default 8 KiB metadata limit once turned
    such requests into 429s."""
    padding = "a" * (size // 2)
    device = stack.request("GET", f"/api/device/devices/?unknown={padding}", admin)
    assert device.status_code == 200, device.text
    lux = stack.request(
        "GET", f"/api/v1/accounts/me?unknown={padding}", admin, headers={"x-padding": padding}
    )
    assert lux.status_code == 200, lux.text


def test_headers_beyond_the_codec_limit_are_431_json(stack):
    """Beyond Envoy's codec limit (256 KiB) the path is unknown: still JSON, not text."""
    response = stack.request("GET", "/api/v1/accounts/me", headers={"x-padding": "a" * 300_000})
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Request headers too large"}


def test_megabyte_values_get_documented_400s(stack, admin, lux):
    """A 1 MB number (text/plain 500 before) and a 1 MB message type (502 before)."""
    number = b'{"device_type": ' + b"9" * 1_000_000 + b"}"
    response = stack.request(
        "POST",
        "/api/device/devices/",
        admin,
        data=number,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["status"], body["code"]) == ("error", "MALFORMED_REQUEST")
    assert len(body["message"].encode()) <= MAX_MESSAGE_BYTES + 3

    lux_number = b'{"real_user_id": ' + b"9" * 1_000_000 + b', "device_id": 1}'
    response = stack.request(
        "POST", MOVEMENT, lux.token, data=lux_number, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"detail"}

    response = stack.request(
        "POST",
        "/api/device/messages/",
        admin,
        json={"type": "t" * 1_000_000, "message": {"content": "hello"}},
    )
    assert response.status_code == 400, response.text[:300]
    body = response.json()
    assert set(body) == {"status", "message", "code"} and body["status"] == "error"
    assert len(body["message"].encode()) <= MAX_MESSAGE_BYTES + 3


@pytest.mark.parametrize(
    "path",
    [
        "/api/device/devices/%FF%FE/",
        "/api/device/devices/?page_size=%C3%28" + "%FF" * 10_000,
        "/api/v1/lux/device/child-device?real_user_id=%ED%A0%80abc%F4%90%80%80",
    ],
)
def test_error_bodies_echoing_invalid_utf8_stay_valid_json(stack, admin, path):
    response = stack.request("GET", path, admin)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = strict_json(response.content)
    message = body["message"] if path.startswith("/api/device/") else body["detail"]
    assert message.startswith("Malformed request")
    assert "\ufffd" in message
    assert len(message.encode()) <= MAX_MESSAGE_BYTES + 3


def test_native_grpc_large_message_is_untouched(stack, lux):
    """Native gRPC through Envoy keeps gRPC's own statuses (no REST limits, no bodies)."""
    stub = movement_pb2_grpc.MovementServiceStub(stack.channel(via_envoy=True))
    request = movement_pb2.UploadMovementRequest(
        real_user_id=lux.child["id"],
        device_id=lux.device["id"],
        movement_data=[movement_pb2.MovementSample(val=-1, timestamp=1) for _ in range(400_000)],
    )
    with pytest.raises(grpc.RpcError) as error:
        stub.UploadMovement(request, metadata=metadata(lux.token), timeout=60)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
