"""The movement store under the API: concurrent overlapping uploads, chunks that interleave
within a window, the PostgreSQL chunk layout, its time partitions and retention, and the
restartable conversion of a row table into chunks."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest

from devicehub.storage.migrate import MIGRATIONS_DIR, apply_migrations
from devicehub.storage.movement_chunks import (
    PARTITION_SECONDS,
    WINDOW_SECONDS,
    partition_name,
    week_start,
)
from devicehub.testing.stack import DEVICEHUB, Stack, start_stack, unique
from devicehub.v1 import movement_pb2 as pb
from devicehub.v1 import movement_pb2_grpc

from api_client import lux_setup, metadata, query_database
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env

HOUR = WINDOW_SECONDS
DAY = 86400
BASE = 1_736_409_600  # a window's start (2025-01-09 08:00 UTC)


def grpc_upload(stack: Stack, lux, batch: list[tuple[int, int]]) -> None:
    stub = movement_pb2_grpc.MovementServiceStub(stack.channel())
    reply = stub.UploadMovement(
        pb.UploadMovementRequest(
            real_user_id=lux.child["id"],
            device_id=lux.device["id"],
            movement_data=[pb.MovementSample(timestamp=ts, val=val) for ts, val in batch],
        ),
        metadata=metadata(lux.token),
    )
    assert reply.statusCode == 200


def read_all(stack: Stack, lux, page_size: int, **bounds) -> list[tuple[int, int]]:
    stub = movement_pb2_grpc.MovementServiceStub(stack.channel())
    found: list[tuple[int, int]] = []
    token = ""
    while True:
        page = stub.ListMovementSamples(
            pb.ListMovementSamplesRequest(
                device_id=lux.device["id"],
                real_user_id=lux.child["id"],
                page_size=page_size,
                page_token=token,
                **bounds,
            ),
            metadata=metadata(lux.token),
        )
        assert len(page.samples) <= page_size
        found += [(s.timestamp, s.val) for s in page.samples]
        token = page.next_page_token
        if not token:
            return found


def stored_rows(stack: Stack, device_id: int) -> list[tuple[int, int]]:
    rows = query_database(
        stack, "SELECT ts, val FROM movement_sample WHERE device_id = ? ORDER BY ts", (device_id,)
    )
    return [(int(ts), int(val)) for ts, val in rows]


def test_concurrent_overlapping_uploads_store_each_sample_once(stack, lux):
    """Eight uploads for one device, started together by a barrier, each overlapping its
    neighbours (and spanning two windows): every timestamp is stored once, with the value
    of one of the uploads that carried it. Three rounds."""
    threads = 8
    for round_number in range(3):
        start = BASE + round_number * 10 * HOUR + HOUR - 700
        uploads = [
            [(start + 150 * k + i, 1000 * k + i) for i in range(600)] for k in range(threads)
        ]
        barrier = threading.Barrier(threads)
        failures: list[BaseException] = []

        def send(
            batch: list[tuple[int, int]],
            barrier: threading.Barrier = barrier,
            failures: list[BaseException] = failures,
        ) -> None:
            try:
                barrier.wait(timeout=30)
                grpc_upload(stack, lux, batch)
            except BaseException as error:  # reported by the test's thread
                failures.append(error)

        workers = [threading.Thread(target=send, args=(batch,)) for batch in uploads]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert failures == []
        carried: dict[int, set[int]] = {}
        for batch in uploads:
            for ts, val in batch:
                carried.setdefault(ts, set()).add(val)
        in_round = [
            (ts, val)
            for ts, val in stored_rows(stack, lux.device["id"])
            if start <= ts < start + 10 * HOUR
        ]
        assert [ts for ts, _ in in_round] == sorted(carried)  # each once, none missing
        assert all(val in carried[ts] for ts, val in in_round)
        assert read_all(stack, lux, 1000, start=start, end=start + 10 * HOUR) == in_round


def test_a_device_with_stored_samples_is_not_deleted(stack, admin, lux):
    """A device whose samples are stored (in chunks on PostgreSQL) keeps them: deleting it
    is refused with the documented 409 and nothing is removed."""
    grpc_upload(stack, lux, [(BASE + 5, 7)])
    path = f"/api/device/devices/{lux.device['id']}/"
    refused = stack.request("DELETE", path, admin)
    assert refused.status_code == 409
    assert refused.json()["code"] == "DEVICE_HAS_HISTORY"
    assert stack.request("GET", path, admin).status_code == 200
    assert stored_rows(stack, lux.device["id"]) == [(BASE + 5, 7)]


def test_interleaved_uploads_read_back_in_timestamp_order(stack, lux):
    """Even timestamps first, then odd ones, over three windows: the second upload's chunks
    interleave with the first's; pages of 7 still give every sample once, in order."""
    start = BASE + 100 * HOUR + HOUR - 50
    evens = [(start + i, i) for i in range(0, 2 * HOUR, 2)]
    odds = [(start + i, i) for i in range(1, 2 * HOUR, 2)]
    grpc_upload(stack, lux, evens)
    grpc_upload(stack, lux, odds)
    grpc_upload(stack, lux, odds[::3] + evens[::5])  # all stored already: no-op
    everything = sorted(evens + odds)
    assert read_all(stack, lux, 7, start=start, end=start + 2 * HOUR) == everything
    assert read_all(stack, lux, 1000, start=start + 49, end=start + 52) == everything[49:52]


