"""The movement write and read model: IMU samples stored in bulk, read by time range.

An upload is one set-based statement, never a statement per sample: on PostgreSQL an
``INSERT ... SELECT FROM unnest(arrays)``, on SQLite one prepared ``executemany``. The
key ``(device_id, ts)`` makes a retried batch a no-op (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from collections.abc import Sequence

from devicehub.storage.db import array_literal, execute, execute_many, is_postgres
from devicehub.storage.models import MovementSample

_INSERT_UNNEST = (
    "INSERT INTO movement_sample (device_id, ts, val, child_id) "
    "SELECT %s, ts, val, %s FROM unnest(%s::bigint[], %s::integer[]) AS s (ts, val) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_ONE = (
    "INSERT INTO movement_sample (device_id, ts, val, child_id) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT DO NOTHING"
)


def insert_samples(device_id: int, child_id: int, samples: Sequence[tuple[int, int]]) -> None:
    """Stores ``(ts, val)`` samples; those whose ``(device_id, ts)`` is stored are skipped."""
    if is_postgres():
        timestamps = array_literal([ts for ts, _ in samples])
        values = array_literal([val for _, val in samples])
        execute(_INSERT_UNNEST, (device_id, child_id, timestamps, values))
    else:
        execute_many(_INSERT_ONE, [(device_id, ts, val, child_id) for ts, val in samples])


def samples_between(
    device_id: int, child_id: int, start: int, end: int, after: int | None, limit: int
) -> list[tuple[int, int]]:
    """Up to ``limit`` ``(ts, val)`` samples of the device recorded for the child, in ``ts``
    order, with ``start <= ts < end`` (no upper bound for ``end`` 0) and ``ts > after``."""
    query = MovementSample.select(MovementSample.ts, MovementSample.val).where(
        (MovementSample.device == device_id)
        & (MovementSample.child == child_id)
        & (MovementSample.ts >= start)
    )
    if end:
        query = query.where(MovementSample.ts < end)
    if after is not None:
        query = query.where(MovementSample.ts > after)
    return [(sample.ts, sample.val) for sample in query.order_by(MovementSample.ts).limit(limit)]
