"""Usage logs ("devlog") of Lux devices, including the temporary session record.

The rules (seed 000, "통일된 API"), applied entry by entry in one transaction:

- ``finish_flag`` null: the child's temporary record (at most one per child) is created,
  or updated if it exists; ``treatment_date`` is stored 30 s earlier than sent, because
  the app sends it 30 s after the session started.
- ``finish_flag`` 1-6: a completed record. The first entry of a request overwrites the
  child's pending temporary record, if any (the session it completes); any other
  completed entry is a new record.
- An entry whose ``(device_id, log_file_id)`` is already stored is skipped: a retried
  upload never duplicates. (An entry without ``log_file_id`` cannot be recognised again;
  the document allows leaving it out.)
- A completed entry whose ``log_file_id`` is carried by a temporary record completes
  that record, wherever it stands in the request.
- The device's ``last_log_file_id`` follows the highest ``log_file_id`` of a completed
  record (an unfinished session's log is not uploaded yet).

Uploads for one child are serialised by locking the child's row (PostgreSQL), so two
concurrent temporary uploads update one record instead of racing to create two.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import peewee

from devicehub import binding
from devicehub.errors import Conflict, InvalidArgument, NotFound
from devicehub.security import Caller
from devicehub.storage.db import array_literal, database, execute_prepared, is_postgres
from devicehub.storage.models import Child, Device, Devlog, utcnow
from devicehub.v1 import error_pb2 as reasons

MAX_DEVLOG_ENTRIES = 1000
TEMP_DELAY = dt.timedelta(seconds=30)
TEMP_SAVED = "Temp devlog saved successfully"
SAVED = "Devlog saved successfully"
FINISH_FLAGS = range(1, 7)
INT32_MAX = 2**31 - 1


@dataclass(slots=True)
class DevlogEntry:
    """One entry of an upload, as sent (validated by ``upload_devlogs``)."""

    real_user_id: int
    device_id: int
    unique_id: str
    treatment_date: str
    finish_flag: int | None
    last_intensity: int
    treatment_time: int
    log_file_id: int | None = None
    movement: int | None = None
    log_data: str | None = None


def parse_finish_flag(value: int | float | str | None) -> int | None:
    """A finish flag as sent: a number, a numeric string (earlier firmware), or null."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null")):
        return None
    try:
        number = float(value)
    except ValueError:
        raise InvalidArgument("finish_flag must be 1 to 6 or null") from None
    if not number.is_integer() or int(number) not in FINISH_FLAGS:
        raise InvalidArgument("finish_flag must be 1 to 6 or null")
    return int(number)


