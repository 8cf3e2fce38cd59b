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

``treatment_dates`` validates an upload and ``plan_upload`` decides what it writes, both
pure (unit-tested without a database); ``upload_devlogs`` checks ownership, reads the
stored facts the plan needs and applies the plan (``storage/devlog_rows.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee

from devicehub import binding, metrics
from devicehub.errors import Conflict, InvalidArgument, NotFound
from devicehub.security import Caller
from devicehub.storage import devlog_rows, row_locks
from devicehub.storage.db import database
from devicehub.storage.devlog_rows import DevlogValues, StoredDevlog
from devicehub.storage.models import utcnow
from devicehub.v1 import error_pb2 as reasons

MAX_DEVLOG_ENTRIES = 1000
TEMP_DELAY = dt.timedelta(seconds=30)
TEMP_SAVED = "Temp devlog saved successfully"
SAVED = "Devlog saved successfully"
FINISH_FLAGS = range(1, 7)
INT32_MAX = 2**31 - 1
CREATE_FAILED = "Create Device Log Failed"
UPDATE_FAILED = "Update Device Log Failed"


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


def treatment_dates(entries: list[DevlogEntry]) -> list[dt.datetime]:
    """Each entry's ``treatment_date`` as a naive UTC datetime; InvalidArgument if the
    upload is empty, too large or has a malformed entry."""
    if not entries:
        raise InvalidArgument("log_arrays must contain at least one log")
    if len(entries) > MAX_DEVLOG_ENTRIES:
        raise InvalidArgument(
            f"log_arrays may contain at most {MAX_DEVLOG_ENTRIES} logs",
            reasons.ERROR_REASON_BATCH_TOO_LARGE,
        )
    return [_validate(entry, i) for i, entry in enumerate(entries)]


def upload_devlogs(caller: Caller, entries: list[DevlogEntry]) -> str:
    """Stores an upload; returns the documented success message."""
    dates = treatment_dates(entries)
    with database.atomic():
        child_ids = sorted({entry.real_user_id for entry in entries})
        for child_id in child_ids:
            binding.own_child(caller, child_id, missing_is_404=True)
        devices: dict[tuple[int, int], str] = {}  # (device, child) -> the device's unique_id
        for entry in entries:
            key = (entry.device_id, entry.real_user_id)
            if key not in devices:
                devices[key] = binding.bound_to_child(entry.device_id, entry.real_user_id).unique_id
            if devices[key] != entry.unique_id.strip():
                raise NotFound(binding.NOT_FOUND_DEVICE, reasons.ERROR_REASON_DEVICE_NOT_FOUND)
        row_locks.lock_children(child_ids)
        plan = _store_all(entries, dates)
    metrics.DEVLOG_RECORDS.inc(len(entries))  # committed
    return plan.message


def _store_all(entries: list[DevlogEntry], dates: list[dt.datetime]) -> DevlogPlan:
    """Reads the facts the plan needs, plans the upload and applies the plan, inside the
    caller's transaction."""
    files = {(e.device_id, e.log_file_id) for e in entries if e.log_file_id is not None}
    plan = plan_upload(
        entries,
        dates,
        pending_temporaries=devlog_rows.pending_temporaries({e.real_user_id for e in entries}),
        stored_files=devlog_rows.stored_among(files),
    )
    _apply(plan)
    return plan


# --- the plan: what an upload writes, decided in memory -----------------------------


@dataclass(frozen=True)
class NewTemporary:
    """The ``number``-th temporary record a plan creates (its id is known once written)."""

    number: int


@dataclass(frozen=True)
class CreateTemporary:
    """Create the child's temporary record."""

    record: NewTemporary
    child_id: int
    values: DevlogValues


@dataclass(frozen=True)
class UpdateRecord:
    """Overwrite a temporary record (a stored one by id, or one this plan creates) with an
    entry's values; ``complete`` makes it a completed record."""

    record: int | NewTemporary
    values: DevlogValues
    complete: bool


@dataclass(frozen=True)
class NewCompleted:
    """A new completed record (all of a plan's are inserted by one statement)."""

    child_id: int
    values: DevlogValues


@dataclass(frozen=True)
class DevlogPlan:
    """What an upload writes: ``writes`` in order, then ``inserts``, then each device's
    new ``last_log_file_id``; and the success message to answer."""

    writes: list[CreateTemporary | UpdateRecord]
    inserts: list[NewCompleted]
    last_log_file_ids: dict[int, int]  # device id -> highest completed log_file_id
    message: str


@dataclass
class _Temporary:
    """A temporary record as the plan goes: stored or to be created, maybe completed."""

    record: int | NewTemporary
    child_id: int
    completed: bool = False


def _values(entry: DevlogEntry, treatment_date: dt.datetime) -> DevlogValues:
    return DevlogValues(
        device_id=entry.device_id,
        log_file_id=entry.log_file_id,
        treatment_date=treatment_date,
        finish_flag=entry.finish_flag,
        last_intensity=entry.last_intensity,
        treatment_time=entry.treatment_time,
        movement=entry.movement,
        log_data=entry.log_data,
    )


def plan_upload(
    entries: list[DevlogEntry],
    dates: list[dt.datetime],
    *,
    pending_temporaries: list[StoredDevlog],
    stored_files: list[StoredDevlog],
) -> DevlogPlan:
    """Applies the rules of the module docstring to the entries, in order.

    ``dates`` are the entries' treatment dates (``treatment_dates``); the facts are read
    once per upload: the children's pending temporary records, and the stored records
    among the entries' ``(device_id, log_file_id)`` pairs. Both are kept current in
    memory while the entries are decided.
    """
    temporaries: dict[int, _Temporary] = {}  # child id -> its pending temporary record
    by_file: dict[tuple[int, int], _Temporary] = {}  # logs carried by a temporary record
    complete: set[tuple[int, int]] = set()  # logs stored (or planned) as completed records
    for row in pending_temporaries:
        temporaries[row.child_id] = _Temporary(row.id, row.child_id)
        if row.log_file_id is not None:
            by_file[(row.device_id, row.log_file_id)] = temporaries[row.child_id]
    for row in stored_files:
        key = (row.device_id, row.log_file_id) if row.log_file_id is not None else None
        if key is None or key in by_file:
            continue
        if row.is_temp:
            by_file[key] = _Temporary(row.id, row.child_id)
        else:
            complete.add(key)

    writes: list[CreateTemporary | UpdateRecord] = []
    inserts: list[NewCompleted] = []
    highest: dict[int, int] = {}
    created = 0
    for index, (entry, date) in enumerate(zip(entries, dates, strict=True)):
        key = (entry.device_id, entry.log_file_id) if entry.log_file_id is not None else None
        same_file = by_file.get(key) if key else None
        if key in complete or (same_file is not None and same_file.completed):
            continue  # this log is stored and complete: a retried upload
        temporary = temporaries.get(entry.real_user_id)
        if entry.finish_flag is None:
            values = _values(entry, date - TEMP_DELAY)
            if temporary is None:
                new = NewTemporary(created)
                created += 1
                writes.append(CreateTemporary(new, entry.real_user_id, values))
                temporary = temporaries[entry.real_user_id] = _Temporary(new, entry.real_user_id)
            else:
                writes.append(UpdateRecord(temporary.record, values, complete=False))
            if key:
                by_file[key] = temporary
            continue
        # The session this log completes: the temporary record carrying its file id, else
        # (for the first entry of a request) the child's pending temporary record.
        completes = same_file if same_file is not None else (temporary if index == 0 else None)
        values = _values(entry, date)
        if completes is not None:
            writes.append(UpdateRecord(completes.record, values, complete=True))
            completes.completed = True
            temporaries.pop(completes.child_id, None)
        else:
            inserts.append(NewCompleted(entry.real_user_id, values))
        if key:
            complete.add(key)
            highest[entry.device_id] = max(highest.get(entry.device_id, -1), key[1])
    message = TEMP_SAVED if all(entry.finish_flag is None for entry in entries) else SAVED
    return DevlogPlan(writes, inserts, highest, message)


def _write_failed(message: str) -> Conflict:
    # Documented as 409; the upload's transaction rolls back.
    return Conflict(message, reasons.ERROR_REASON_DEVLOG_WRITE_FAILED)


def _apply(plan: DevlogPlan) -> None:
    """Writes the plan inside the caller's transaction, with a fixed number of statements."""
    now = utcnow()
    created: dict[NewTemporary, int] = {}
    for write in plan.writes:
        if isinstance(write, CreateTemporary):
            try:
                created[write.record] = devlog_rows.create_temporary(
                    write.child_id, write.values, now
                )
            except peewee.IntegrityError as error:
                raise _write_failed(CREATE_FAILED) from error
            continue
        record = created[write.record] if isinstance(write.record, NewTemporary) else write.record
        try:
            devlog_rows.update(record, write.values, now, complete=write.complete)
        except peewee.IntegrityError as error:
            raise _write_failed(UPDATE_FAILED) from error
    if plan.inserts:
        try:
            devlog_rows.insert_completed([(row.child_id, row.values) for row in plan.inserts], now)
        except peewee.IntegrityError as error:
            raise _write_failed(CREATE_FAILED) from error
    devlog_rows.raise_last_log_file_ids(plan.last_log_file_ids)
