"""Start, reach and stop a real ``devicehub serve`` (gRPC server + Envoy) for tests and bench.

The test suite and the benchmark both measure the stack a production machine runs: the
``devicehub`` command of the running interpreter, started as a process of its own on free
loopback ports. They differ only in the environment they give it (see :func:`serve_env`),
so starting it, deciding that it is ready and stopping it live here once.

Ready means what a client needs: gRPC health answers SERVING and the REST edge answers
``GET /api/v1/ping`` with 200, which also proves that Envoy reaches the gRPC server.

The REST client is ``requests`` (a development dependency, like the tests and the bench
that import this module).
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
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The console script installed beside the running interpreter, so the launched stack runs
# the same installation as its caller.
DEVICEHUB = str(Path(sys.executable).parent / "devicehub")
READY_WITHIN = 60.0  # seconds from ``devicehub serve`` to a stack that answers
STOP_WITHIN = 30.0  # seconds a stopping stack gets to drain before it is killed


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that a server can bind on ``host`` now. Ask on the host the server will
    listen on: a client socket bound to another loopback address (127.0.0.N, as the
    throttle tests use) leaves that port in TIME_WAIT there, which blocks a server's bind on
    that address for a minute but not on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def unique(prefix: str = "") -> str:
    """A short unique suffix for codes and names, so runs never collide."""
    return prefix + uuid.uuid4().hex[:8].upper()


def serve_env(
    data_dir: Path, database_url: str, secret_key: str, **settings: str
) -> dict[str, str]:
    """The caller's environment plus what every launched stack needs: its own data
    directory, database, secret key and free ports, logging at WARNING; ``settings`` are
    further ``DEVICEHUB_*`` variables and override these."""
    return {
        **os.environ,
        "DEVICEHUB_DATA_DIR": str(data_dir),
        "DEVICEHUB_DATABASE_URL": database_url,
        "DEVICEHUB_SECRET_KEY": secret_key,
        "DEVICEHUB_GRPC_PORT": str(free_port()),
        "DEVICEHUB_HTTP_PORT": str(free_port()),
        "DEVICEHUB_WS_PORT": str(free_port()),
        "DEVICEHUB_METRICS_PORT": str(free_port()),
        "DEVICEHUB_LOG_LEVEL": "WARNING",
        **settings,
    }


@dataclass
class Stack:
    """One running devicehub (gRPC server + Envoy) and clients for it."""

    backend: str
    env: dict[str, str]
    database_url: str
    rest_url: str
    grpc_target: str
    process: subprocess.Popen
    log_path: Path
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

    def stop(self) -> int:
        """Closes the clients and stops the stack; its exit code."""
        self.close()
        return stop_process(self.process)


def start_stack(
    backend: str, env: dict[str, str], log_path: Path, admin_password: str | None = None
) -> Stack:
    """Starts ``devicehub serve`` with ``env`` and returns it once ready, its output
    appended to ``log_path``. With ``admin_password``, the account ``admin`` is created
    first and the stack comes back logged in as it (``admin_token``)."""
    if admin_password is not None:
        subprocess.run(
            [DEVICEHUB, "create-admin", "admin", "--password", admin_password],
            env=env,
            check=True,
            capture_output=True,
        )
    with log_path.open("a") as log:
        process = subprocess.Popen([DEVICEHUB, "serve"], env=env, stdout=log, stderr=log)
    stack = Stack(
        backend=backend,
        env=env,
        database_url=env["DEVICEHUB_DATABASE_URL"],
        rest_url=f"http://127.0.0.1:{env['DEVICEHUB_HTTP_PORT']}",
        grpc_target=f"127.0.0.1:{env['DEVICEHUB_GRPC_PORT']}",
        process=process,
        log_path=log_path,
    )
    try:
        wait_ready(stack, time.monotonic() + READY_WITHIN)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"stack failed to start:\n{log_path.read_text()[-4000:]}") from None
    if admin_password is not None:
        stack.admin_token = stack.login("admin", admin_password)
    return stack


def wait_ready(
    stack: Stack,
    deadline: float,
    credentials: grpc.ChannelCredentials | None = None,
    verify: bool | str = True,
) -> None:
    """Waits until gRPC health says SERVING and the REST edge answers the ping; over TLS
    with ``credentials`` for the gRPC port and ``verify`` (a CA file) for the edge."""
    channel = (
        grpc.insecure_channel(stack.grpc_target)
        if credentials is None
        else grpc.secure_channel(stack.grpc_target, credentials)
    )
    health = health_pb2_grpc.HealthStub(channel)
    try:
        while time.monotonic() < deadline:
            if stack.process.poll() is not None:
                raise RuntimeError(f"devicehub serve exited with {stack.process.returncode}")
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                serving = status == health_pb2.HealthCheckResponse.SERVING
                if serving and requests.get(stack.url("/api/v1/ping"), verify=verify, timeout=1).ok:
                    return
            except (grpc.RpcError, requests.ConnectionError):
                pass
            time.sleep(0.2)
        raise RuntimeError("devicehub did not become ready in time")
    finally:
        channel.close()


def stop_process(process: subprocess.Popen, within: float = STOP_WITHIN) -> int:
    """Stops ``process`` as a service manager does: SIGTERM (``devicehub serve`` then
    stops Envoy and lets every worker finish its calls), SIGKILL if it is still running
    ``within`` seconds later. Its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


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
