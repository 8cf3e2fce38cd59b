"""Worker processes: DEVICEHUB_WORKERS servers behind one gRPC address and one Envoy.

The session stacks run two workers (``stack_settings.stack_env``), so every other test already
goes through them; these tests check the worker-specific behaviour: Envoy balancing,
each worker's own socket, messages and rate limits across workers, and the supervisor's
start-up, shutdown, replacement of a dead worker and crash-loop limit (the fault tests
under load are in test_faults_workers.py, the restart rule itself in
tests/unit/test_restart_policy.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from devicehub.testing.stack import DEVICEHUB, envoy_admin, free_port, stop_process
from devicehub.v1 import rtc_pb2, rtc_pb2_grpc

from api_client import within_one_window
from bound_accounts import user_with_bound_device, user_with_primary_device
from stack_settings import stack_env
from streams import Subscription, grpc_text, stub_for
from worker_processes import (
    WORKERS,
    alive,
    health_status,
    replaced,
    wait_until,
    worker_channel,
    worker_pid,
    worker_pids,
)


@contextmanager
def serve(tmp_path: Path, database_url: str, **settings: str) -> Iterator[subprocess.Popen]:
    """A gRPC-only ``devicehub serve`` with its own ports; yields once it listens."""
    env = {
        **stack_env(tmp_path, database_url),
        "DEVICEHUB_WORKERS": str(WORKERS),
        **{f"DEVICEHUB_{key.upper()}": value for key, value in settings.items()},
    }
    process = subprocess.Popen(
        [DEVICEHUB, "serve", "--no-gateway"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert f"({WORKERS} workers)" in line, line + process.stdout.read()
        process.grpc_port = int(env["DEVICEHUB_GRPC_PORT"])  # type: ignore[attr-defined]
        yield process
    finally:
        stop_process(process)


# --- the session stack ---------------------------------------------------------------


def test_every_worker_serves_on_its_own_socket(stack):
    for index in range(WORKERS):
        with worker_channel(stack, index) as channel:
            assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING


def test_envoy_balances_rest_calls_over_every_worker(stack):
    def served_by_worker() -> dict[str, int]:
        counts = {}
        for line in envoy_admin(stack.env, "/clusters").splitlines():
            name, _, rest = line.partition("::")
            if name == "devicehub_grpc" and "::rq_total::" in rest:
                endpoint, _, value = rest.partition("::rq_total::")
                counts[endpoint] = int(value)
        return counts

    before = served_by_worker()
    assert len(before) == WORKERS, before
    for _ in range(20):
        assert stack.request("GET", "/api/v1/ping").status_code == 200
    after = served_by_worker()
    assert all(after[endpoint] > before[endpoint] for endpoint in after), (before, after)


@pytest.mark.parametrize("sender, receiver", [(0, 1), (1, 0)])
def test_message_sent_through_one_worker_reaches_subscribers_on_another(stack, sender, receiver):
    account, token = user_with_bound_device(stack)
    with (
        worker_channel(stack, sender) as send_channel,
        worker_channel(stack, receiver) as receive_channel,
        worker_channel(stack, sender) as local_channel,
    ):
        remote = Subscription(receive_channel, token)
        local = Subscription(local_channel, token)
        try:
            first = grpc_text(stub_for(send_channel), token, account["id"], "warm-up")
            remote.messages(1)
            local.messages(1)
            sent = [
                grpc_text(stub_for(send_channel), token, account["id"], f"m{i}").data
                for i in range(5)
            ]
            received_remote = remote.messages(5)
            received_local = local.messages(5)
        finally:
            remote.cancel()
            local.cancel()
    assert [m.message.content for m in received_remote] == [s.message.content for s in sent]
    assert [m.id for m in received_remote] == [m.id for m in received_local]
    assert all(m.id > 0 for m in received_remote) and first.status == "success"


# --- servers of their own ---------------------------------------------------------------


def test_get_by_mac_rate_limit_is_shared_by_the_workers(stack, tmp_path):
    _, _, device = user_with_primary_device(stack)
    with (
        serve(tmp_path, stack.database_url, rtc_mac_requests_per_minute="3") as server,
        worker_channel(server.grpc_port, 0) as first,
        worker_channel(server.grpc_port, 1) as second,
    ):
        request = rtc_pb2.GetRtcTokenByMacRequest(mac_address=device["mac_address"])
        stubs = [rtc_pb2_grpc.RtcServiceStub(first), rtc_pb2_grpc.RtcServiceStub(second)]
        within_one_window(60, needed=10)
        for call in range(3):
            assert stubs[call % 2].GetRtcTokenByMac(request).data.user_id
        for stub in stubs:
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetRtcTokenByMac(request)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sigterm_drains_and_stops_every_worker(tmp_path):
    with serve(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}") as server:
        workers = worker_pids(server.pid)
        assert len(workers) == WORKERS
        for index in range(WORKERS):
            with worker_channel(server.grpc_port, index) as channel:
                assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert "stopped" in server.stdout.read()
    assert not any(alive(pid) for pid in workers)


def test_a_killed_worker_is_replaced_while_the_other_serves(tmp_path):
    with serve(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}") as server:
        victim, survivor = (
            worker_pid(server.pid, server.grpc_port, 0),
            worker_pid(server.pid, server.grpc_port, 1),
        )
        assert victim and survivor
        os.kill(victim, signal.SIGKILL)
        with worker_channel(server.grpc_port, 1) as channel:
            # The other worker answers while the victim is down and being replaced.
            assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        new = replaced(server.pid, server.grpc_port, 0, victim)
        assert new is not None, "worker 0 was not replaced"
        assert worker_pid(server.pid, server.grpc_port, 1) == survivor
        assert sorted(worker_pids(server.pid)) == sorted([new, survivor])
        assert server.poll() is None
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        output = server.stdout.read()
    assert f"worker 0 (pid {victim}) died: killed by SIGKILL" in output, output
    assert not any(alive(pid) for pid in (new, survivor))


def test_a_worker_in_a_crash_loop_stops_the_service(tmp_path):
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with serve(tmp_path, database, restart_limit="2", restart_window="120") as server:
        first = worker_pid(server.pid, server.grpc_port, 1)
        assert first
        os.kill(first, signal.SIGKILL)
        second = replaced(server.pid, server.grpc_port, 1, first)
        assert second is not None, "worker 1 was not replaced"
        others = worker_pids(server.pid)
        os.kill(second, signal.SIGKILL)  # its second death within the window
        assert server.wait(60) == 1
        output = server.stdout.read()
    assert "worker 1 died 2 times within 120 s" in output, output
    assert wait_until(lambda: not any(alive(pid) for pid in others))


def test_a_failure_after_the_workers_started_stops_them(tmp_path):
    env = {**stack_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}"), "DEVICEHUB_WORKERS": "2"}
    # Envoy's config cannot be written (a directory is in the way): ``serve`` fails after
    # its workers have started, and must stop them rather than wait for them forever.
    (tmp_path / f"envoy-{env['DEVICEHUB_HTTP_PORT']}.yaml").mkdir()
    process = subprocess.Popen(
        [DEVICEHUB, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()  # its workers follow (PR_SET_PDEATHSIG)
        process.wait()
    output = process.stdout.read()
    assert process.returncode == 1, output
    assert "IsADirectoryError" in output and "stopped" in output, output
    with socket.socket() as probe:  # no worker is left listening on the gRPC port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", int(env["DEVICEHUB_GRPC_PORT"])))


def test_grpc_port_taken_by_another_process_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **stack_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}"),
            "DEVICEHUB_WORKERS": str(WORKERS),
            "DEVICEHUB_GRPC_PORT": str(port),
        }
        result = subprocess.run(
            [DEVICEHUB, "serve", "--no-gateway"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_workers_setting_must_be_a_number(tmp_path):
    env = {
        **stack_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}"),
        "DEVICEHUB_WORKERS": "many",
        "DEVICEHUB_GRPC_PORT": str(free_port()),
    }
    result = subprocess.run(
        [DEVICEHUB, "serve", "--no-gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DEVICEHUB_WORKERS must be" in result.stderr
