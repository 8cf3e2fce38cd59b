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

An upload arrives as columns (``DevlogUpload``, one list per field), so validation and
the insert look at each column at once instead of building an object per entry; a
request of 100 logs otherwise spent more time on its entries' objects than on its SQL.
``treatment_dates`` validates an upload and ``plan_upload`` decides what it writes, both
pure (unit-tested without a database); ``upload_devlogs`` checks ownership, reads the
stored facts the plan needs and applies the plan (``storage/devlog_rows.py``), with one
statement each.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import peewee

from devicehub import binding, metrics
from devicehub.errors import Conflict, InvalidArgument, NotFound
from devicehub.security import Caller
from devicehub.storage import devlog_rows, row_locks
from devicehub.storage.db import database
from devicehub.storage.devlog_rows import CompletedColumns, DevlogValues, StoredDevlog
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
    """One entry of an upload, as sent (``DevlogUpload.of`` makes an upload of them)."""

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


@dataclass(slots=True)
class DevlogUpload:
    """An upload as sent, one list per field: entry ``i`` is index ``i`` of every list
    (validated by ``treatment_dates``)."""

    real_user_ids: list[int]
    device_ids: list[int]
    unique_ids: list[str]
    treatment_dates: list[str]
    finish_flags: list[int | None]
    last_intensities: list[int]
    treatment_times: list[int]
    log_file_ids: list[int | None]
    movements: list[int | None]
    log_data: list[str | None]

    @classmethod
    def of(cls, entries: Sequence[DevlogEntry]) -> DevlogUpload:
        return cls(
            real_user_ids=[e.real_user_id for e in entries],
            device_ids=[e.device_id for e in entries],
            unique_ids=[e.unique_id for e in entries],
            treatment_dates=[e.treatment_date for e in entries],
            finish_flags=[e.finish_flag for e in entries],
            last_intensities=[e.last_intensity for e in entries],
            treatment_times=[e.treatment_time for e in entries],
            log_file_ids=[e.log_file_id for e in entries],
            movements=[e.movement for e in entries],
            log_data=[e.log_data for e in entries],
        )

    def __len__(self) -> int:
        return len(self.real_user_ids)


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


# A temporary record is stored 30 s earlier than sent: that time must exist too.
_EARLIEST_DATE = dt.datetime.min + TEMP_DELAY
_BAD_DATE = "treatment_date must be an ISO 8601 date and time, e.g. 2025-02-21T15:48:49"
_DATE_OUT_OF_RANGE = "treatment_date is out of range (years 1 to 9999 in UTC)"


