"""The devlog write model: the rows an upload reads and the statements that write them.

An upload reads two facts once (the children's pending temporary records, and which of
its ``(device_id, log_file_id)`` pairs are stored), then writes with a fixed number of
statements: one per temporary record created or record updated, one multi-row INSERT for
every new completed record, one UPDATE per device whose ``last_log_file_id`` moves.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devicehub.storage.db import (
    array_literal,
    execute,
    execute_many,
    is_postgres,
    named_rows,
)
from devicehub.storage.models import Device, Devlog


@dataclass(frozen=True)
class StoredDevlog:
    """What the upload rules need to know of a stored devlog row."""

    id: int
    child_id: int
    device_id: int
    log_file_id: int | None
    is_temp: bool


@dataclass(frozen=True)
class DevlogValues:
    """The columns an upload entry writes to its devlog row."""

    device_id: int
    log_file_id: int | None
    treatment_date: dt.datetime
    finish_flag: int | None
    last_intensity: int
    treatment_time: int
    movement: int | None
    log_data: str | None


def pending_temporaries(child_ids: Iterable[int]) -> list[StoredDevlog]:
    """The temporary records of the children (at most one each)."""
    is_temp = Devlog.is_temp == True  # noqa: E712 (a SQL expression, not a truth test)
    rows = Devlog.select(Devlog.id, Devlog.child, Devlog.device, Devlog.log_file_id).where(
        Devlog.child.in_(list(child_ids)) & is_temp
    )
    return [
        StoredDevlog(row.id, row.child_id, row.device_id, row.log_file_id, True) for row in rows
    ]


# PostgreSQL joins the pairs to the unique index, one probe per pair: with ``device_id =
# %s AND log_file_id IN (...)`` the planner scanned every record of the device and
# filtered them, a cost that grew with the device's history.
_STORED_AMONG_PAIRS = (
    "SELECT d.id, d.child_id, d.device_id, d.log_file_id, d.is_temp "
    "FROM unnest(%s::integer[], %s::integer[]) AS f (device_id, log_file_id) "
    "JOIN devlog d ON d.device_id = f.device_id AND d.log_file_id = f.log_file_id"
)


def stored_among(files: set[tuple[int, int]]) -> list[StoredDevlog]:
    """The stored records among the ``(device_id, log_file_id)`` pairs."""
    if not files:
        return []
    if is_postgres():
        pairs = (array_literal([d for d, _ in files]), array_literal([f for _, f in files]))
        cursor = execute(_STORED_AMONG_PAIRS, pairs, prepare_as="devlog_stored_files")
        return [StoredDevlog(**row) for row in named_rows(cursor)]
    by_device: dict[int, set[int]] = defaultdict(set)
    for device_id, file_id in files:
        by_device[device_id].add(file_id)
    found = []
    for device_id, file_ids in by_device.items():
        query = Devlog.select(
            Devlog.id, Devlog.child, Devlog.device, Devlog.log_file_id, Devlog.is_temp
        ).where((Devlog.device == device_id) & Devlog.log_file_id.in_(file_ids))
        found += [
            StoredDevlog(r.id, r.child_id, r.device_id, r.log_file_id, r.is_temp) for r in query
        ]
    return found


def _fields(values: DevlogValues, now: dt.datetime) -> dict[str, object]:
    return {
        "device": values.device_id,
        "log_file_id": values.log_file_id,
        "treatment_date": values.treatment_date,
        "finish_flag": values.finish_flag,
        "last_intensity": values.last_intensity,
        "treatment_time": values.treatment_time,
        "movement": values.movement,
        "log_data": values.log_data,
        "updated_at": now,
    }


def create_temporary(child_id: int, values: DevlogValues, now: dt.datetime) -> int:
    """Creates the child's temporary record; returns its id."""
    return Devlog.insert(
        child=child_id, is_temp=True, created_at=now, **_fields(values, now)
    ).execute()


def update(devlog_id: int, values: DevlogValues, now: dt.datetime, *, complete: bool) -> None:
    """Overwrites a record with an entry's values; ``complete`` makes it a completed one."""
    fields = _fields(values, now)
    if complete:
        fields["is_temp"] = False
    Devlog.update(**fields).where(Devlog.id == devlog_id).execute()


# New completed records, one statement per upload. PostgreSQL unnests one array per
# column, passed as array literals (psycopg2 would adapt each of 900 values one by one,
# a millisecond per request); SQLite runs one prepared executemany.
_INSERTED_COLUMNS = (  # (column, SQL type), in the order of the tuples _insert_row builds
    ("device_id", "integer"),
    ("child_id", "integer"),
    ("log_file_id", "integer"),
    ("treatment_date", "timestamp"),
    ("finish_flag", "smallint"),
    ("last_intensity", "integer"),
    ("treatment_time", "integer"),
    ("movement", "integer"),
    ("log_data", "text"),
)
_INSERT_INTO = (
    f"INSERT INTO devlog ({', '.join(column for column, _ in _INSERTED_COLUMNS)},"
    " is_temp, created_at, updated_at) "
)
_INSERT_UNNEST = (
    _INSERT_INTO
    + "SELECT *, false, %s::timestamp, %s::timestamp FROM unnest("
    + ", ".join(f"%s::{kind}[]" for _, kind in _INSERTED_COLUMNS)
    + ")"
)
_INSERT_ONE = _INSERT_INTO + f"VALUES ({', '.join('%s' for _ in _INSERTED_COLUMNS)}, 0, %s, %s)"


def _insert_row(child_id: int, values: DevlogValues) -> tuple[object, ...]:
    return (
        values.device_id,
        child_id,
        values.log_file_id,
        values.treatment_date,
        values.finish_flag,
        values.last_intensity,
        values.treatment_time,
        values.movement,
        values.log_data,
    )


def insert_completed(records: Sequence[tuple[int, DevlogValues]], now: dt.datetime) -> None:
    """Inserts new completed records, ``(child_id, values)`` each, created now, in one
    statement."""
    rows = [_insert_row(child_id, values) for child_id, values in records]
    if is_postgres():
        columns = [
            list(column) if kind == "text" else array_literal(column)
            for column, (_, kind) in zip(zip(*rows, strict=True), _INSERTED_COLUMNS, strict=True)
        ]
        execute(_INSERT_UNNEST, [now, now, *columns], prepare_as="devlog_insert")
    else:
        execute_many(_INSERT_ONE, [(*row, now, now) for row in rows])


def raise_last_log_file_ids(highest: dict[int, int]) -> None:
    """Moves each device's ``last_log_file_id`` up to ``highest[device_id]`` (never down)."""
    for device_id, log_file_id in highest.items():
        Device.update(last_log_file_id=log_file_id).where(
            (Device.id == device_id) & (Device.last_log_file_id < log_file_id)
        ).execute()
