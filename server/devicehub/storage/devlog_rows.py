"""The devlog write model: the rows an upload reads and the statements that write them.

An upload runs a fixed number of statements: one checks the children and devices and
locks the children's rows, one reads the two facts the plan needs (the children's pending
temporary records, and which of its ``(device_id, log_file_id)`` pairs are stored), then
one per temporary record created or record updated, and one that inserts every new
completed record and moves the devices' ``last_log_file_id``. On PostgreSQL each runs as
a prepared statement, its many values passed as one array per column.

The facts are read by a statement of their own, after the lock: READ COMMITTED gives each
statement a snapshot taken as it starts, so one that waited for a lock would not see what
the upload that held it wrote.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devicehub.storage.db import execute, execute_many, is_postgres, named_rows
from devicehub.storage.models import Devlog


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


@dataclass(frozen=True)
class DeviceBinding:
    """A device an upload names: its ``unique_id`` and the child it is bound to."""

    unique_id: str
    bound_child_id: int | None


def _placeholders(count: int) -> str:
    return ", ".join("%s" for _ in range(count))


def _integers(values: Sequence[int | None]) -> str:
    """A PostgreSQL array literal of integers (``{1,NULL}``): ``db.array_literal`` for a
    column known to hold only integers, without its test of each value's type (a tenth of
    the cost of a 100-record upload's insert)."""
    if None in values:
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    return "{" + ",".join(map(str, values)) + "}"


# The children that are the caller's, locked in id order (two uploads never wait on each
# other), counted beside the devices and their bindings.
_AUTHORIZE_AND_LOCK = (
    "WITH own AS MATERIALIZED ("
    " SELECT id FROM child WHERE id = ANY(%s::integer[]) AND root_user_id = %s"
    " ORDER BY id FOR UPDATE) "
    "SELECT d.id AS device_id, d.unique_id, b.child_id AS bound_child_id,"
    " (SELECT count(*) FROM own) AS own_children "
    "FROM device d LEFT JOIN binding b ON b.device_id = d.id "
    "WHERE d.id = ANY(%s::integer[])"
)


def _authorize_sqlite(children: int, devices: int) -> str:
    # No lock: SQLite's transactions begin by taking the database's one write lock.
    return (
        "SELECT d.id AS device_id, d.unique_id, b.child_id AS bound_child_id,"
        f" (SELECT count(*) FROM child WHERE id IN ({_placeholders(children)})"
        " AND root_user_id = %s) AS own_children "
        "FROM device d LEFT JOIN binding b ON b.device_id = d.id "
        f"WHERE d.id IN ({_placeholders(devices)})"
    )


def authorize_and_lock(
    account_id: int, child_ids: Sequence[int], device_ids: Iterable[int]
) -> dict[int, DeviceBinding] | None:
    """Locks those of the children that are the account's (in id order) and returns the
    devices among ``device_ids`` by id; None if a child is not the account's or does not
    exist (or no device does, which leaves the children unknown)."""
    devices = list(device_ids)
    if is_postgres():
        params = (_integers(child_ids), account_id, _integers(devices))
        cursor = execute(_AUTHORIZE_AND_LOCK, params, prepare_as="devlog_authorize")
    else:
        cursor = execute(
            _authorize_sqlite(len(child_ids), len(devices)), (*child_ids, account_id, *devices)
        )
    rows = named_rows(cursor)
    if not rows or rows[0]["own_children"] != len(child_ids):
        return None
    return {
        row["device_id"]: DeviceBinding(row["unique_id"], row["bound_child_id"]) for row in rows
    }


# Both facts in one statement. PostgreSQL joins the pairs to the unique index, one probe
# per pair: with ``device_id = %s AND log_file_id IN (...)`` the planner scanned every
# record of the device and filtered them, a cost that grew with the device's history.
_STORED_FACTS = (
    "SELECT d.id, d.child_id, d.device_id, d.log_file_id, d.is_temp, true AS pending "
    "FROM devlog d WHERE d.child_id = ANY(%s::integer[]) AND d.is_temp "
    "UNION ALL "
    "SELECT d.id, d.child_id, d.device_id, d.log_file_id, d.is_temp, false "
    "FROM unnest(%s::integer[], %s::integer[]) AS f (device_id, log_file_id) "
    "JOIN devlog d ON d.device_id = f.device_id AND d.log_file_id = f.log_file_id"
)
_FACT_COLUMNS = (Devlog.id, Devlog.child, Devlog.device, Devlog.log_file_id, Devlog.is_temp)