def _treatment_date(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidArgument(
            "treatment_date must be an ISO 8601 date and time, e.g. 2025-02-21T15:48:49"
        ) from None
    out_of_range = InvalidArgument("treatment_date is out of range (years 1 to 9999 in UTC)")
    try:
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise out_of_range from None
    # A temporary record is stored 30 s earlier than sent: that time must exist too.
    if parsed - dt.datetime.min < TEMP_DELAY:
        raise out_of_range
    return parsed


def _validate(entry: DevlogEntry, index: int) -> dt.datetime:
    where = f"log_arrays[{index}]"
    if entry.real_user_id <= 0:
        raise InvalidArgument(f"{where}.real_user_id is required")
    if entry.device_id <= 0:
        raise InvalidArgument(f"{where}.device_id is required")
    if entry.finish_flag is not None and entry.finish_flag not in FINISH_FLAGS:
        raise InvalidArgument(f"{where}.detail_data.finish_flag must be 1 to 6 or null")
    for name in ("last_intensity", "treatment_time", "log_file_id"):
        value = getattr(entry, name)
        if value is not None and value < 0:
            raise InvalidArgument(f"{where}: {name} must not be negative")
    return _treatment_date(entry.treatment_date)


def _lock_children(child_ids: list[int]) -> None:
    if is_postgres():
        Child.select(Child.id).where(Child.id.in_(child_ids)).order_by(
            Child.id
        ).for_update().execute()


def upload_devlogs(caller: Caller, entries: list[DevlogEntry]) -> str:
    """Stores an upload; returns the documented success message."""
    if not entries:
        raise InvalidArgument("log_arrays must contain at least one log")
    if len(entries) > MAX_DEVLOG_ENTRIES:
        raise InvalidArgument(
            f"log_arrays may contain at most {MAX_DEVLOG_ENTRIES} logs",
            reasons.ERROR_REASON_BATCH_TOO_LARGE,
        )
    dates = [_validate(entry, i) for i, entry in enumerate(entries)]
    with database.atomic():
        child_ids = sorted({entry.real_user_id for entry in entries})
        for child_id in child_ids:
            binding.own_child(caller, child_id, missing_is_404=True)
        devices: dict[tuple[int, int], Device] = {}
        for entry in entries:
            key = (entry.device_id, entry.real_user_id)
            if key not in devices:
                devices[key] = binding.bound_to_child(entry.device_id, entry.real_user_id)
            if devices[key].unique_id != entry.unique_id.strip():
                raise NotFound(binding.NOT_FOUND_DEVICE, reasons.ERROR_REASON_DEVICE_NOT_FOUND)
        _lock_children(child_ids)
        _store_all(entries, dates)
    return TEMP_SAVED if all(entry.finish_flag is None for entry in entries) else SAVED


@dataclass
class _Stored:
    """A devlog row this request knows of: in the database (``id``) or about to be."""

    id: int | None
    is_temp: bool
    child_id: int
    log_file_id: int | None


def _store_all(entries: list[DevlogEntry], dates: list[dt.datetime]) -> None:
    """Applies the rules to every entry, in order, with a fixed number of queries.

    The decisions need two facts per entry: the child's pending temporary record and
    whether ``(device_id, log_file_id)`` is stored. Both are read once for the whole
    request and kept current in memory while the entries are decided; new completed
    records are then written with one multi-row INSERT.
    """
    child_ids = {entry.real_user_id for entry in entries}
    temps: dict[int, _Stored] = {}
    by_file: dict[tuple[int, int], _Stored] = {}
    is_temp = Devlog.is_temp == True  # noqa: E712 (a SQL expression, not a truth test)
    pending_temps = Devlog.select(Devlog.id, Devlog.child, Devlog.device, Devlog.log_file_id).where(
        Devlog.child.in_(child_ids) & is_temp
    )
    for row in pending_temps:
        temps[row.child_id] = _Stored(row.id, True, row.child_id, row.log_file_id)
        if row.log_file_id is not None:
            by_file[(row.device_id, row.log_file_id)] = temps[row.child_id]
    files = {(e.device_id, e.log_file_id) for e in entries if e.log_file_id is not None}
    for devlog_id, child_id, device_id, file_id, stored_is_temp in _stored_files(files):
        by_file.setdefault(
            (device_id, file_id), _Stored(devlog_id, stored_is_temp, child_id, file_id)
        )

    now = utcnow()
    inserts: list[dict[str, object]] = []
    completed: dict[int, int] = {}  # device id -> highest completed log_file_id
    for index, (entry, date) in enumerate(zip(entries, dates, strict=True)):
        key = (entry.device_id, entry.log_file_id) if entry.log_file_id is not None else None
        same_file = by_file.get(key) if key else None
        if same_file is not None and not same_file.is_temp:
            continue  # this log is stored and complete: a retried upload
        fields: dict[str, object] = {
            "device": entry.device_id,
            "log_file_id": entry.log_file_id,
            "finish_flag": entry.finish_flag,
            "last_intensity": entry.last_intensity,
            "treatment_time": entry.treatment_time,
            "movement": entry.movement,
            "log_data": entry.log_data,
            "updated_at": now,
        }
        temp = temps.get(entry.real_user_id)
        if entry.finish_flag is None:
            fields["treatment_date"] = date - TEMP_DELAY
            if temp is None:
                temp = _Stored(
                    _create(child=entry.real_user_id, is_temp=True, created_at=now, **fields),
                    True,
                    entry.real_user_id,
                    None,
                )
                temps[entry.real_user_id] = temp
            else:
                _update(temp.id, **fields)
            temp.log_file_id = entry.log_file_id
            if key:
                by_file[key] = temp
            continue
        fields["treatment_date"] = date
        # The session this log completes: the temp record carrying its file id, else (for
        # the first entry of a request) the child's pending temp record.
        completes = same_file if same_file is not None else (temp if index == 0 else None)
        if completes is not None:
            _update(completes.id, is_temp=False, **fields)
            completes.is_temp = False
            temps.pop(completes.child_id, None)
        else:
            inserts.append({"child": entry.real_user_id, **fields})
        if key:
            by_file[key] = _Stored(None, False, entry.real_user_id, entry.log_file_id)
            completed[entry.device_id] = max(completed.get(entry.device_id, -1), key[1])
    if inserts:
        _insert(inserts, now)
    for device_id, highest in completed.items():
        Device.update(last_log_file_id=highest).where(
            (Device.id == device_id) & (Device.last_log_file_id < highest)
        ).execute()


# Stored records among the (device_id, log_file_id) pairs of a request. PostgreSQL joins
# the pairs to the unique index, one probe per pair: with ``device_id = %s AND
# log_file_id IN (...)`` the planner scanned every record of the device and filtered
# them, a cost that grew with the device's history.
_STORED_FILES_POSTGRES = (
    "SELECT d.id, d.child_id, d.device_id, d.log_file_id, d.is_temp "
    "FROM unnest(%s::integer[], %s::integer[]) AS f (device_id, log_file_id) "
    "JOIN devlog d ON d.device_id = f.device_id AND d.log_file_id = f.log_file_id"
)


def _stored_files(files: set[tuple[int, int]]) -> list[tuple[int, int, int, int, bool]]:
    """(id, child_id, device_id, log_file_id, is_temp) of the stored records in ``files``."""
    if not files:
        return []
    if is_postgres():
        pairs = (array_literal([d for d, _ in files]), array_literal([f for _, f in files]))
        return execute_prepared("devlog_stored_files", _STORED_FILES_POSTGRES, pairs).fetchall()
    by_device: dict[int, set[int]] = defaultdict(set)
    for device_id, file_id in files:
        by_device[device_id].add(file_id)
    found = []
    for device_id, file_ids in by_device.items():
        query = Devlog.select(
            Devlog.id, Devlog.child, Devlog.device, Devlog.log_file_id, Devlog.is_temp
        ).where((Devlog.device == device_id) & Devlog.log_file_id.in_(file_ids))
        found += [
            (r.id, r.child_id, r.device_id, r.log_file_id, r.is_temp)
            for r in query
            if r.log_file_id is not None  # always, given the IN; narrows the type
        ]
    return found


def _create(**fields: object) -> int:
    try:
        return Devlog.insert(**fields).execute()
    except peewee.IntegrityError as error:  # documented as 409; the request rolls back
        raise Conflict(
            "Create Device Log Failed", reasons.ERROR_REASON_DEVLOG_WRITE_FAILED
        ) from error


# New completed records, one statement per request. PostgreSQL unnests one array per
# column, passed as array literals (psycopg2 would adapt each of 900 values one by one,
# a millisecond per request); SQLite runs one prepared executemany.
_INSERT_COLUMNS = (  # (column, key in the row dicts built by _store_all, SQL type)
    ("device_id", "device", "integer"),
    ("child_id", "child", "integer"),
    ("log_file_id", "log_file_id", "integer"),
    ("treatment_date", "treatment_date", "timestamp"),
    ("finish_flag", "finish_flag", "smallint"),
    ("last_intensity", "last_intensity", "integer"),
    ("treatment_time", "treatment_time", "integer"),
    ("movement", "movement", "integer"),
    ("log_data", "log_data", "text"),
)
_INSERT_INTO = (
    f"INSERT INTO devlog ({', '.join(column for column, _, _ in _INSERT_COLUMNS)},"
    " is_temp, created_at, updated_at) "
)
_INSERT_POSTGRES = (
    _INSERT_INTO
    + "SELECT *, false, %s::timestamp, %s::timestamp FROM unnest("
    + ", ".join(f"%s::{kind}[]" for _, _, kind in _INSERT_COLUMNS)
    + ")"
)
_INSERT_SQLITE = _INSERT_INTO + f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)}, 0, ?, ?)"


