"""IMU movement samples: bulk, idempotent storage and time-range reads.

An upload is one set-based statement, never a statement per sample: on PostgreSQL an
``INSERT ... SELECT FROM unnest(arrays)``, on SQLite one prepared ``executemany``. The
key ``(device_id, ts)`` makes a retried batch a no-op (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from collections.abc import Sequence

from devicehub import binding
from devicehub.errors import InvalidArgument
from devicehub.pagination import decode_cursor, encode_cursor
from devicehub.security import Caller
from devicehub.storage.db import array_literal, database, is_postgres
from devicehub.storage.models import MovementSample
from devicehub.v1 import error_pb2 as reasons

MAX_SAMPLES_PER_UPLOAD = 10_000
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
INT32 = range(-(2**31), 2**31)
UPLOADED = "Movement log saved successfully"

_INSERT_POSTGRES = (
    "INSERT INTO movement_sample (device_id, ts, val, child_id) "
    "SELECT %s, ts, val, %s FROM unnest(%s::bigint[], %s::integer[]) AS s (ts, val) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_SQLITE = (
    "INSERT INTO movement_sample (device_id, ts, val, child_id) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)


def _validate(samples: Sequence[tuple[int, int]]) -> None:
    if not samples:
        raise InvalidArgument("movement_data must contain at least one sample")
    if len(samples) > MAX_SAMPLES_PER_UPLOAD:
        raise InvalidArgument(
            f"movement_data may contain at most {MAX_SAMPLES_PER_UPLOAD} samples",
            reasons.ERROR_REASON_BATCH_TOO_LARGE,
        )
    for timestamp, val in samples:
        if timestamp < 0:
            raise InvalidArgument("movement_data timestamps must not be negative")
        if val not in INT32:
            raise InvalidArgument("movement_data values must be 32-bit integers")


def upload_movement(
    caller: Caller, child_id: int, device_id: int, samples: Sequence[tuple[int, int]]
) -> None:
    """Stores ``(timestamp, val)`` samples of a device bound to the caller's child."""
    _validate(samples)
    with database.atomic():
        binding.own_child(caller, child_id, missing_is_404=True)
        binding.bound_to_child(device_id, child_id)
        if is_postgres():
            database.execute_sql(
                _INSERT_POSTGRES,
                (
                    device_id,
                    child_id,
                    array_literal([ts for ts, _ in samples]),
                    array_literal([val for _, val in samples]),
                ),
            )
        else:
            cursor = database.cursor()
            cursor.executemany(
                _INSERT_SQLITE, [(device_id, ts, val, child_id) for ts, val in samples]
            )


def list_samples(
    caller: Caller,
    child_id: int,
    device_id: int,
    start: int,
    end: int,
    page_size: int = 0,
    page_token: str = "",
) -> tuple[list[tuple[int, int]], str]:
    """Samples ``start <= ts < end`` (no upper bound for ``end`` 0) recorded while the
    device was used by the caller's child; returns ``(samples, next_page_token)``."""
    binding.own_child(caller, child_id, missing_is_404=True)
    if page_size < 0 or start < 0 or end < 0:
        raise InvalidArgument("page_size, start and end must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    query = MovementSample.select(MovementSample.ts, MovementSample.val).where(
        (MovementSample.device == device_id)
        & (MovementSample.child == child_id)
        & (MovementSample.ts >= start)
    )
    if end:
        query = query.where(MovementSample.ts < end)
    if page_token:
        query = query.where(MovementSample.ts > decode_cursor("ts", page_token))
    rows: list[tuple[int, int]] = [
        (sample.ts, sample.val) for sample in query.order_by(MovementSample.ts).limit(size + 1)
    ]
    if len(rows) > size:
        return rows[:size], encode_cursor("ts", rows[size - 1][0])
    return rows, ""
