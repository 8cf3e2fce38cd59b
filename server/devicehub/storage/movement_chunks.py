"""The PostgreSQL movement store: samples packed in chunks, in a table partitioned by time.

A chunk (``movement_chunk``) holds samples of one device and one child within one hour
(``WINDOW_SECONDS``): the window's start, and two arrays in timestamp order, the samples'
offsets in the window (``int2``) and their values (``int4``): 6 bytes a sample, where a
row of its own took 84 with its header and its key's index entry. An upload adds one chunk
per window it touches, holding only the samples whose ``(device, timestamp)`` is not
stored yet, so chunks of one window never share a timestamp; they are not merged, because
rewriting a window's chunk on every upload would write its samples again each time.

Uploads of one device are serialised by an advisory lock (the transaction's), taken in a
statement of its own before the upload's, so that under READ COMMITTED the upload's
statement sees every chunk that a concurrent upload of the same device committed.

The table is partitioned by ``window_start`` into weeks (``PARTITION_SECONDS``), created
ahead by :func:`maintain_partitions` (worker 0 runs it periodically). Samples of a week
that has no partition land in the default partition; the maintenance moves them into their
week's partition when it creates it (for timestamps between ``PLAUSIBLE_FROM`` and a year
ahead: timestamps beyond those, such as milliseconds sent for seconds, stay in the
default partition). Retention drops whole partitions, never rows.

``movement_sample`` is a view of the chunks as rows (device_id, ts, val, child_id), for
operators' ad-hoc SQL; the service itself reads the chunks.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from devicehub.storage.db import array_literal, execute

WINDOW_SECONDS = 3600
"""A chunk's time window: offsets in it fit ``int2`` (below 32,768)."""
PARTITION_SECONDS = 7 * 86400
"""A partition's span, a whole number of windows, aligned to the Unix epoch."""
PLAUSIBLE_FROM = 946684800
"""2000-01-01: earlier timestamps (and those over a year ahead) stay in the default partition."""
AHEAD_WEEKS = 2
BEHIND_WEEKS = 4
"""The maintenance keeps partitions from this many weeks back to AHEAD_WEEKS ahead."""
MOVEMENT_LOCK_CLASS = 0x6D6F76
"""The first key of the per-device advisory locks of uploads ("mov")."""
MAINTENANCE_LOCK = (MOVEMENT_LOCK_CLASS, -1)
"""The advisory lock one maintainer at a time holds (device ids are positive)."""
ALL_TIME = 2**63 - 1

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS movement_chunk (
    device_id INTEGER NOT NULL REFERENCES device (id) ON DELETE RESTRICT,
    window_start BIGINT NOT NULL CHECK (mod(window_start, {WINDOW_SECONDS}) = 0),
    first_offset SMALLINT NOT NULL,
    last_offset SMALLINT NOT NULL,
    child_id INTEGER NOT NULL REFERENCES child (id) ON DELETE CASCADE,
    sample_count SMALLINT NOT NULL,
    offsets SMALLINT[] NOT NULL,
    vals INTEGER[] NOT NULL,
    PRIMARY KEY (device_id, window_start, first_offset)
) PARTITION BY RANGE (window_start);
CREATE TABLE IF NOT EXISTS movement_chunk_default PARTITION OF movement_chunk DEFAULT;
CREATE INDEX IF NOT EXISTS movement_chunk_child_id ON movement_chunk (child_id)
"""
"""The chunk table (the child index serves the cascade when a child is deleted)."""

SAMPLE_VIEW = """
CREATE VIEW movement_sample AS
SELECT c.device_id, c.window_start + s.off AS ts, s.val, c.child_id
FROM movement_chunk AS c CROSS JOIN LATERAL unnest(c.offsets, c.vals) AS s (off, val)
"""

_LOCK_DEVICE = "SELECT pg_advisory_xact_lock(%s, %s)"

# One statement: the upload's samples (the first of a repeated timestamp wins, as with a
# row per sample), less those stored in chunks whose span overlaps the upload's, grouped
# into a chunk per window.
_INSERT_CHUNKS = f"""
WITH incoming AS (
    SELECT DISTINCT ON (s.ts) s.ts, s.val
    FROM unnest(%s::bigint[], %s::integer[]) WITH ORDINALITY AS s (ts, val, n)
    ORDER BY s.ts, s.n
), stored AS (
    SELECT c.window_start + o.off AS ts
    FROM movement_chunk AS c CROSS JOIN LATERAL unnest(c.offsets) AS o (off)
    WHERE c.device_id = %s::integer
      AND c.window_start BETWEEN %s::bigint AND %s::bigint
      AND c.window_start + c.last_offset >= %s::bigint
      AND c.window_start + c.first_offset <= %s::bigint
), fresh AS (
    SELECT i.ts - i.ts %% {WINDOW_SECONDS} AS window_start,
           (i.ts %% {WINDOW_SECONDS})::smallint AS off, i.val
    FROM incoming AS i
    WHERE NOT EXISTS (SELECT 1 FROM stored WHERE stored.ts = i.ts)
)
INSERT INTO movement_chunk
    (device_id, window_start, first_offset, last_offset, child_id, sample_count, offsets, vals)
