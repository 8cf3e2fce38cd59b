"""Fault tests: worker processes, Envoy and the whole service killed with SIGKILL.

Each backend gets a stack of its own (PostgreSQL: a database in the cluster with
production durability), which these tests kill pieces of:

- a worker, twice, under devlog uploads from several clients through Envoy and over gRPC
  that retry every failed request: every acknowledged upload is stored, none partly, and
  none twice (a retried ``(device, log_file_id)`` is skipped); each victim is replaced by
  a new process while the other worker keeps answering on its own socket;
- worker 0 again: its replacement runs the message expiry sweep;
- Envoy: the supervisor starts it again;
- the supervisor alone (its children die with it), and every process of the service at
  once (the sockets of its clients' connections stay in TIME_WAIT): ``devicehub serve``
  started again at once on the same ports serves.

The figures (requests, acknowledged, lost, duplicated, time to recovery) are printed
(``pytest -s``); nothing asserts a duration.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets.sync.client import connect as websocket

from devicehub.testing.stack import DEVICEHUB, Stack, start_stack
from devicehub.v1 import devlog_pb2, devlog_pb2_grpc, system_pb2, system_pb2_grpc

from api_client import LuxSetup, lux_setup, metadata, query_database
from bound_accounts import user_with_bound_device
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env
from streams import send_text, wait_for_states, ws_url
from worker_processes import alive, replaced, wait_until, worker_pid, worker_pids, worker_target

DEVLOG = "/api/v1/lux/device/devlog"
SAVED = "Devlog saved successfully"
ENTRIES = 10  # per upload request
REST_CLIENTS = 3
GRPC_CLIENTS = 2
SETTLE = 2.0  # seconds of load before, between and after the kills
RETRY_FOR = 60.0  # a client gives up on a request after this long (it never should)


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def fault_stack(request, tmp_path_factory) -> Iterator[Stack]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"faults-workers-{backend}")
    database_url = backend_database(request, backend, tmp, cluster="durable_pg_cluster")
    env = stack_env(tmp, database_url)
    env["DEVICEHUB_MESSAGE_TTL"] = "2"  # the expiry sweep then runs every second
    started = start_stack(backend, env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


def grpc_address(stack: Stack) -> tuple[str, int]:
    host, _, port = stack.grpc_target.rpartition(":")
    return host, int(port)


def log_text(stack: Stack) -> str:
    return stack.log_path.read_text()


def grpc_port(stack: Stack) -> int:
    return int(stack.env["DEVICEHUB_GRPC_PORT"])


def treatment_date(number: int) -> str:
    return (dt.datetime(2025, 1, 1) + dt.timedelta(minutes=number)).isoformat()


@dataclass
class Uploader:
    """One client: uploads requests 0, 1, 2, ... of ``ENTRIES`` completed records each
    (request k carries log_file_ids k*ENTRIES+1 ... (k+1)*ENTRIES), retrying each failed
    request until it is acknowledged."""

    stack: Stack
    lux: LuxSetup
    over_grpc: bool
    sent: int = 0  # requests 0 .. sent-1 were sent at least once
    acknowledged: set[int] = field(default_factory=set)
    failed_attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected: list[str] = field(default_factory=list)  # answers no retry can fix

    def log_file_ids(self, request: int) -> range:
        return range(request * ENTRIES + 1, (request + 1) * ENTRIES + 1)

    def entry(self, log_file_id: int) -> dict:
        return {
            "real_user_id": self.lux.child["id"],
            "device_id": self.lux.device["id"],
            "unique_id": self.lux.device["unique_id"],
            "log_file_id": log_file_id,
            "detail_data": {
                "treatment_date": treatment_date(log_file_id),
                "finish_flag": 2,
                "last_intensity": 25,
                "treatment_time": 500000,
            },
        }

    def run(self, stop: threading.Event) -> None:
        if self.over_grpc:
            channel = grpc.insecure_channel(self.stack.grpc_target)
            stub = devlog_pb2_grpc.DevlogServiceStub(channel)
            attempt = lambda request: self._grpc_attempt(stub, request)  # noqa: E731
        else:
            session = requests.Session()
            attempt = lambda request: self._rest_attempt(session, request)  # noqa: E731
        try:
            while not stop.is_set():
                request = self.sent
                self.sent += 1
                give_up = time.monotonic() + RETRY_FOR
                while time.monotonic() < give_up and not self.rejected:
                    if attempt(request):
                        self.acknowledged.add(request)
                        break
                    time.sleep(0.05)
                if self.rejected:
                    return
        finally:
            (channel if self.over_grpc else session).close()

    def _rest_attempt(self, session: requests.Session, request: int) -> bool:
        body = {"log_arrays": [self.entry(i) for i in self.log_file_ids(request)]}
        headers = {"Authorization": f"Bearer {self.lux.token}"}
        try:
            response = session.post(self.stack.url(DEVLOG), json=body, headers=headers, timeout=30)
        except requests.RequestException as error:
            self.failed_attempts[f"REST {type(error).__name__}"] += 1
            return False
        if response.status_code == 200:
            if response.json() != {"statusCode": 200, "message": SAVED}:
                self.rejected.append(response.text)
            return True
        self.failed_attempts[f"REST {response.status_code}"] += 1
        if response.status_code < 502:  # not a gateway's "try again"
            self.rejected.append(f"{response.status_code} {response.text}")
        return False

    def _grpc_attempt(self, stub: devlog_pb2_grpc.DevlogServiceStub, request: int) -> bool:
        entries = []
        for log_file_id in self.log_file_ids(request):
            fields = self.entry(log_file_id)
            detail = fields.pop("detail_data")
            entries.append(
                devlog_pb2.DevlogEntry(
                    **fields,
                    detail_data=devlog_pb2.DevlogDetail(
                        treatment_date=detail["treatment_date"],
                        finish_flag=struct_pb2.Value(number_value=detail["finish_flag"]),
                        last_intensity=detail["last_intensity"],
                        treatment_time=detail["treatment_time"],
                    ),
                )
            )
        try:
            reply = stub.UploadDevlogs(
                devlog_pb2.UploadDevlogsRequest(log_arrays=entries),
                metadata=metadata(self.lux.token),
                timeout=30,
            )
        except grpc.RpcError as error:
            code = error.code()
            self.failed_attempts[f"gRPC {code.name}"] += 1
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self.rejected.append(f"{code.name} {error.details()}")
            return False
        if reply.message != SAVED:
            self.rejected.append(str(reply))
        return True


class Pinger:
    """Pings one worker over its own socket until stopped; counts what failed."""

    def __init__(self, stack: Stack) -> None:
        self.target = 1
        self.pings = 0
        self.failures: list[str] = []
        self._stubs = {}
        for index in (0, 1):
            channel = grpc.insecure_channel(worker_target(grpc_port(stack), index))
            self._stubs[index] = (channel, system_pb2_grpc.SystemServiceStub(channel))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            target = self.target
            try:
                self._stubs[target][1].Ping(system_pb2.PingRequest(), timeout=5)
                self.pings += 1
            except grpc.RpcError as error:
                self.failures.append(f"worker {target}: {error.code().name} {error.details()}")
            time.sleep(0.02)

    def close(self) -> None:
        for channel, _ in self._stubs.values():
            channel.close()


def stored_devlogs(stack: Stack, devices: list[int]) -> dict[tuple[int, int], int]:
    """(device, log_file_id) -> rows stored, for the given devices."""
    marks = ",".join("?" for _ in devices)
    rows = query_database(
        stack,
        "SELECT device_id, log_file_id, COUNT(*) FROM devlog "
        f"WHERE device_id IN ({marks}) GROUP BY device_id, log_file_id",
        tuple(devices),
    )
    return {(device, log_file_id): count for device, log_file_id, count in rows}


def test_uploads_survive_killed_workers(fault_stack):
    stack = fault_stack
    uploaders = [
        Uploader(stack, lux_setup(stack), over_grpc=index >= REST_CLIENTS)
        for index in range(REST_CLIENTS + GRPC_CLIENTS)
    ]
    pinger = Pinger(stack)
    stop = threading.Event()
    threads = [threading.Thread(target=client.run, args=(stop,)) for client in uploaders]
    threads.append(threading.Thread(target=pinger.run, args=(stop,)))
    recovery: dict[int, float] = {}
    new_pids: dict[int, int | None] = {}
    old_pids: dict[int, int | None] = {}
    for thread in threads:
        thread.start()
    try:
        time.sleep(SETTLE)
        for victim in (0, 1):
            pinger.target = 1 - victim  # the other worker must answer throughout
            old_pids[victim] = worker_pid(stack.process.pid, grpc_port(stack), victim)
            assert old_pids[victim], f"no worker {victim}"
            killed = time.monotonic()
            os.kill(old_pids[victim], signal.SIGKILL)
            new_pids[victim] = replaced(
                stack.process.pid, grpc_port(stack), victim, old_pids[victim]
            )
            recovery[victim] = time.monotonic() - killed
            assert new_pids[victim] is not None, f"worker {victim} was not replaced"
            time.sleep(SETTLE)
    finally:
        stop.set()
        for thread in threads:
            thread.join(RETRY_FOR + 30)
        pinger.close()
    assert stack.process.poll() is None, "the service stopped"

    stored = stored_devlogs(stack, [client.lux.device["id"] for client in uploaders])
    requests_sent = acknowledged = lost = partial = 0
    failed: collections.Counter[str] = collections.Counter()
    for client in uploaders:
        assert not client.rejected, client.rejected
        device = client.lux.device["id"]
        requests_sent += client.sent
        acknowledged += len(client.acknowledged)
        failed.update(client.failed_attempts)
        for request in range(client.sent):
            present = sum((device, i) in stored for i in client.log_file_ids(request))
            partial += 0 < present < ENTRIES
            lost += request in client.acknowledged and present < ENTRIES
        unsent = [key for key in stored if key[0] == device and key[1] > client.sent * ENTRIES]
        assert not unsent, unsent
    duplicated = sum(count - 1 for count in stored.values())
    print(
        f"\n[{stack.backend}] worker kills under upload load: requests={requests_sent} "
        f"acknowledged={acknowledged} lost={lost} partial={partial} duplicated={duplicated} "
        f"failed attempts (retried)={dict(failed)} "
        f"recovery s={ {index: round(seconds, 2) for index, seconds in recovery.items()} } "
        f"pings of the other worker={pinger.pings} failed={len(pinger.failures)}"
    )
    assert acknowledged == requests_sent  # every client got every request through in the end
    assert (lost, partial, duplicated) == (0, 0, 0)
    assert not pinger.failures, pinger.failures[:5]
    assert all(new_pids[index] != old_pids[index] for index in (0, 1))
    log = log_text(stack)
    for index in (0, 1):
        assert f"worker {index} (pid {old_pids[index]}) died: killed by SIGKILL" in log, log


def test_a_replaced_worker_0_runs_the_expiry_sweep(fault_stack):
    stack = fault_stack
    account, token = user_with_bound_device(stack)
    old = worker_pid(stack.process.pid, grpc_port(stack), 0)
    assert old
    os.kill(old, signal.SIGKILL)
    assert replaced(stack.process.pid, grpc_port(stack), 0, old), "worker 0 was not replaced"
    message = send_text(stack, token, account["id"], "nobody reads this in time")
    # DEVICEHUB_MESSAGE_TTL is 2 s here: only the expiry sweep marks it expired.
    wait_for_states(stack, {message: "expired"}, timeout=30)


def envoy_pid(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and command.endswith(b"envoy"):
            return int(entry.name)
    return None


def rest_ping(stack: Stack) -> bool:
    try:
        return requests.get(stack.url("/api/v1/ping"), timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_killed_envoy_is_started_again(fault_stack):
    stack = fault_stack
    old = envoy_pid(stack.process.pid)
    assert old and rest_ping(stack)
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: envoy_pid(stack.process.pid) not in (None, old) and rest_ping(stack))
    print(
        f"\n[{stack.backend}] envoy killed: REST answers again after "
        f"{time.monotonic() - killed:.2f} s"
    )
    assert stack.process.poll() is None
    log = log_text(stack)
    assert f"envoy (pid {old}) exited: killed by SIGKILL" in log, log


# TCP states of a connection its server closed first: FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSING.
CLOSED_BY_SERVER = {"04", "05", "06", "0B"}
LISTEN = "0A"


def sockets_on(port: int, states: set[str]) -> int:
    """Sockets whose local port is ``port``, in one of the TCP ``states`` (/proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] in states:
                count += 1
    return count


