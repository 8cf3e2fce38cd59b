"""Seeds the data set of bench/seed.py into a migrated SQLite database (bulk inserts).

The same shapes as the PostgreSQL seed: accounts sharing one precomputed Argon2 hash,
children, bound devices of type LX01 in one batch, stored devlogs; no movement samples.
Rows go in with ``executemany`` in one transaction, generated in key order (the devlogs
device by device), so every index insert appends at its right edge.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from urllib.parse import unquote, urlparse

from seed import PASSWORD, Dataset

from devicehub.security import hash_password


def database_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL."""
    return unquote(urlparse(url).path)


def seed(url: str, roots: int, children: int, devices: int, devlogs: int) -> Dataset:
    password_hash = hash_password(PASSWORD)
    now = "2026-01-01 00:00:00"
    rng = random.Random(7)
    connection = sqlite3.connect(database_path(url))
    try:
        with connection:
            cursor = connection.cursor()
            found = cursor.execute("SELECT id FROM device_type WHERE code = 'LX01'").fetchone()
            if found is None:
                cursor.execute(
                    "INSERT INTO device_type (name, code, description, created_at, updated_at)"
                    " VALUES ('Lux', 'LX01', '', ?, ?)",
                    (now, now),
                )
                found = (cursor.lastrowid,)
            type_id = found[0]
            cursor.execute(
                "INSERT INTO device_batch (device_type_id, batch_number, production_date,"
                " quantity, description, created_at, updated_at)"
                " VALUES (?, 'BENCH0', '2026-01-01', ?, '', ?, ?)",
                (type_id, devices, now, now),
            )
            batch_id = cursor.lastrowid
            cursor.executemany(
                "INSERT INTO account (username, password_hash, phone, first_name, last_name,"
                " is_admin, created_at, updated_at) VALUES (?, ?, ?, '', '', 0, ?, ?)",
                ((f"bench0_{i}", password_hash, f"010{i:08d}", now, now) for i in range(roots)),
            )
            accounts = [
                row[0]
                for row in cursor.execute(
                    "SELECT id FROM account WHERE username LIKE 'bench0\\_%' ESCAPE '\\'"
                    " ORDER BY id"
                )
            ]
            cursor.executemany(
                "INSERT INTO child (root_user_id, first_name, last_name, birthdate, gender,"
                " created_at, updated_at) VALUES (?, ?, 'Kim', '2015-03-01', 'female', ?, ?)",
                ((accounts[i % roots], f"c{i}", now, now) for i in range(children)),
            )
            child_rows = cursor.execute(
                "SELECT child.id, root_user_id FROM child JOIN account"
                " ON account.id = root_user_id WHERE username LIKE 'bench0\\_%' ESCAPE '\\'"
                " ORDER BY child.id"
            ).fetchall()
            cursor.executemany(
                "INSERT INTO device (device_type_id, batch_id, serial_number, device_code,"
                " mac_address, unique_id, is_active, activated_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                (
                    (
                        type_id,
                        batch_id,
                        f"{i:09d}",
                        f"LX01{i:09d}",
                        ":".join(f"{b:02X}" for b in (2, 0, *i.to_bytes(4, "big"))),
                        str(uuid.UUID(int=rng.getrandbits(128))),
                        now,
                        now,
                        now,
                    )
                    for i in range(devices)
                ),
            )
            device_rows = cursor.execute(
                "SELECT id, unique_id FROM device WHERE batch_id = ? ORDER BY id", (batch_id,)
            ).fetchall()
            bound = []
            for i, (device_id, unique_id) in enumerate(device_rows):
                child_id, account_id = child_rows[i % len(child_rows)]
                bound.append((account_id, child_id, device_id, unique_id))
            cursor.executemany(
                "INSERT INTO binding (device_id, account_id, child_id, nickname, is_primary,"
                " bound_at) VALUES (?, ?, ?, '', 0, ?)",
                ((d, a, c, now) for a, c, d, _ in bound),
            )
            per_device = max(1, devlogs // max(1, len(bound)))
            cursor.executemany(
                "INSERT INTO devlog (device_id, child_id, log_file_id, treatment_date,"
                " finish_flag, last_intensity, treatment_time, is_temp, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, 1, 2, 600, 0, ?, ?)",
                ((d, c, n, now, now, now) for _, c, d, _ in bound for n in range(per_device)),
            )
            cursor.execute("ANALYZE")
    finally:
        connection.close()
    return Dataset(accounts, bound, per_device * len(bound), 0)