SELECT %s::integer, window_start, min(off), max(off), %s::integer, count(*),
       array_agg(off ORDER BY off), array_agg(val ORDER BY off)
FROM fresh
GROUP BY window_start
"""

_READ_CHUNKS = """
SELECT window_start, offsets, vals FROM movement_chunk
WHERE device_id = %s AND child_id = %s
  AND window_start >= %s AND window_start < %s
  AND window_start + last_offset >= %s
  AND (window_start, first_offset) > (%s, %s)
ORDER BY window_start, first_offset
LIMIT %s
"""
_CHUNKS_PER_READ = 32


def _window(ts: int) -> int:
    return ts - ts % WINDOW_SECONDS


def insert_samples(device_id: int, child_id: int, samples: Sequence[tuple[int, int]]) -> None:
    """Stores ``(ts, val)`` samples (``ts >= 0``), skipping those whose ``(device, ts)`` is
    stored; in the caller's transaction."""
    timestamps = [ts for ts, _ in samples]
    first_ts, last_ts = min(timestamps), max(timestamps)
    execute(_LOCK_DEVICE, (MOVEMENT_LOCK_CLASS, device_id), prepare_as="movement_lock")
    window_span = (_window(first_ts), _window(last_ts))
    execute(
        _INSERT_CHUNKS,
        (
            array_literal(timestamps),
            array_literal([val for _, val in samples]),
            device_id,
            *window_span,
            first_ts,
            last_ts,
            device_id,
            child_id,
        ),
        prepare_as="movement_insert",
    )


def samples_between(
    device_id: int, child_id: int, start: int, end: int, after: int | None, limit: int
) -> list[tuple[int, int]]:
    """Up to ``limit`` samples ``start <= ts < end`` (``end`` 0: no bound), ``ts > after``,
    of the device recorded for the child, in ``ts`` order.

    Chunks come in window order, a few at a time; a window's samples are sorted once all
    its chunks are in (they interleave when uploads overlapped), and reading stops at the
    first window past the ``limit``-th sample.
    """
    low = start if after is None else max(start, after + 1)
    high = end or ALL_TIME
    found: list[tuple[int, int]] = []
    window: list[tuple[int, int]] = []
    window_start = -1
    cursor = (-1, -1)
    while True:
        chunks = execute(
            _READ_CHUNKS,
            (
                device_id,
                child_id,
                _window(low),
                high,
                low,
                *cursor,
                _CHUNKS_PER_READ,
            ),
        ).fetchall()
        for chunk_start, offsets, vals in chunks:
            if chunk_start != window_start:
                found += sorted(window)
                window = []
                if len(found) >= limit:
                    return found[:limit]
                window_start = chunk_start
            window += [
                (chunk_start + offset, val)
                for offset, val in zip(offsets, vals, strict=True)
                if low <= chunk_start + offset < high
            ]
        if len(chunks) < _CHUNKS_PER_READ:
            found += sorted(window)
            return found[:limit]
        last_start, last_offsets, _ = chunks[-1]
        cursor = (last_start, last_offsets[0])


