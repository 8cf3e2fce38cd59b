"""The Prometheus endpoint: known calls move the metrics by exactly what was done, summed
over both worker processes, on SQLite and PostgreSQL; Envoy's grpc_stats beside it.

Each backend gets a stack of its own (two workers, like the session stacks), so nothing
else moves its counters while a test runs: every assertion is on the difference between a
scrape before and a scrape after. Values that settle a little later (a delivery is recorded
within 0.2 s, a stream's gauge drops once the server sees it end) are waited for, bounded.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import fake_alimtalk
import psycopg2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as websocket

from devicehub.testing.stack import Stack, envoy_admin, start_stack, unique
from devicehub.v1 import account_pb2, account_pb2_grpc, system_pb2, system_pb2_grpc

from api_client import lux_setup
from bound_accounts import user_with_bound_device
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env
from streams import SseStream, Subscription, send, send_text, ws_url
from worker_processes import WORKERS, replaced, wait_until, worker_channel, worker_pid, worker_pids

POOL_SIZE = 3
QUEUE_LIMIT = 2
SYSTEM = "devicehub.v1.SystemService"
MESSAGING = "devicehub.v1.MessagingService"
SETTLE = 15.0  # seconds a value that settles later gets
ACK = "/api/device/messages/ack/"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def metered(request, tmp_path_factory, alimtalk_provider, weather_provider) -> Iterator[Stack]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"metrics-{backend}")
    env = {
        **stack_env(
            tmp,
            backend_database(request, backend, tmp),
            alimtalk_provider.base_url,
            weather_provider.base_url,
        ),
        "DEVICEHUB_DB_POOL_SIZE": str(POOL_SIZE),
        "DEVICEHUB_MESSAGE_QUEUE_LIMIT": str(QUEUE_LIMIT),
        # A WebSocket whose client went away ends at the next heartbeat.
        "DEVICEHUB_STREAM_HEARTBEAT": "1",
    }
    started = start_stack(backend, env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


class Scrape:
    """One scrape of the endpoint: sample (name and labels) -> value; absent reads as 0."""

    def __init__(self, stack: Stack) -> None:
        url = f"http://127.0.0.1:{stack.env['DEVICEHUB_METRICS_PORT']}/metrics"
        response = requests.get(url, timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        self.values: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def rpc(self, service: str, method: str, code: str = "OK", protocol: str = "grpc") -> float:
        labels = {"service": service, "method": method, "code": code, "protocol": protocol}
        requests_total = self("devicehub_rpc_requests_total", **labels)
        # Every finished call is also one observation of the latency histogram.
        assert self("devicehub_rpc_duration_seconds_count", **labels) == requests_total
        return requests_total


def settles(stack: Stack, value, expected: float) -> bool:
    """Whether ``value(scrape)`` becomes ``expected`` within SETTLE seconds."""
    return wait_until(lambda: value(Scrape(stack)) == expected, SETTLE)


def rpc_moves(
    stack: Stack, before: Scrape, expected: dict[tuple[str, str, str, str], float]
) -> dict[tuple[str, str, str, str], float]:
    """How far the RPC counts (service, method, code, protocol) of ``expected`` moved
    since ``before``, once they match ``expected`` or SETTLE seconds passed. A failed call
    is counted a moment after its client has the status (gRPC sends an abort's status at
    once), so the counts are waited for; counters only grow, so a count past its expected
    value never comes back to it."""
    seen: dict[tuple[str, str, str, str], float] = {}

    def matches() -> bool:
        after = Scrape(stack)
        seen.update({key: after.rpc(*key) - before.rpc(*key) for key in expected})
        return seen == expected

    wait_until(matches, SETTLE)
    return seen


def ping(channel) -> None:
    system_pb2_grpc.SystemServiceStub(channel).Ping(system_pb2.PingRequest(), timeout=10)


def metric_files(stack: Stack) -> set[str]:
    return {path.name for path in (Path(stack.env["DEVICEHUB_DATA_DIR"]) / "metrics").iterdir()}


def test_rpc_counts_and_latencies_move_by_exactly_the_calls_made_on_both_workers(metered):
    before = Scrape(metered)
    rest_pings, pings_per_worker = 5, 2
    for _ in range(rest_pings):
        assert metered.request("GET", "/api/v1/ping").status_code == 200
    for index in range(WORKERS):  # each worker's own socket: both serve some
        with worker_channel(metered, index) as channel:
            for _ in range(pings_per_worker):
                ping(channel)
    ping(metered.channel(via_envoy=True))  # native gRPC through the edge is grpc, not rest
    # A refused call is counted with its code, over REST and gRPC alike.
    assert metered.request("GET", "/api/v1/accounts/me").status_code == 401
    stub = account_pb2_grpc.AccountServiceStub(metered.channel())
    with pytest.raises(Exception, match="UNAUTHENTICATED"):
        stub.GetMyAccount(account_pb2.GetMyAccountRequest(), timeout=10)
    account = "devicehub.v1.AccountService"
    expected = {
        (SYSTEM, "Ping", "OK", "rest"): rest_pings,
        (SYSTEM, "Ping", "OK", "grpc"): WORKERS * pings_per_worker + 1,
        (account, "GetMyAccount", "UNAUTHENTICATED", "rest"): 1,
        (account, "GetMyAccount", "UNAUTHENTICATED", "grpc"): 1,
    }
    assert rpc_moves(metered, before, expected) == expected
    # Both worker processes wrote their values; the endpoint summed them.
    pids = worker_pids(metered.process.pid)
    assert len(pids) == WORKERS
    assert {f"counter_{pid}.db" for pid in pids} <= metric_files(metered)


def test_ingestion_counts_devlog_records_and_movement_samples(metered):
    lux = lux_setup(metered)
    entry = {
        "real_user_id": lux.child["id"],
        "device_id": lux.device["id"],
        "unique_id": lux.device["unique_id"],
        "detail_data": {
            "treatment_date": "2024-12-05T14:06:47",
            "finish_flag": 2,
            "last_intensity": 2,
            "treatment_time": 416,
        },
    }
    records = [{**entry, "log_file_id": number} for number in (1, 2, 3)]
    samples = [{"timestamp": 1736411840 + i, "val": i} for i in range(25)]
    movement = {"real_user_id": lux.child["id"], "device_id": lux.device["id"]}
    before = Scrape(metered)
    response = metered.request(
        "POST", "/api/v1/lux/device/devlog", lux.token, json={"log_arrays": records}
    )
    assert response.status_code == 200, response.text
    response = metered.request(
        "POST",
        "/api/v1/lux/device/movement",
        lux.token,
        json={**movement, "movement_data": samples},
    )
    assert response.status_code == 200, response.text
    refused = metered.request(
        "POST", "/api/v1/lux/device/movement", lux.token, json={**movement, "movement_data": []}
    )
    assert refused.status_code == 400  # nothing ingested
    after = Scrape(metered)
    devlog = "devicehub_devlog_records_ingested_total"
    assert after(devlog) - before(devlog) == len(records)
    movement_total = "devicehub_movement_samples_ingested_total"
    assert after(movement_total) - before(movement_total) == len(samples)


def test_messages_by_state_and_live_subscriptions_by_transport(metered):
    account, token = user_with_bound_device(metered)
    before = Scrape(metered)

    def subscriptions(transport: str):
        return lambda scrape: scrape("devicehub_subscriptions", transport=transport)

    def state(name: str):
        return lambda scrape: (
            scrape("devicehub_messages_total", state=name)
            - before("devicehub_messages_total", state=name)
        )

    grpc_stream = Subscription(metered.channel(), token)
    sse = SseStream(metered, token)
    try:
        with websocket(ws_url(metered, account["id"], token), open_timeout=10) as ws:
            for transport in ("grpc", "sse", "websocket"):
                held = subscriptions(transport)
                assert settles(metered, held, held(before) + 1), transport
            message_id = send_text(metered, token, account["id"], "metered " + unique())
            assert [m.id for m in grpc_stream.messages(1)] == [message_id]
            assert [int(m["id"]) for m in sse.messages(1)] == [message_id]
            assert json.loads(ws.recv(timeout=10))["id"] == message_id
            # Three streams emitted it; it became delivered once.
            assert settles(metered, state("delivered"), 1)
            response = metered.request("POST", ACK, token, json={"ids": [message_id]})
            assert response.json() == {"acked": 1}
    finally:
        grpc_stream.cancel()
        sse.close()
    after = Scrape(metered)
    assert state("queued")(after) == 1
    assert state("delivered")(after) == 1
    assert state("acked")(after) == 1
    assert state("expired")(after) == 0
    for transport in ("grpc", "sse", "websocket"):
        held = subscriptions(transport)
        assert settles(metered, held, held(before)), transport
    # A stream is counted when it ends: the client cancelled it.
    expected = {(MESSAGING, "SubscribeMessages", "CANCELLED", p): 1 for p in ("grpc", "rest")}
    assert rpc_moves(metered, before, expected) == expected


def test_a_full_queue_refusal_is_counted(metered):
    account, token = user_with_bound_device(metered)
    before = Scrape(metered)
    for number in range(QUEUE_LIMIT):
        send_text(metered, token, account["id"], f"queued {number}")
    body = {"type": "text", "message": {"content": "one too many"}}
    assert send(metered, token, body, account["id"]).status_code == 429
    after = Scrape(metered)
    refusals = "devicehub_message_queue_refusals_total"
    assert after(refusals) - before(refusals) == 1
    queued = ("devicehub_messages_total", {"state": "queued"})
    assert after(queued[0], **queued[1]) - before(queued[0], **queued[1]) == QUEUE_LIMIT


def test_provider_calls_are_counted_by_outcome(metered):
    account, token = user_with_bound_device(metered)
    _, sender = metered.new_user(phone="010" + str(int(time.time() * 1000))[-8:])
    _, failing = metered.new_user(phone=fake_alimtalk.FAIL_RECIPIENT)
    before = Scrape(metered)
    weather = {"type": "weather", "message": {"city": "北京"}}
    assert send(metered, token, weather, account["id"]).status_code == 200
    nowhere = {"type": "weather", "message": {"city": "亚特兰蒂斯"}}
    assert send(metered, token, nowhere, account["id"]).status_code == 404
    assert metered.request("POST", "/api/v1/lux/device/alimtalk", sender).status_code == 200
    assert metered.request("POST", "/api/v1/lux/device/alimtalk", failing).status_code == 409
    after = Scrape(metered)

    def moved(provider: str, outcome: str) -> float:
        name = "devicehub_provider_calls_total"
        return after(name, provider=provider, outcome=outcome) - before(
            name, provider=provider, outcome=outcome
        )

    assert moved("weather", "ok") == 1
    assert moved("weather", "city_not_found") == 1
    assert moved("weather", "unavailable") == 0
    assert moved("alimtalk", "sent") == 1
    assert moved("alimtalk", "rejected") == 1
    assert moved("alimtalk", "unreachable") == 0


def test_database_pool_gauges_and_build_info(metered):
    scrape = Scrape(metered)
    assert scrape("devicehub_db_pool_connections") == WORKERS * POOL_SIZE
    # Idle but for the readiness probes: present, and within the pools.
    in_use, waiting = "devicehub_db_connections_in_use", "devicehub_db_calls_waiting"
    assert (in_use, frozenset()) in scrape.values and (waiting, frozenset()) in scrape.values
    assert 0 <= scrape(in_use) <= WORKERS * POOL_SIZE
    assert scrape(waiting) >= 0
    assert scrape("devicehub_build_info", version=metadata.version("devicehub")) == 1


def test_envoy_grpc_stats_count_rest_and_native_grpc_calls(metered):
    def envoy_calls(stat: str) -> float:
        for family in text_string_to_metric_families(envoy_admin(metered.env, "/stats/prometheus")):
            for sample in family.samples:
                # The parser names every counter sample ..._total (Envoy's success has none).
                if (
                    sample.name
                    in (f"envoy_cluster_grpc_{stat}", f"envoy_cluster_grpc_{stat}_total")
                    and sample.labels.get("envoy_cluster_name") == "devicehub_grpc"
                ):
                    return sample.value
        return 0.0

    before = {stat: envoy_calls(stat) for stat in ("total", "success")}
    for _ in range(3):
        assert metered.request("GET", "/api/v1/ping").status_code == 200
    ping(metered.channel(via_envoy=True))
    for stat in ("total", "success"):
        assert envoy_calls(stat) - before[stat] == 4, stat


def test_listener_reconnects_are_counted(metered):
    if metered.backend != "postgresql":
        pytest.skip("LISTEN is PostgreSQL's")
    before = Scrape(metered)
    with psycopg2.connect(metered.database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %%' "
            "AND pid <> pg_backend_pid()"
        )
        terminated = sum(1 for (done,) in cursor.fetchall() if done)
    connection.close()
    assert terminated == WORKERS  # one LISTEN connection per worker
    reconnects = "devicehub_listener_reconnects_total"
    assert settles(metered, lambda scrape: scrape(reconnects) - before(reconnects), WORKERS)


# Last of the module: it kills a worker.
def test_a_dead_workers_live_gauges_leave_the_sums_and_its_counts_stay(metered):
    _, token = user_with_bound_device(metered)
    port = metered.env["DEVICEHUB_GRPC_PORT"]

    def streams(scrape: Scrape) -> float:
        return scrape("devicehub_subscriptions", transport="grpc")

    idle = streams(Scrape(metered))
    with worker_channel(metered, 1) as channel:
        ping(channel)
        stream = Subscription(channel, token)
        assert settles(metered, streams, idle + 1)
        before = Scrape(metered)
        pid = worker_pid(metered.process.pid, port, 1)
        assert pid is not None
        assert f"gauge_livesum_{pid}.db" in metric_files(metered)
        os.kill(pid, signal.SIGKILL)
        assert replaced(metered.process.pid, port, 1, pid) is not None
        stream.cancel()
    # Its stream is gone from the gauge (the supervisor removed its live gauges) ...
    assert settles(metered, streams, idle)
    after = Scrape(metered)
    files = metric_files(metered)
    assert f"gauge_livesum_{pid}.db" not in files
    # ... and its counts stay in the totals: a counter never goes down while serve runs.
    assert f"counter_{pid}.db" in files
    assert after.rpc(SYSTEM, "Ping") == before.rpc(SYSTEM, "Ping")
