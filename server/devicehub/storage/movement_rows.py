"""The movement write and read model: IMU samples stored in bulk, read by time range.

An upload is a fixed number of set-based statements, never a statement per sample. On
PostgreSQL samples are packed in chunks per device and hour, in a table partitioned by
week (``storage/movement_chunks.py``). On SQLite, the embedded default, a sample is a row
keyed by ``(device_id, ts)``, stored with one prepared ``executemany``. Both skip a sample
whose ``(device_id, ts)`` is stored, so a retried or overlapping upload never duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

from devicehub.storage import movement_chunks
from devicehub.storage.db import execute, execute_many, is_postgres

_INSERT_ONE = (
    "INSERT INTO movement_sample (device_id, ts, val, child_id) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT DO NOTHING"
)
_READ = (
    "SELECT ts, val FROM movement_sample"
    " WHERE device_id = %s AND child_id = %s AND ts >= %s AND ts < %s AND ts > %s"
    " ORDER BY ts LIMIT %s"
)


def insert_samples(device_id: int, child_id: int, samples: Sequence[tuple[int, int]]) -> None:
    """Stores ``(ts, val)`` samples (``ts >= 0``, at least one); those whose
    ``(device_id, ts)`` is stored are skipped, as are repeats of a timestamp in ``samples``
    after its first."""
    if is_postgres():
        movement_chunks.insert_samples(device_id, child_id, samples)
    else:
        execute_many(_INSERT_ONE, [(device_id, ts, val, child_id) for ts, val in samples])


def samples_between(
    device_id: int, child_id: int, start: int, end: int, after: int | None, limit: int
) -> list[tuple[int, int]]:
    """Up to ``limit`` ``(ts, val)`` samples of the device recorded for the child, in ``ts``
    order, with ``start <= ts < end`` (no upper bound for ``end`` 0) and ``ts > after``."""
    if is_postgres():
        return movement_chunks.samples_between(device_id, child_id, start, end, after, limit)
    high = end or movement_chunks.ALL_TIME
    low_exclusive = -1 if after is None else after
    rows = execute(_READ, (device_id, child_id, start, high, low_exclusive, limit)).fetchall()
    return [(ts, val) for ts, val in rows]


def device_has_samples(device_id: int) -> bool:
    """Whether any sample of the device is stored (a device with samples is kept)."""
    if is_postgres():
        return movement_chunks.device_has_samples(device_id)
    return bool(
        execute(
            "SELECT 1 FROM movement_sample WHERE device_id = %s LIMIT 1", (device_id,)
        ).fetchall()
    )


def maintain_partitions(now: int, retention_days: int | None) -> tuple[list[str], list[str]] | None:
    """PostgreSQL: creates the partitions ahead and drops those past the retention (in the
    caller's transaction); ``None`` if another process is at it. SQLite: nothing to do."""
    if not is_postgres():
        return [], []
    if not movement_chunks.take_maintenance_lock():
        return None
    return movement_chunks.maintain_partitions(now, retention_days)