def device_has_samples(device_id: int) -> bool:
    return bool(
        execute(
            "SELECT 1 FROM movement_chunk WHERE device_id = %s LIMIT 1", (device_id,)
        ).fetchall()
    )


# --- partitions ----------------------------------------------------------------------

_PARTITIONS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'movement_chunk'::regclass
"""
_BOUND = re.compile(r"FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


def week_start(ts: int) -> int:
    return ts - ts % PARTITION_SECONDS


def partition_name(start: int) -> str:
    day = dt.datetime.fromtimestamp(start, dt.UTC)
    return f"movement_chunk_{day:%Y%m%d}"


def partitions() -> dict[int, str]:
    """The weekly partitions by their start (the default partition left out)."""
    found = {}
    for name, bound in execute(_PARTITIONS).fetchall():
        match = _BOUND.fullmatch(bound)
        if match:
            found[int(match[1])] = name
    return found


def create_partition(start: int) -> None:
    """Creates the week's partition, moving the week's chunks out of the default
    partition (attaching checks that none is left there). In the caller's transaction."""
    end = start + PARTITION_SECONDS
    name = partition_name(start)
    execute(f"CREATE TABLE {name} (LIKE movement_chunk INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    execute(
        f"WITH moved AS (DELETE FROM movement_chunk_default"
        f" WHERE window_start >= %s AND window_start < %s RETURNING *)"
        f" INSERT INTO {name} SELECT * FROM moved",
        (start, end),
    )
    execute(
        f"ALTER TABLE movement_chunk ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({end})"
    )


def weeks_in_default() -> list[int]:
    """The weeks, within the plausible span, that have chunks in the default partition."""
    rows = execute(
        f"SELECT DISTINCT window_start - window_start %% {PARTITION_SECONDS}"
        " FROM movement_chunk_default WHERE window_start >= %s",
        (PLAUSIBLE_FROM,),
    ).fetchall()
    return [week for (week,) in rows]


def take_maintenance_lock() -> bool:
    """The advisory lock of one maintainer across all processes and hosts (this
    transaction's); False when another maintainer holds it."""
    (taken,) = execute("SELECT pg_try_advisory_xact_lock(%s, %s)", MAINTENANCE_LOCK).fetchone()
    return bool(taken)


def maintain_partitions(now: int, retention_days: int | None) -> tuple[list[str], list[str]]:
    """Creates the partitions from BEHIND_WEEKS back to AHEAD_WEEKS ahead of ``now`` and
    those of weeks found in the default partition; drops those wholly past the retention
    (``None``: keep everything). In the caller's transaction, which must hold the
    maintenance lock. Returns the names created and dropped."""
    # DDL waits for the table's readers; a queued lock would hold up every later upload.
    execute("SET LOCAL lock_timeout = '10s'")
    current = week_start(now)
    horizon = current + 53 * PARTITION_SECONDS
    oldest_kept = None if retention_days is None else now - retention_days * 86400
    around = (current + k * PARTITION_SECONDS for k in range(-BEHIND_WEEKS, AHEAD_WEEKS + 1))
    wanted = {
        start for start in around if oldest_kept is None or start + PARTITION_SECONDS > oldest_kept
    }
    # A week past the retention too: its partition is dropped below, its chunks with it.
    wanted |= {week for week in weeks_in_default() if week < horizon}
    existing = partitions()
    created: list[str] = []
    for start in sorted(wanted - set(existing)):
        create_partition(start)
        existing[start] = partition_name(start)
        created.append(existing[start])
    dropped: list[str] = []
    if oldest_kept is not None:
        for start, name in sorted(existing.items()):
            if start + PARTITION_SECONDS <= oldest_kept:
                execute(f"DROP TABLE {name}")
                dropped.append(name)
    return created, dropped
