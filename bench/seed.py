"""Seeds a realistic data set straight into PostgreSQL (bulk paths, not the API).

Accounts share one precomputed Argon2 hash (hashing 10,000 passwords would dominate the
run); accounts, children, devices and bindings are written with COPY, stored devlogs and
movement samples generated inside PostgreSQL (``generate_series``). ``part`` numbers
successive calls, so a data set can grow (the 10x growth measurement) without name
clashes. Returns what the load generators need.
"""

from __future__ import annotations

import io
import random
import time
import uuid
from dataclasses import dataclass

import psycopg2

from devicehub.security import hash_password
from devicehub.storage.movement_chunks import (
    PARTITION_SECONDS,
    WINDOW_SECONDS,
    partition_name,
    week_start,
)

PASSWORD = "bench-password-1"


@dataclass
class Dataset:
    accounts: list[int]
    # (account id, child id, device id, device unique_id), one per bound device
    bound: list[tuple[int, int, int, str]]
    devlogs: int
    movement: int


def _copy(cursor, table: str, columns: tuple[str, ...], rows) -> None:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join("\\N" if v is None else str(v) for v in row) + "\n")
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)


MOVEMENT_BASELINE = "movement_sample_baseline"
"""The row layout the service used before its chunks, with its key and foreign keys: what
the raw COPY baseline writes to, holding the same samples as the service's store."""