def closed_connections(port: int) -> int:
    """Connections to local ``port`` whose server's side closed first, as a dead server's
    do: they stay in TIME_WAIT for a minute, and a bind without SO_REUSEADDR fails while
    any exists."""
    return sockets_on(port, CLOSED_BY_SERVER)


def listening(port: int) -> bool:
    return sockets_on(port, {LISTEN}) > 0


def leave_a_connection_in_time_wait(address: tuple[str, int]) -> None:
    """A connection to ``address`` that its server's side closes first, so that the port
    has a socket in TIME_WAIT."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(address)
        server.listen()
        with socket.create_connection(address) as client:
            accepted, _ = server.accept()
            accepted.close()
            assert client.recv(1) == b""
    assert sockets_on(address[1], {"06"}) > 0


def serving(stack: Stack) -> bool:
    """gRPC health SERVING on the shared port, and REST through Envoy."""
    with grpc.insecure_channel(stack.grpc_target) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return status.status == health_pb2.HealthCheckResponse.SERVING and rest_ping(stack)


KILLED = {"supervisor": "the supervisor", "everything": "every process of the service"}


@pytest.mark.parametrize("victims", list(KILLED))
def test_a_killed_service_starts_again_at_once(fault_stack, victims):
    stack = fault_stack
    # Clients hold connections when the service dies: to the gRPC port (one per channel: no
    # shared subchannels), and through Envoy (REST, and a WebSocket to the WebSocket port).
    channels = [
        grpc.insecure_channel(stack.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(8)
    ]
    account, token = user_with_bound_device(stack)
    with contextlib.ExitStack() as held:
        held.enter_context(websocket(ws_url(stack, account["id"], token)))  # via Envoy
        session = held.enter_context(requests.Session())
        for channel in channels:
            held.callback(channel.close)
        for channel in channels:
            system_pb2_grpc.SystemServiceStub(channel).Ping(system_pb2.PingRequest(), timeout=10)
        assert session.get(stack.url("/api/v1/ping"), timeout=10).status_code == 200
        children = [*worker_pids(stack.process.pid), envoy_pid(stack.process.pid)]
        assert None not in children and len(children) == 3
        os.kill(stack.process.pid, signal.SIGKILL)
        if victims == "everything":
            for pid in children:
                os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        stack.process.wait()
        # Orphaned workers stop listening at once (they may drain their calls a while).
        assert wait_until(lambda: not listening(grpc_port(stack)), 30)
        left_behind = {
            name: closed_connections(int(stack.env[f"DEVICEHUB_{name.upper()}_PORT"]))
            for name in ("grpc", "http", "ws")
        }
        # Whether the gRPC clients' connections end in TIME_WAIT on the server's side
        # depends on who closed first; make sure one does, as after a crash under load.
        leave_a_connection_in_time_wait(grpc_address(stack))
        with stack.log_path.open("a") as log:
            stack.process = subprocess.Popen(
                [DEVICEHUB, "serve"], env=stack.env, stdout=log, stderr=log
            )
        # The old children die with the supervisor (PR_SET_PDEATHSIG).
        assert wait_until(lambda: not any(alive(pid) for pid in children), 30), children
        deadline = time.monotonic() + 60
        while not serving(stack):
            assert stack.process.poll() is None, log_text(stack)[-3000:]
            assert time.monotonic() < deadline, "devicehub serve did not start again"
            time.sleep(0.1)
        print(
            f"\n[{stack.backend}] kill -9 of {KILLED[victims]}: serving again after "
            f"{time.monotonic() - killed:.2f} s (connections left closing or in TIME_WAIT "
            f"on the ports at the restart: {left_behind})"
        )
        stack.admin_token = stack.login("admin", ADMIN_PASSWORD)