def _treatment_date(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidArgument(_BAD_DATE) from None
    try:
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise InvalidArgument(_DATE_OUT_OF_RANGE) from None
    if parsed < _EARLIEST_DATE:
        raise InvalidArgument(_DATE_OUT_OF_RANGE)
    return parsed


def _negative(value: int | None) -> bool:
    return value is not None and value < 0


# The field checks of an entry, in the order an entry is checked: an upload's error is
# the first failing check of its first failing entry.
_CHECKS: tuple[tuple[str, Callable[[DevlogUpload], bool], Callable[..., bool], str], ...] = (
    (
        "real_user_ids",
        lambda u: min(u.real_user_ids) > 0,
        lambda v: v <= 0,
        "{where}.real_user_id is required",
    ),
    (
        "device_ids",
        lambda u: min(u.device_ids) > 0,
        lambda v: v <= 0,
        "{where}.device_id is required",
    ),
    (
        "finish_flags",
        lambda u: all(v is None or v in FINISH_FLAGS for v in set(u.finish_flags)),
        lambda v: v is not None and v not in FINISH_FLAGS,
        "{where}.detail_data.finish_flag must be 1 to 6 or null",
    ),
    (
        "last_intensities",
        lambda u: min(u.last_intensities) >= 0,
        _negative,
        "{where}: last_intensity must not be negative",
    ),
    (
        "treatment_times",
        lambda u: min(u.treatment_times) >= 0,
        _negative,
        "{where}: treatment_time must not be negative",
    ),
    (
        "log_file_ids",
        lambda u: not any(_negative(v) for v in u.log_file_ids),
        _negative,
        "{where}: log_file_id must not be negative",
    ),
)


def treatment_dates(upload: DevlogUpload) -> list[dt.datetime]:
    """Each entry's ``treatment_date`` as a naive UTC datetime; InvalidArgument if the
    upload is empty, too large or has a malformed entry."""
    if not len(upload):
        raise InvalidArgument("log_arrays must contain at least one log")
    if len(upload) > MAX_DEVLOG_ENTRIES:
        raise InvalidArgument(
            f"log_arrays may contain at most {MAX_DEVLOG_ENTRIES} logs",
            reasons.ERROR_REASON_BATCH_TOO_LARGE,
        )
    # Each check looks at its whole column; only a failing one looks for its first entry.
    failures: list[tuple[int, int, InvalidArgument]] = []
    for order, (column, passes, fails, message) in enumerate(_CHECKS):
        if not passes(upload):
            values = getattr(upload, column)
            index = next(i for i, value in enumerate(values) if fails(value))
            failures.append(
                (index, order, InvalidArgument(message.format(where=f"log_arrays[{index}]")))
            )
    dates: list[dt.datetime] = []
    try:
        for text in upload.treatment_dates:
            dates.append(_treatment_date(text))
    except InvalidArgument as error:  # the date is an entry's last check
        failures.append((len(dates), len(_CHECKS), error))
    if failures:
        raise min(failures, key=lambda failure: failure[:2])[2]
    return dates


def upload_devlogs(caller: Caller, upload: DevlogUpload) -> str:
    """Stores an upload; returns the documented success message."""
    dates = treatment_dates(upload)
    with database.atomic():
        _authorize_and_lock(caller, upload)
        plan = _store_all(upload, dates)
    metrics.DEVLOG_RECORDS.inc(len(upload))  # committed
    return plan.message


def _authorize_and_lock(caller: Caller, upload: DevlogUpload) -> None:
    """Checks that every child is the caller's and every device bound to its entry's
    child under its ``unique_id``, and locks the children's rows: one statement when all
    holds; otherwise the checks one by one name the error (children first, in id order,
    then the entries in order)."""
    child_ids = sorted(set(upload.real_user_ids))
    devices = devlog_rows.authorize_and_lock(caller.account_id, child_ids, set(upload.device_ids))
    if devices is not None and all(
        (found := devices.get(device_id)) is not None
        and found.bound_child_id == child_id
        and found.unique_id == unique_id.strip()
        for device_id, child_id, unique_id in set(
            zip(upload.device_ids, upload.real_user_ids, upload.unique_ids, strict=True)
        )
    ):
        return
    for child_id in child_ids:
        binding.own_child(caller, child_id, missing_is_404=True)
    bound: dict[tuple[int, int], str] = {}  # (device, child) -> the device's unique_id
    for device_id, child_id, unique_id in zip(
        upload.device_ids, upload.real_user_ids, upload.unique_ids, strict=True
    ):
        key = (device_id, child_id)
        if key not in bound:
            bound[key] = binding.bound_to_child(device_id, child_id).unique_id
        if bound[key] != unique_id.strip():
            raise NotFound(binding.NOT_FOUND_DEVICE, reasons.ERROR_REASON_DEVICE_NOT_FOUND)
    # Only a concurrent change gets here (the one statement saw a failure that the checks
    # no longer see): lock as that statement would have.
    row_locks.lock_children(child_ids)


def _store_all(upload: DevlogUpload, dates: list[dt.datetime]) -> DevlogPlan:
    """Reads the facts the plan needs, plans the upload and applies the plan, inside the
    caller's transaction (which holds the children's locks)."""
    file_ids = upload.log_file_ids
    files = {
        (device_id, file_id)
        for device_id, file_id in zip(upload.device_ids, file_ids, strict=True)
        if file_id is not None
    }
    pending, stored = devlog_rows.stored_facts(set(upload.real_user_ids), files)
    plan = plan_upload(upload, dates, pending_temporaries=pending, stored_files=stored)
    _apply(plan, upload, dates)
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
class DevlogPlan:
    """What an upload writes: ``writes`` in order, then a new completed record for each
    entry of ``inserts`` (indexes into the upload; such a record holds its entry's values
    as sent, by one statement for all), then each device's new ``last_log_file_id``;
    and the success message to answer."""

    writes: list[CreateTemporary | UpdateRecord]
    inserts: list[int]
    last_log_file_ids: dict[int, int]  # device id -> highest completed log_file_id
    message: str


@dataclass
class _Temporary:
    """A temporary record as the plan goes: stored or to be created, maybe completed."""

    record: int | NewTemporary
    child_id: int
    completed: bool = False


def _values(upload: DevlogUpload, index: int, treatment_date: dt.datetime) -> DevlogValues:
    return DevlogValues(
        device_id=upload.device_ids[index],
        log_file_id=upload.log_file_ids[index],
        treatment_date=treatment_date,
        finish_flag=upload.finish_flags[index],
        last_intensity=upload.last_intensities[index],
        treatment_time=upload.treatment_times[index],
        movement=upload.movements[index],
        log_data=upload.log_data[index],
    )


def plan_upload(
    upload: DevlogUpload,
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
    inserts: list[int] = []
    highest: dict[int, int] = {}
    created = 0
    for index, (child_id, device_id, file_id, flag) in enumerate(
        zip(
            upload.real_user_ids,
            upload.device_ids,
            upload.log_file_ids,
            upload.finish_flags,
            strict=True,
        )
    ):
        key = (device_id, file_id) if file_id is not None else None
        same_file = by_file.get(key) if key else None
        if key in complete or (same_file is not None and same_file.completed):
            continue  # this log is stored and complete: a retried upload
        temporary = temporaries.get(child_id)
        if flag is None:
            values = _values(upload, index, dates[index] - TEMP_DELAY)
            if temporary is None:
                new = NewTemporary(created)
                created += 1
                writes.append(CreateTemporary(new, child_id, values))
                temporary = temporaries[child_id] = _Temporary(new, child_id)
            else:
                writes.append(UpdateRecord(temporary.record, values, complete=False))
            if key:
                by_file[key] = temporary
            continue
        # The session this log completes: the temporary record carrying its file id, else
        # (for the first entry of a request) the child's pending temporary record.
        completes = same_file if same_file is not None else (temporary if index == 0 else None)
        if completes is not None:
            values = _values(upload, index, dates[index])
            writes.append(UpdateRecord(completes.record, values, complete=True))
            completes.completed = True
            temporaries.pop(completes.child_id, None)
        else:
            inserts.append(index)
        if key:
            complete.add(key)
            if highest.get(device_id, -1) < key[1]:
                highest[device_id] = key[1]
    message = TEMP_SAVED if all(flag is None for flag in upload.finish_flags) else SAVED
    return DevlogPlan(writes, inserts, highest, message)


def completed_columns(
    upload: DevlogUpload, dates: list[dt.datetime], inserts: list[int]
) -> CompletedColumns:
    """The columns of the new completed records of ``inserts``: their entries' values as
    sent (an upload of new logs inserts every entry: its columns as they are)."""
    if len(inserts) == len(upload):
        return CompletedColumns(
            device_ids=upload.device_ids,
            child_ids=upload.real_user_ids,
            log_file_ids=upload.log_file_ids,
            treatment_dates=dates,
            finish_flags=upload.finish_flags,
            last_intensities=upload.last_intensities,
            treatment_times=upload.treatment_times,
            movements=upload.movements,
            log_data=upload.log_data,
        )
    return CompletedColumns(
        device_ids=[upload.device_ids[i] for i in inserts],
        child_ids=[upload.real_user_ids[i] for i in inserts],
        log_file_ids=[upload.log_file_ids[i] for i in inserts],
        treatment_dates=[dates[i] for i in inserts],
        finish_flags=[upload.finish_flags[i] for i in inserts],
        last_intensities=[upload.last_intensities[i] for i in inserts],
        treatment_times=[upload.treatment_times[i] for i in inserts],
        movements=[upload.movements[i] for i in inserts],
        log_data=[upload.log_data[i] for i in inserts],
    )


def _write_failed(message: str) -> Conflict:
    # Documented as 409; the upload's transaction rolls back.
    return Conflict(message, reasons.ERROR_REASON_DEVLOG_WRITE_FAILED)


def _apply(plan: DevlogPlan, upload: DevlogUpload, dates: list[dt.datetime]) -> None:
    """Writes the plan inside the caller's transaction, with a fixed number of statements:
    one per temporary write, then one for the new records and the devices."""
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
    if plan.inserts or plan.last_log_file_ids:
        try:
            devlog_rows.insert_completed(
                completed_columns(upload, dates, plan.inserts), plan.last_log_file_ids, now
            )
        except peewee.IntegrityError as error:
            raise _write_failed(CREATE_FAILED) from error