def stored_facts(
    child_ids: Iterable[int], files: set[tuple[int, int]]
) -> tuple[list[StoredDevlog], list[StoredDevlog]]:
    """The temporary records of the children (at most one each), and the stored records
    among the ``(device_id, log_file_id)`` pairs."""
    if is_postgres():
        params = (
            _integers(list(child_ids)),
            _integers([d for d, _ in files]),
            _integers([f for _, f in files]),
        )
        pending: list[StoredDevlog] = []
        stored: list[StoredDevlog] = []
        for row in named_rows(execute(_STORED_FACTS, params, prepare_as="devlog_facts")):
            (pending if row.pop("pending") else stored).append(StoredDevlog(**row))
        return pending, stored
    is_temp = Devlog.is_temp == True  # noqa: E712 (a SQL expression, not a truth test)
    query = Devlog.select(*_FACT_COLUMNS).where(Devlog.child.in_(list(child_ids)) & is_temp)
    pending = [StoredDevlog(r.id, r.child_id, r.device_id, r.log_file_id, True) for r in query]
    by_device: dict[int, set[int]] = defaultdict(set)
    for device_id, file_id in files:
        by_device[device_id].add(file_id)
    stored = []
    for device_id, file_ids in by_device.items():
        query = Devlog.select(*_FACT_COLUMNS).where(
            (Devlog.device == device_id) & Devlog.log_file_id.in_(file_ids)
        )
        stored += [
            StoredDevlog(r.id, r.child_id, r.device_id, r.log_file_id, r.is_temp) for r in query
        ]
    return pending, stored


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


@dataclass(frozen=True)
class CompletedColumns:
    """New completed records, one list per column (record ``i`` is index ``i`` of each)."""

    device_ids: Sequence[int]
    child_ids: Sequence[int]
    log_file_ids: Sequence[int | None]
    treatment_dates: Sequence[dt.datetime]  # naive UTC
    finish_flags: Sequence[int | None]
    last_intensities: Sequence[int]
    treatment_times: Sequence[int]
    movements: Sequence[int | None]
    log_data: Sequence[str | None]


# New completed records and the devices' last_log_file_id, one statement per upload.
# PostgreSQL unnests one array per column, passed as array literals (psycopg2 would adapt
# each of 900 values one by one, a millisecond per request); SQLite runs one prepared
# executemany for each table.
_INSERTED_COLUMNS = (
    "device_id, child_id, log_file_id, treatment_date, finish_flag, last_intensity,"
    " treatment_time, movement, log_data, is_temp, created_at, updated_at"
)
_INSERT_AND_RAISE = (
    f"WITH inserted AS (INSERT INTO devlog ({_INSERTED_COLUMNS})"
    " SELECT *, false, %s::timestamp, %s::timestamp FROM unnest(%s::integer[],"
    " %s::integer[], %s::integer[], %s::timestamp[], %s::smallint[], %s::integer[],"
    " %s::integer[], %s::integer[], %s::text[])) "
    "UPDATE device SET last_log_file_id = h.log_file_id"
    " FROM unnest(%s::integer[], %s::integer[]) AS h (device_id, log_file_id)"
    " WHERE device.id = h.device_id AND device.last_log_file_id < h.log_file_id"
)
_INSERT_ONE = f"INSERT INTO devlog ({_INSERTED_COLUMNS}) VALUES ({_placeholders(9)}, 0, %s, %s)"
_RAISE_ONE = "UPDATE device SET last_log_file_id = %s WHERE id = %s AND last_log_file_id < %s"


def _texts(values: Sequence[str | None]) -> object:
    # Most uploads carry no log_data: an array of NULLs needs no adapting of its values.
    if values.count(None) == len(values):
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    return list(values)


def insert_completed(records: CompletedColumns, highest: dict[int, int], now: dt.datetime) -> None:
    """Inserts the new completed records, created now, and moves each device's
    ``last_log_file_id`` up to ``highest[device_id]`` (never down), in one statement."""
    if is_postgres():
        params = (
            now,
            now,
            _integers(records.device_ids),
            _integers(records.child_ids),
            _integers(records.log_file_ids),
            "{" + ",".join(date.isoformat() for date in records.treatment_dates) + "}",
            _integers(records.finish_flags),
            _integers(records.last_intensities),
            _integers(records.treatment_times),
            _integers(records.movements),
            _texts(records.log_data),
            _integers(list(highest)),
            _integers(list(highest.values())),
        )
        execute(_INSERT_AND_RAISE, params, prepare_as="devlog_insert_and_raise")
        return
    rows = zip(
        records.device_ids,
        records.child_ids,
        records.log_file_ids,
        records.treatment_dates,
        records.finish_flags,
        records.last_intensities,
        records.treatment_times,
        records.movements,
        records.log_data,
        strict=True,
    )
    if records.device_ids:
        execute_many(_INSERT_ONE, [(*row, now, now) for row in rows])
    if highest:
        execute_many(
            _RAISE_ONE, [(file_id, device, file_id) for device, file_id in highest.items()]
        )
