"""Seeds a realistic data set straight into PostgreSQL (bulk paths, not the API).

Accounts share one precomputed Argon2 hash (hashing 10,000 passwords would dominate the
run); everything else is written with COPY. Returns what the load generators need.
"""

from __future__ import annotations

import io
import random
import uuid
from dataclasses import dataclass

import psycopg2

from devicehub.security import hash_password

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


def seed(url: str, roots: int, children: int, devices: int, devlogs: int, movement: int) -> Dataset:
    password_hash = hash_password(PASSWORD)
    now = "2026-01-01 00:00:00"
    rng = random.Random(7)
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO device_type (name, code, description, created_at, updated_at) "
            "VALUES ('Lux', 'LX01', '', %s, %s) RETURNING id",
            (now, now),
        )
        type_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO device_batch (device_type_id, batch_number, production_date, quantity,"
            " description, created_at, updated_at) VALUES (%s, 'BENCH1', '2026-01-01', %s, '',"
            " %s, %s) RETURNING id",
            (type_id, devices, now, now),
        )
        batch_id = cursor.fetchone()[0]
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
                (f"bench{i}", password_hash, f"010{i:08d}", "", "", "f", now, now)
                for i in range(roots)
            ),
        )
        cursor.execute("SELECT id FROM account WHERE username LIKE 'bench%%' ORDER BY id")
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
        cursor.execute("SELECT id, root_user_id FROM child ORDER BY id")
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
                    f"{i:07d}",
                    f"LX01{i:07d}",
                    ":".join(f"{b:02X}" for b in (2, 0, *i.to_bytes(4, "big"))),
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
        per_device = max(1, devlogs // max(1, len(bound)))
        _copy(
            cursor,
            "devlog",
            (
                "device_id",
                "child_id",
                "log_file_id",
                "treatment_date",
                "finish_flag",
                "last_intensity",
                "treatment_time",
                "is_temp",
                "created_at",
                "updated_at",
            ),
            (
                (d, c, n, now, 1, 2, 600, "f", now, now)
                for a, c, d, _ in bound
                for n in range(per_device)
            ),
        )
        samples_per_device = max(1, movement // max(1, len(bound)))
        _copy(
            cursor,
            "movement_sample",
            ("device_id", "ts", "val", "child_id"),
            (
                (d, 1_700_000_000 + t, t % 100, c)
                for a, c, d, _ in bound
                for t in range(samples_per_device)
            ),
        )
        cursor.execute("ANALYZE")
    return Dataset(accounts, bound, per_device * len(bound), samples_per_device * len(bound))