@pytest.fixture
def postgres_only(stack):
    if stack.backend != "postgresql":
        pytest.skip("the chunk layout is PostgreSQL's")
    return stack


def test_chunks_hold_a_window_each_and_a_retry_adds_none(postgres_only, lux):
    stack = postgres_only
    start = BASE + 200 * HOUR + HOUR - 400
    batch = [(start + i, i % 50) for i in range(1000)]
    grpc_upload(stack, lux, batch)
    grpc_upload(stack, lux, batch)
    chunks = query_database(
        stack,
        "SELECT window_start, first_offset, last_offset, sample_count, child_id"
        " FROM movement_chunk WHERE device_id = ? ORDER BY window_start",
        (lux.device["id"],),
    )
    window = start - start % HOUR
    assert chunks == [
        (window, HOUR - 400, HOUR - 1, 400, lux.child["id"]),
        (window + HOUR, 0, 599, 600, lux.child["id"]),
    ]


def test_implausible_timestamps_are_kept_in_the_default_partition(postgres_only, lux):
    """Timestamps before 2000 or over a year ahead (a device whose clock was never set):
    stored and read back as any sample, in the default partition, which the maintenance
    never drops."""
    stack = postgres_only
    early, late = 500, 4_000_000_000
    grpc_upload(stack, lux, [(late, 6), (early, 5)])
    assert read_all(stack, lux, 10, start=0) == [(early, 5), (late, 6)]
    in_default = query_database(
        stack,
        "SELECT count(*) FROM movement_chunk_default WHERE device_id = ?",
        (lux.device["id"],),
    )
    assert in_default == [(2,)]


# --- partitions and retention (a PostgreSQL stack of its own) --------------------------

RETENTION_DAYS = 30


