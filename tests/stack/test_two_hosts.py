"""Two hosts behind one edge: two independent ``devicehub serve --no-gateway`` instances
(their own data directories, on the loopback addresses 127.0.0.2 and 127.0.0.3, one
PostgreSQL database, one signing secret) behind one ``devicehub gateway`` whose Envoy
balances over both (``DEVICEHUB_UPSTREAMS``), health-checked.

- A subscriber on one instance (a gRPC subscription on its own port, and an SSE stream
  through the edge) receives every message sent through the other.
- A rolling stop: SIGTERM to one instance while REST clients keep calling through the edge
  loses no request (the documented drain: calls in flight on the stopping instance finish
  within the grace; calls it no longer takes never reached it and Envoy retries them on
  the other), and the surviving instance serves on.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg2
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devicehub.config import Settings
from devicehub.testing.stack import (
    DEVICEHUB,
    Stack,
    envoy_admin,
    free_port,
    stop_process,
)

from api_client import lux_setup
from stack_settings import ADMIN_PASSWORD, stack_env
from streams import SseStream, Subscription, grpc_text, stub_for

HOSTS = ("127.0.0.2", "127.0.0.3")
READY_WITHIN = 60.0
# The stopping instance's grace for calls in flight (DEVICEHUB_SHUTDOWN_GRACE).
GRACE = 5.0
# Seconds the stopping instance serves on as NOT_SERVING (DEVICEHUB_DRAIN_DELAY): two
# health-check intervals of the gateway (gateway.HEALTH_CHECK_INTERVAL).
DRAIN_DELAY = 2.0
MESSAGES_EACH_WAY = 5
CLIENTS = 4  # concurrent REST clients during the rolling stop


@dataclass
class Instance:
    host: str
    grpc_port: int
    ws_port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def upstream(self) -> str:
        return f"{self.host}:{self.grpc_port}:{self.ws_port}"


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _wait_serving(instance: Instance, deadline: float) -> None:
    with grpc.insecure_channel(instance.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if instance.process.poll() is not None:
                break
            try:
                response = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{instance.target} did not start:\n{_log_tail(instance.log_path)}")


def _healthy_upstreams(gateway_env: dict[str, str], cluster: str) -> set[str]:
    """``host:port`` of the upstreams Envoy's health checks pass in ``cluster``."""
    healthy = set()
    for line in envoy_admin(gateway_env, "/clusters").splitlines():
        match = re.match(rf"{cluster}::([\d.]+:\d+)::health_flags::(.*)$", line)
        if match and match.group(2) == "healthy":
            healthy.add(match.group(1))
    return healthy


def _served(gateway_env: dict[str, str], cluster: str) -> dict[str, int]:
    """Requests Envoy completed per upstream ``host:port`` of ``cluster``."""
    served = {}
    for line in envoy_admin(gateway_env, "/clusters").splitlines():
        match = re.match(rf"{cluster}::([\d.]+:\d+)::rq_total::(\d+)$", line)
        if match:
            served[match.group(1)] = int(match.group(2))
    return served


def _stat(gateway_env: dict[str, str], name: str) -> int:
    body = envoy_admin(gateway_env, f"/stats?filter=^{re.escape(name)}$")
    return int(body.partition(":")[2].strip() or 0)