def _insert(rows: list[dict[str, object]], now: dt.datetime) -> None:
    """Inserts new completed records (``is_temp`` false, created now) in one statement."""
    keys = [key for _, key, _ in _INSERT_COLUMNS]
    try:
        if is_postgres():
            columns = [_postgres_column(rows, key, kind) for _, key, kind in _INSERT_COLUMNS]
            execute_prepared("devlog_insert", _INSERT_POSTGRES, [now, now, *columns])
        else:
            values = [(*(row[k] for k in keys), now, now) for row in rows]
            database.cursor().executemany(_INSERT_SQLITE, values)
    except (peewee.IntegrityError, sqlite3.IntegrityError) as error:
        raise Conflict(
            "Create Device Log Failed", reasons.ERROR_REASON_DEVLOG_WRITE_FAILED
        ) from error


def _postgres_column(rows: list[dict[str, Any]], key: str, kind: str) -> object:
    values = [row[key] for row in rows]
    return values if kind == "text" else array_literal(values)


def _update(devlog_id: int | None, **fields: object) -> None:
    try:
        Devlog.update(**fields).where(Devlog.id == devlog_id).execute()
    except peewee.IntegrityError as error:
        raise Conflict(
            "Update Device Log Failed", reasons.ERROR_REASON_DEVLOG_WRITE_FAILED
        ) from error