_BASELINE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MOVEMENT_BASELINE} (
    device_id INTEGER NOT NULL REFERENCES device (id) ON DELETE RESTRICT,
    ts BIGINT NOT NULL,
    val INTEGER NOT NULL,
    child_id INTEGER NOT NULL REFERENCES child (id) ON DELETE CASCADE,
    PRIMARY KEY (device_id, ts)
)
"""


def movement_start(now: float | None = None) -> int:
    """The first timestamp of every seeded device's samples: two weeks back, a week the
    service keeps a partition for."""
    return week_start(int(time.time() if now is None else now)) - 2 * PARTITION_SECONDS


def _seed_movement(cursor, devices: list[int], per_device: int) -> None:
    """``per_device`` consecutive seconds of samples for each device from movement_start():
    into the service's chunks (one per device and window, built inside PostgreSQL), and the
    same samples as rows into the baseline table."""
    first = movement_start()
    last = first + per_device - 1
    for week in range(week_start(first), last + 1, PARTITION_SECONDS):
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {partition_name(week)} PARTITION OF movement_chunk"
            f" FOR VALUES FROM ({week}) TO ({week + PARTITION_SECONDS})"
        )
    cursor.execute(
        "INSERT INTO movement_chunk (device_id, window_start, first_offset, last_offset,"
        " child_id, sample_count, offsets, vals)"
        " SELECT b.device_id, w.window_start, min(w.off), max(w.off), b.child_id, count(*),"
        "  array_agg(w.off ORDER BY w.off), array_agg(w.val ORDER BY w.off)"
        " FROM binding b CROSS JOIN LATERAL ("
        "  SELECT ts - ts %% %s AS window_start, (ts %% %s)::smallint AS off,"
        "   (ts - %s) %% 100 AS val"
        "  FROM generate_series(%s + 0 * b.device_id, %s) AS ts) AS w"
        " WHERE b.device_id = ANY(%s)"
        " GROUP BY b.device_id, b.child_id, w.window_start",
        (WINDOW_SECONDS, WINDOW_SECONDS, first, first, last, devices),
    )
    cursor.execute(_BASELINE_TABLE)
    # The series refers to the binding row (LATERAL), so rows come in key order.
    cursor.execute(
        f"INSERT INTO {MOVEMENT_BASELINE} (device_id, ts, val, child_id)"
        " SELECT b.device_id, ts, (ts - %s) %% 100, b.child_id"
        " FROM binding b CROSS JOIN LATERAL generate_series(%s + 0 * b.device_id, %s) AS ts"
        " WHERE b.device_id = ANY(%s)",
        (first, first, last, devices),
    )


def seed(
    url: str,
    roots: int,
    children: int,
    devices: int,
    devlogs: int,
    movement: int,
    part: int = 0,
) -> Dataset:
    password_hash = hash_password(PASSWORD)
    now = "2026-01-01 00:00:00"
    rng = random.Random(7 + part)
    first_device = part * 10_000_000  # serial numbers and MACs of this part
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        # Bulk load: the rows are consistent by construction, so skip the per-row foreign
        # key triggers (10x faster for 100 million samples). Indexes are maintained.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SELECT id FROM device_type WHERE code = 'LX01'")
        found = cursor.fetchone()
        if found is None:
            cursor.execute(
                "INSERT INTO device_type (name, code, description, created_at, updated_at) "
                "VALUES ('Lux', 'LX01', '', %s, %s) RETURNING id",
                (now, now),
            )
            found = cursor.fetchone()
        type_id = found[0]
        cursor.execute(
            "INSERT INTO device_batch (device_type_id, batch_number, production_date, quantity,"
            " description, created_at, updated_at) VALUES (%s, %s, '2026-01-01', %s, '',"
            " %s, %s) RETURNING id",
            (type_id, f"BENCH{part}", devices, now, now),
        )
        batch_id = cursor.fetchone()[0]
        cursor.execute("SELECT coalesce(max(id), 0) FROM child")
        children_before = cursor.fetchone()[0]
        _copy(
            cursor,
            "account",
            (
                "username",
                "password_hash",
                "phone",
                "first_name",
                "last_name",
                "is_admin",
                "created_at",
                "updated_at",
            ),
            (
                (f"bench{part}_{i}", password_hash, f"010{i:08d}", "", "", "f", now, now)
                for i in range(roots)
            ),
        )
        cursor.execute(
            "SELECT id FROM account WHERE username LIKE %s ORDER BY id", (f"bench{part}\\_%",)
        )
        accounts = [row[0] for row in cursor.fetchall()]
        _copy(
            cursor,
            "child",
            (
                "root_user_id",
                "first_name",
                "last_name",
                "birthdate",
                "gender",
                "created_at",
                "updated_at",
            ),
            (
                (accounts[i % roots], f"c{i}", "Kim", "2015-03-01", "female", now, now)
                for i in range(children)
            ),
        )
        cursor.execute(
            "SELECT id, root_user_id FROM child WHERE id > %s ORDER BY id", (children_before,)
        )
        child_rows = cursor.fetchall()
        unique_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(devices)]
        _copy(
            cursor,
            "device",
            (
                "device_type_id",
                "batch_id",
                "serial_number",
                "device_code",
                "mac_address",
                "unique_id",
                "is_active",
                "activated_at",
                "created_at",
                "updated_at",
            ),
            (
                (
                    type_id,
                    batch_id,
                    f"{first_device + i:09d}",
                    f"LX01{first_device + i:09d}",
                    ":".join(f"{b:02X}" for b in (2, 0, *(first_device + i).to_bytes(4, "big"))),
                    unique_ids[i],
                    "t",
                    now,
                    now,
                    now,
                )
                for i in range(devices)
            ),
        )
        cursor.execute(
            "SELECT id, unique_id FROM device WHERE batch_id = %s ORDER BY id", (batch_id,)
        )
        device_rows = cursor.fetchall()
        bound = []
        for i, (device_id, unique_id) in enumerate(device_rows):
            child_id, account_id = child_rows[i % len(child_rows)]
            bound.append((account_id, child_id, device_id, unique_id))
        _copy(
            cursor,
            "binding",
            ("device_id", "account_id", "child_id", "nickname", "is_primary", "bound_at"),
            ((d, a, c, "", "f", now) for a, c, d, _ in bound),
        )
        seeded_devices = [d for _, _, d, _ in bound]
        # The series refers to the binding row (LATERAL), so rows come device by device, in
        # key order: index inserts append at the right edge. (With the series as the outer
        # loop, each row lands on a different index page: seeding 10x took over 10 minutes, not 2.)
        per_device = max(1, devlogs // max(1, len(bound)))
        cursor.execute(
            "INSERT INTO devlog (device_id, child_id, log_file_id, treatment_date, finish_flag,"
            " last_intensity, treatment_time, is_temp, created_at, updated_at)"
            " SELECT b.device_id, b.child_id, n, %s, 1, 2, 600, false, %s, %s"
            " FROM binding b CROSS JOIN LATERAL generate_series(0, %s - 1 + 0 * b.device_id) AS n"
            " WHERE b.device_id = ANY(%s)",
            (now, now, now, per_device, seeded_devices),
        )
        samples_per_device = max(1, movement // max(1, len(bound)))
        _seed_movement(cursor, seeded_devices, samples_per_device)
        cursor.execute("ANALYZE")
    return Dataset(accounts, bound, per_device * len(bound), samples_per_device * len(bound))