def _database_connections(database_url: str) -> int:
    """Connections to the database, this query's own not counted."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def two_hosts(tmp_path: Path, database_url: str) -> Iterator[tuple[Stack, list[Instance]]]:
    """Both instances and the gateway, ready; yields a ``Stack`` whose REST URL is the
    edge (logged in as the admin) and the instances."""
    base = stack_env(tmp_path, database_url)
    subprocess.run(
        [DEVICEHUB, "create-admin", "admin", "--password", ADMIN_PASSWORD],
        env=base,
        check=True,
        capture_output=True,
    )
    instances: list[Instance] = []
    processes: list[subprocess.Popen] = []
    try:
        for index, host in enumerate(HOSTS):
            data_dir = tmp_path / f"host-{index}"
            grpc_port, ws_port = free_port(host), free_port(host)
            env = {
                **base,
                "DEVICEHUB_DATA_DIR": str(data_dir),
                "DEVICEHUB_GRPC_HOST": host,
                "DEVICEHUB_GRPC_PORT": str(grpc_port),
                "DEVICEHUB_WS_PORT": str(ws_port),
                # The first instance (the one stopped below) runs worker processes.
                "DEVICEHUB_WORKERS": "2" if index == 0 else "1",
                "DEVICEHUB_SHUTDOWN_GRACE": str(GRACE),
                # Envoy checks every second: taken out before the listener closes.
                "DEVICEHUB_DRAIN_DELAY": str(DRAIN_DELAY),
                # The gateway's Envoy connects from 127.0.0.1 (the loopback source).
                "DEVICEHUB_TRUSTED_PROXIES": "127.0.0.1",
            }
            log_path = tmp_path / f"host-{index}.log"
            with log_path.open("a") as log:
                process = subprocess.Popen(
                    [DEVICEHUB, "serve", "--no-gateway"], env=env, stdout=log, stderr=log
                )
            processes.append(process)
            instances.append(Instance(host, grpc_port, ws_port, process, log_path))
        deadline = time.monotonic() + READY_WITHIN
        for instance in instances:
            _wait_serving(instance, deadline)

        gateway_env = {
            **base,
            "DEVICEHUB_DATA_DIR": str(tmp_path / "gateway"),
            "DEVICEHUB_UPSTREAMS": ",".join(instance.upstream for instance in instances),
        }
        gateway_log = tmp_path / "gateway.log"
        with gateway_log.open("a") as log:
            gateway = subprocess.Popen(
                [DEVICEHUB, "gateway"], env=gateway_env, stdout=log, stderr=log
            )
        processes.append(gateway)
        edge = Stack(
            backend="postgresql",
            env=gateway_env,
            database_url=database_url,
            rest_url=f"http://127.0.0.1:{gateway_env['DEVICEHUB_HTTP_PORT']}",
            grpc_target=instances[0].target,
            process=gateway,
            log_path=gateway_log,
        )
        grpc_upstreams = {f"{i.host}:{i.grpc_port}" for i in instances}

        def edge_ready() -> bool:
            if gateway.poll() is not None:
                pytest.fail(f"devicehub gateway exited:\n{_log_tail(gateway_log)}")
            try:
                return (
                    requests.get(edge.url("/api/v1/ping"), timeout=1).ok
                    and _healthy_upstreams(gateway_env, "devicehub_grpc") == grpc_upstreams
                )
            except (requests.ConnectionError, AssertionError, OSError):
                return False

        _wait_for(edge_ready, READY_WITHIN, "the gateway with both upstreams healthy")
        edge.admin_token = edge.login("admin", ADMIN_PASSWORD)
        yield edge, instances
        edge.close()
    finally:
        for process in reversed(processes):
            stop_process(process)


def test_two_hosts_behind_one_edge(request, tmp_path):
    database_url = request.getfixturevalue("pg_cluster").create_database("two_hosts")
    with two_hosts(tmp_path, database_url) as (edge, (first, second)):
        figures: dict[str, object] = {}
        # Set up through the edge (whichever instance answers): one signing secret, one
        # database, so the token works on both instances.
        lux = lux_setup(edge)
        user_id = lux.account["id"]
        channels = [grpc.insecure_channel(i.target) for i in (first, second)]
        try:
            # --- messages across hosts ---------------------------------------------
            across = 0
            for receiving, sending in ((0, 1), (1, 0)):
                subscription = Subscription(channels[receiving], lux.token)
                sse = SseStream(edge, lux.token)
                try:
                    sent = [f"from-{sending}-to-{receiving}-{n}" for n in range(MESSAGES_EACH_WAY)]
                    for content in sent:
                        grpc_text(stub_for(channels[sending]), lux.token, user_id, content)
                    received = subscription.messages(len(sent))
                    got = [message.message.content for message in received]
                    assert got == sent
                    assert [m["message"]["content"] for m in sse.messages(len(sent))] == sent
                    across += len(got)
                    # Acknowledged, so the next subscription's replay starts empty.
                    ack = edge.request(
                        "POST",
                        "/api/device/messages/ack/",
                        lux.token,
                        json={"ids": [m.id for m in received]},
                    )
                    assert ack.status_code == 200, ack.text
                finally:
                    subscription.cancel()
                    sse.close()
            figures["messages across hosts"] = across
            # README "Sizing": per instance at most workers x (pool + LISTEN) + serve's own.
            pool = Settings().db_pool_size
            connections = _database_connections(database_url)
            figures["database connections"] = connections
            assert connections <= (2 * (pool + 1) + 1) + (pool + 1)

            # --- rolling stop of the first instance ----------------------------------
            counts = {"requests": 0, "failures": 0}
            failures: list[str] = []
            lock = threading.Lock()
            stop_load = threading.Event()

            def client() -> None:
                with requests.Session() as session:
                    headers = {"Authorization": f"Bearer {lux.token}"}
                    while not stop_load.is_set():
                        try:
                            response = session.get(
                                edge.url("/api/v1/accounts/me"), headers=headers, timeout=30
                            )
                            failed = response.status_code != 200
                            detail = f"{response.status_code} {response.text[:200]}"
                        except requests.RequestException as error:
                            failed, detail = True, repr(error)
                        with lock:
                            counts["requests"] += 1
                            if failed:
                                counts["failures"] += 1
                                failures.append(detail)

            threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            before = counts["requests"]
            # Both instances take the edge's calls until the stop.
            served_before = _served(edge.env, "devicehub_grpc")
            assert all(served_before.get(f"{i.host}:{i.grpc_port}") for i in (first, second))
            sigterm = time.monotonic()
            first.process.send_signal(signal.SIGTERM)
            code = first.process.wait(GRACE + 30)
            stop_seconds = time.monotonic() - sigterm
            stopped_after = counts["requests"]
            time.sleep(1.0)  # the survivor alone
            stop_load.set()
            for thread in threads:
                thread.join(35)
            figures.update(
                requests=counts["requests"],
                failures=counts["failures"],
                requests_before_sigterm=before,
                requests_while_stopping=stopped_after - before,
                stop_seconds=round(stop_seconds, 2),
                served_by_upstream=_served(edge.env, "devicehub_grpc"),
                retried_by_envoy=_stat(edge.env, "cluster.devicehub_grpc.upstream_rq_retry"),
            )
            print(f"two hosts: {figures}")
            assert code == 0, _log_tail(first.log_path)
            assert counts["failures"] == 0, failures[:5]
            assert counts["requests"] > stopped_after  # the survivor served on

            # Envoy has taken the stopped instance out, and the survivor carries on with
            # live messages.
            _wait_for(
                lambda: (
                    _healthy_upstreams(edge.env, "devicehub_grpc")
                    == {f"{second.host}:{second.grpc_port}"}
                ),
                10,
                "the stopped instance to be marked unhealthy",
            )
            subscription = Subscription(channels[1], lux.token)
            try:
                response = edge.request(
                    "POST",
                    "/api/device/messages/",
                    lux.token,
                    json={"type": "text", "message": {"content": "after"}, "user_id": ""},
                )
                assert response.status_code == 200, response.text
                assert [m.message.content for m in subscription.messages(1)] == ["after"]
            finally:
                subscription.cancel()
        finally:
            for channel in channels:
                channel.close()