@pytest.fixture(scope="module")
def retained(request, tmp_path_factory) -> Iterator[Stack]:
    """A PostgreSQL stack keeping 30 days of samples, looking after its partitions every
    second."""
    tmp = tmp_path_factory.mktemp("retention")
    env = stack_env(tmp, backend_database(request, "postgresql", tmp))
    env.update(
        DEVICEHUB_MOVEMENT_RETENTION_DAYS=str(RETENTION_DAYS),
        DEVICEHUB_MOVEMENT_MAINTENANCE_INTERVAL="1",
        DEVICEHUB_LOG_LEVEL="INFO",  # the maintenance logs what it created and dropped
    )
    started = start_stack("postgresql", env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


def partition_names(stack: Stack) -> set[str]:
    rows = query_database(
        stack,
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'movement_chunk'::regclass",
    )
    return {name for (name,) in rows}


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_partitions_ahead_and_samples_past_the_retention_dropped_whole(retained):
    stack = retained
    lux = lux_setup(stack)
    now = int(time.time())
    current = week_start(now)
    # Partitions from the retention's start to two weeks ahead are there from the start.
    wait_for(
        lambda: (
            {partition_name(current + k * PARTITION_SECONDS) for k in (-1, 0, 1, 2)}
            <= partition_names(stack)
        ),
        "the partitions around the current week",
    )
    old = now - 70 * DAY  # past the retention: lands in the default partition ...
    recent = now - 10 * DAY
    ahead = now + 10 * 7 * DAY  # beyond the partitions made ahead
    samples = [(old, 1), (old + 1, 2), (recent, 3), (now, 4), (ahead, 5)]
    grpc_upload(stack, lux, samples)
    # ... whence the maintenance moves it into its week's partition and drops that whole;
    # the sample ten weeks ahead gets its week's partition too.
    wait_for(
        lambda: read_all(stack, lux, 100, start=0) == [(recent, 3), (now, 4), (ahead, 5)],
        "the samples past the retention to go",
    )
    names = partition_names(stack)
    assert partition_name(week_start(ahead)) in names
    assert partition_name(week_start(old)) not in names
    assert not any(
        name.startswith("movement_chunk_2") and name < partition_name(now - 40 * DAY)
        for name in names
    )
    assert query_database(stack, "SELECT count(*) FROM movement_chunk_default") == [(0,)]
    log = stack.log_path.read_text()
    assert (
        f"movement partitions dropped past the retention: {partition_name(week_start(old))}" in log
    )


# --- the conversion of the row table ----------------------------------------------------

SEED = f"""
INSERT INTO account (id, username, password_hash, created_at, updated_at)
    VALUES (1, 'seed', 'x', now(), now());
INSERT INTO child
    (id, root_user_id, first_name, last_name, birthdate, gender, created_at, updated_at)
    VALUES (1, 1, 'A', 'K', '2015-01-01', 'female', now(), now()),
           (2, 1, 'B', 'K', '2016-01-01', 'male', now(), now());
INSERT INTO device_type (id, name, code, created_at, updated_at) VALUES (1, 't', 'T', now(), now());
INSERT INTO device_batch (id, device_type_id, batch_number, production_date, created_at, updated_at)
    VALUES (1, 1, 'B1', '2025-01-01', now(), now());
INSERT INTO device (id, device_type_id, batch_id, serial_number, device_code, mac_address,
                    unique_id, created_at, updated_at)
    SELECT d, 1, 1, d::text, 'code' || d, 'AA:00:00:00:00:0' || d, 'uid' || d, now(), now()
    FROM generate_series(1, 3) AS d;
-- device 1: 20,000 consecutive seconds of child 1; device 2: every 7th second of child 2
-- over a week; device 3: child 1, then child 2 from the middle of a window on; a few
-- samples a year back and in 2096 (past the partitions' horizon).
INSERT INTO movement_sample (device_id, ts, val, child_id)
    SELECT 1, {BASE} + s, s % 1000, 1 FROM generate_series(0, 19999) AS s;
INSERT INTO movement_sample (device_id, ts, val, child_id)
    SELECT 2, {BASE} + s * 7, -s, 2 FROM generate_series(0, 86400) AS s;
INSERT INTO movement_sample (device_id, ts, val, child_id)
    SELECT 3, {BASE} + s, s, CASE WHEN s < 5400 THEN 1 ELSE 2 END
    FROM generate_series(0, 9999) AS s;
INSERT INTO movement_sample (device_id, ts, val, child_id)
    VALUES (3, {BASE - 365 * DAY}, 7, 1), (3, 4000000000, 8, 2)
"""


def test_conversion_interrupted_by_kill_9_resumes_without_losing_a_sample(pg_cluster, tmp_path):
    url = pg_cluster.create_database(unique("conv").lower())
    before = tmp_path / "migrations"
    before.mkdir()
    for script in sorted(MIGRATIONS_DIR.glob("000[1-7]_*.py")):
        shutil.copy(script, before)
    import devicehub.storage.db as db

    database = db.open_database(url, pool_size=1)
    try:
        apply_migrations(database, before)
    finally:
        database.close_all()
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(SEED)
        cursor.execute("SELECT device_id, ts, val, child_id FROM movement_sample ORDER BY 1, 2")
        seeded = cursor.fetchall()
    assert len(seeded) == 20_000 + 86_401 + 10_002

    env = {
        "DEVICEHUB_DATABASE_URL": url,
        "DEVICEHUB_DATA_DIR": str(tmp_path),
        "DEVICEHUB_MOVEMENT_MIGRATION_BATCH": "500",
        "PATH": "/usr/bin:/bin",
    }

    def remaining() -> int | None:
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('movement_sample_rows') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return None
            cursor.execute("SELECT count(*) FROM movement_sample_rows")
            return cursor.fetchone()[0]

    first = subprocess.Popen([DEVICEHUB, "migrate"], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        assert first.poll() is None, "the conversion ended before it could be interrupted"
        assert time.monotonic() < deadline
        left = remaining()
        if left is not None and 0 < left < len(seeded) // 2:
            break
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(30)

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM schema_migration WHERE name = '0008_movement_chunks'")
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT coalesce(sum(sample_count), 0) FROM movement_chunk")
        (in_chunks,) = cursor.fetchone()
    left = remaining()
    assert left is not None and in_chunks > 0
    assert in_chunks + left == len(seeded)  # every sample in exactly one of the two

    second = subprocess.run([DEVICEHUB, "migrate"], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "applied: 0008_movement_chunks"
    assert remaining() is None
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT device_id, ts, val, child_id FROM movement_sample ORDER BY 1, 2")
        assert cursor.fetchall() == seeded
        cursor.execute(
            "SELECT count(*) FROM movement_chunk"
            " GROUP BY device_id, window_start, first_offset HAVING count(*) > 1"
        )
        assert cursor.fetchall() == []
        cursor.execute("SELECT count(*) FROM movement_chunk_default")
        (in_default,) = cursor.fetchone()
        assert in_default == 1  # the one of 2096; the year-old one has its week
