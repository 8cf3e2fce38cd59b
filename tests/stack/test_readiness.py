"""Readiness: each server process's health follows the database.

Every worker probes the database through its connection pool (``storage/probe.py``,
``DEVICEHUB_READINESS_INTERVAL``) and says NOT_SERVING while the database does not
answer, SERVING again once it does, so a load balancer takes a process out while its
calls could only fail. PostgreSQL only: a SQLite file cannot be taken away from a process
running as root (the test user) that has it open.

The stack runs on a cluster of its own, since the tests stop it: once the whole server
(the LISTEN connection goes too), and once only for new connections to the stack's
database while the pool's are cut, which the LISTEN connection survives: health then
follows the probe alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from devicehub.testing.pgcluster import ThrowawayCluster
from devicehub.testing.stack import Stack, start_stack

from stack_settings import ADMIN_PASSWORD, stack_env
from worker_processes import WORKERS, health_status, worker_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WITHIN = 20.0  # seconds for every worker to follow the database (probes every 0.5 s)
DBNAME = "readiness"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    with ThrowawayCluster() as started:
        yield started


@pytest.fixture(scope="module")
def pg_stack(cluster, tmp_path_factory, alimtalk_provider, weather_provider) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack-readiness")
    env = stack_env(
        tmp, cluster.create_database(DBNAME), alimtalk_provider.base_url, weather_provider.base_url
    )
    env["DEVICEHUB_READINESS_INTERVAL"] = "0.5"
    started = start_stack("postgresql", env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


def _statuses(stack: Stack) -> list[int | None]:
    """Each worker's health status (None: it did not answer)."""
    statuses: list[int | None] = []
    for index in range(WORKERS):
        with worker_channel(stack, index) as channel:
            try:
                statuses.append(health_status(channel))
            except grpc.RpcError:
                statuses.append(None)
    return statuses


def _wait_for_every_worker(stack: Stack, status: int) -> None:
    deadline = time.monotonic() + WITHIN
    while (current := _statuses(stack)) != [status] * WORKERS:
        assert time.monotonic() < deadline, f"health {current}, expected {status} on every worker"
        time.sleep(0.2)


def _listening_backends(cluster: ThrowawayCluster) -> int:
    return int(
        cluster.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DBNAME}'"
            " AND query LIKE 'LISTEN %'"
        )
    )


def _ping_account(stack: Stack) -> int:
    return stack.request("GET", "/api/v1/accounts/me", stack.admin_token).status_code


def test_health_is_not_serving_while_the_database_is_down(pg_stack, cluster):
    _wait_for_every_worker(pg_stack, SERVING)
    cluster.stop_server()
    try:
        _wait_for_every_worker(pg_stack, NOT_SERVING)
    finally:
        cluster.restart()
    _wait_for_every_worker(pg_stack, SERVING)
    assert _ping_account(pg_stack) == 200


def test_health_follows_the_probe_when_only_the_pool_loses_the_database(pg_stack, cluster):
    _wait_for_every_worker(pg_stack, SERVING)
    assert _listening_backends(cluster) == WORKERS
    cluster.psql(f'ALTER DATABASE "{DBNAME}" WITH ALLOW_CONNECTIONS false')
    try:
        # Every connection of the pools (not the LISTEN ones) is cut, and none can open.
        cluster.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{DBNAME}' AND query NOT LIKE 'LISTEN %'"
        )
        _wait_for_every_worker(pg_stack, NOT_SERVING)
        assert _listening_backends(cluster) == WORKERS  # the listener never noticed
        assert _ping_account(pg_stack) == 503
    finally:
        cluster.psql(f'ALTER DATABASE "{DBNAME}" WITH ALLOW_CONNECTIONS true')
    _wait_for_every_worker(pg_stack, SERVING)
    assert _ping_account(pg_stack) == 200
