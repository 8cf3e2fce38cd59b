"""IMU movement samples: bulk, idempotent storage and time-range reads.

An upload is validated whole, then stored with one set-based statement; a retried batch
is a no-op (``storage/movement_rows.py``). Reads are keyset pages in timestamp order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from devicehub import binding, metrics, validation
from devicehub.errors import InvalidArgument
from devicehub.pagination import decode_cursor, split_page
from devicehub.security import Caller
from devicehub.storage import movement_rows
from devicehub.storage.db import database
from devicehub.v1 import error_pb2 as reasons

log = logging.getLogger(__name__)

MAX_SAMPLES_PER_UPLOAD = 10_000
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
INT32 = range(-(2**31), 2**31)
UPLOADED = "Movement log saved successfully"


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
        movement_rows.insert_samples(device_id, child_id, samples)
    metrics.MOVEMENT_SAMPLES.inc(len(samples))  # committed


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
    validation.positive_id("device_id", device_id)  # 0: left out, which names no device
    if page_size < 0 or start < 0 or end < 0:
        raise InvalidArgument("page_size, start and end must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_cursor("ts", page_token) if page_token else None
    rows = movement_rows.samples_between(device_id, child_id, start, end, after, size + 1)
    return split_page(rows, size, "ts", _timestamp)


def _timestamp(sample: tuple[int, int]) -> int:
    return sample[0]


def maintain_store(retention_days: int | None) -> None:
    """Keeps the store's time partitions: those ahead created, those wholly older than
    ``retention_days`` (None: keep everything) dropped, whole; one process at a time."""
    with database.atomic():
        outcome = movement_rows.maintain_partitions(int(time.time()), retention_days)
    if outcome is None:
        return
    created, dropped = outcome
    if created:
        log.info("movement partitions created: %s", ", ".join(created))
    if dropped:
        log.info("movement partitions dropped past the retention: %s", ", ".join(dropped))
