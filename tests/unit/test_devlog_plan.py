"""The devlog upload rules as pure functions: validation and the write plan (no database).

Every rule of ``devlog``'s module docstring has a test here; the stack tests
(``tests/stack/test_devlog.py``) show the same rules through the documented API.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from devicehub import devlog
from devicehub.devlog import (
    CreateTemporary,
    DevlogEntry,
    DevlogUpload,
    NewTemporary,
    UpdateRecord,
    completed_columns,
    plan_upload,
)
from devicehub.errors import InvalidArgument
from devicehub.storage.devlog_rows import DevlogValues, StoredDevlog
from devicehub.v1 import error_pb2 as reasons

CHILD, OTHER_CHILD, DEVICE = 7, 8, 30
SENT = "2025-02-21T15:48:49"
SENT_AT = dt.datetime(2025, 2, 21, 15, 48, 49)


def entry(finish_flag: int | None, log_file_id: int | None = None, **changes) -> DevlogEntry:
    fields = {
        "real_user_id": CHILD,
        "device_id": DEVICE,
        "unique_id": "unique-30",
        "treatment_date": SENT,
        "finish_flag": finish_flag,
        "last_intensity": 3,
        "treatment_time": 600,
        "log_file_id": log_file_id,
    } | changes
    return DevlogEntry(**fields)


def values(item: DevlogEntry, treatment_date: dt.datetime = SENT_AT) -> DevlogValues:
    return DevlogValues(
        device_id=item.device_id,
        log_file_id=item.log_file_id,
        treatment_date=treatment_date,
        finish_flag=item.finish_flag,
        last_intensity=item.last_intensity,
        treatment_time=item.treatment_time,
        movement=item.movement,
        log_data=item.log_data,
    )


def temp_values(item: DevlogEntry) -> DevlogValues:
    return values(item, SENT_AT - dt.timedelta(seconds=30))


def stored(
    id: int, log_file_id: int | None, *, is_temp: bool, child_id: int = CHILD
) -> StoredDevlog:
    return StoredDevlog(id, child_id, DEVICE, log_file_id, is_temp)


def treatment_dates(entries: list[DevlogEntry]) -> list[dt.datetime]:
    return devlog.treatment_dates(DevlogUpload.of(entries))


@dataclasses.dataclass(frozen=True)
class NewCompleted:
    """A new completed record as the plan's one insert writes it."""

    child_id: int
    values: DevlogValues


@dataclasses.dataclass(frozen=True)
class Planned:
    """A plan, its new completed records read back from the insert's columns."""

    writes: list
    inserts: list[NewCompleted]
    last_log_file_ids: dict[int, int]
    message: str


def plan(
    *entries: DevlogEntry,
    pending: list[StoredDevlog] | None = None,
    files: list[StoredDevlog] | None = None,
) -> Planned:
    upload = DevlogUpload.of(entries)
    dates = devlog.treatment_dates(upload)
    result = plan_upload(upload, dates, pending_temporaries=pending or [], stored_files=files or [])
    columns = completed_columns(upload, dates, result.inserts)
    records = zip(
        columns.child_ids,
        columns.device_ids,
        columns.log_file_ids,
        columns.treatment_dates,
        columns.finish_flags,
        columns.last_intensities,
        columns.treatment_times,
        columns.movements,
        columns.log_data,
        strict=True,
    )
    inserts = [NewCompleted(child, DevlogValues(*values)) for child, *values in records]
    return Planned(result.writes, inserts, result.last_log_file_ids, result.message)


# --- validation -------------------------------------------------------------------


def test_an_empty_upload_is_refused():
    with pytest.raises(InvalidArgument) as error:
        treatment_dates([])
    assert error.value.message == "log_arrays must contain at least one log"


def test_more_than_1000_entries_are_refused_as_a_batch_too_large():
    with pytest.raises(InvalidArgument) as error:
        treatment_dates([entry(1, i) for i in range(1001)])
    assert error.value.message == "log_arrays may contain at most 1000 logs"
    assert error.value.reason == reasons.ERROR_REASON_BATCH_TOO_LARGE
    assert len(treatment_dates([entry(1, i) for i in range(1000)])) == 1000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"real_user_id": 0}, "log_arrays[1].real_user_id is required"),
        ({"device_id": 0}, "log_arrays[1].device_id is required"),
        ({"finish_flag": 7}, "log_arrays[1].detail_data.finish_flag must be 1 to 6 or null"),
        ({"last_intensity": -1}, "log_arrays[1]: last_intensity must not be negative"),
        ({"treatment_time": -1}, "log_arrays[1]: treatment_time must not be negative"),
        ({"log_file_id": -1}, "log_arrays[1]: log_file_id must not be negative"),
        (
            {"treatment_date": "yesterday"},
            "treatment_date must be an ISO 8601 date and time, e.g. 2025-02-21T15:48:49",
        ),
        (
            {"treatment_date": "0001-01-01T00:00:00+01:00"},
            "treatment_date is out of range (years 1 to 9999 in UTC)",
        ),
        (  # its temporary record would be stored 30 s earlier, before year 1
            {"treatment_date": "0001-01-01T00:00:29"},
            "treatment_date is out of range (years 1 to 9999 in UTC)",
        ),
    ],
)
def test_a_malformed_entry_is_refused_naming_its_index(change, message):
    with pytest.raises(InvalidArgument) as error:
        treatment_dates([entry(1, 1), dataclasses.replace(entry(1, 2), **change)])
    assert error.value.message == message


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (  # an earlier entry's error comes first, whatever the checks
            {"treatment_time": -1},
            {"real_user_id": 0},
            "log_arrays[1]: treatment_time must not be negative",
        ),
        (
            {"treatment_date": "yesterday"},
            {"device_id": 0},
            "treatment_date must be an ISO 8601 date and time, e.g. 2025-02-21T15:48:49",
        ),
        (  # within one entry, the fields in order, its date last
            {"log_file_id": -1, "last_intensity": -1, "treatment_date": "yesterday"},
            {},
            "log_arrays[1]: last_intensity must not be negative",
        ),
        (
            {"treatment_date": "yesterday", "finish_flag": 0},
            {},
            "log_arrays[1].detail_data.finish_flag must be 1 to 6 or null",
        ),
        (
            {},
            {"device_id": 0, "treatment_date": "yesterday"},
            "log_arrays[2].device_id is required",
        ),
    ],
)
def test_an_uploads_error_is_its_first_entrys_first_failing_check(first, second, message):
    entries = [
        entry(1, 1),
        dataclasses.replace(entry(1, 2), **first),
        dataclasses.replace(entry(1, 3), **second),
    ]
    with pytest.raises(InvalidArgument) as error:
        treatment_dates(entries)
    assert error.value.message == message


def test_treatment_dates_with_an_offset_are_converted_to_naive_utc():
    dates = treatment_dates([entry(None, treatment_date="2025-02-21T15:48:49+09:00")])
    assert dates == [dt.datetime(2025, 2, 21, 6, 48, 49)]


@pytest.mark.parametrize(
    ("sent", "parsed"),
    [(None, None), ("null", None), (" NULL ", None), ("", None), (3, 3), ("6", 6), (1.0, 1)],
)
def test_finish_flags_as_sent_by_every_firmware(sent, parsed):
    assert devlog.parse_finish_flag(sent) == parsed


@pytest.mark.parametrize("sent", [0, 7, 2.5, "abc", "9"])
def test_finish_flags_outside_1_to_6_are_refused(sent):
    with pytest.raises(InvalidArgument) as error:
        devlog.parse_finish_flag(sent)
    assert error.value.message == "finish_flag must be 1 to 6 or null"


# --- temporary records ----------------------------------------------------------------


def test_a_temporary_entry_creates_the_childs_temporary_record_30_s_earlier():
    temp = entry(None)
    result = plan(temp)
    assert result.writes == [CreateTemporary(NewTemporary(0), CHILD, temp_values(temp))]
    assert result.inserts == []
    assert result.last_log_file_ids == {}
    assert result.message == devlog.TEMP_SAVED == "Temp devlog saved successfully"


def test_a_temporary_entry_updates_the_pending_temporary_record():
    temp = entry(None, treatment_time=30)
    result = plan(temp, pending=[stored(5, None, is_temp=True)])
    assert result.writes == [UpdateRecord(5, temp_values(temp), complete=False)]
    assert result.message == devlog.TEMP_SAVED


def test_a_second_temporary_entry_updates_the_record_the_first_creates():
    first, second = entry(None, treatment_time=10), entry(None, treatment_time=20)
    result = plan(first, second)
    assert result.writes == [
        CreateTemporary(NewTemporary(0), CHILD, temp_values(first)),
        UpdateRecord(NewTemporary(0), temp_values(second), complete=False),
    ]


def test_each_child_has_its_own_temporary_record():
    mine, theirs = entry(None), entry(None, real_user_id=OTHER_CHILD)
    result = plan(mine, theirs)
    assert result.writes == [
        CreateTemporary(NewTemporary(0), CHILD, temp_values(mine)),
        CreateTemporary(NewTemporary(1), OTHER_CHILD, temp_values(theirs)),
    ]


# --- completed records ----------------------------------------------------------------


def test_a_completed_first_entry_completes_the_pending_temporary_record():
    done = entry(2, 11)
    result = plan(done, pending=[stored(5, None, is_temp=True)])
    assert result.writes == [UpdateRecord(5, values(done), complete=True)]
    assert result.inserts == []
    assert result.message == devlog.SAVED == "Devlog saved successfully"


def test_completed_entries_after_the_first_are_new_records():
    first, second = entry(1, 11), entry(1, 12)
    result = plan(first, second, pending=[stored(5, None, is_temp=True)])
    assert result.writes == [UpdateRecord(5, values(first), complete=True)]
    assert result.inserts == [NewCompleted(CHILD, values(second))]


def test_a_completed_entry_after_a_temporary_one_leaves_the_temporary_record_pending():
    temp, done = entry(None), entry(1, 11)
    result = plan(temp, done, pending=[stored(5, None, is_temp=True)])
    assert result.writes == [UpdateRecord(5, temp_values(temp), complete=False)]
    assert result.inserts == [NewCompleted(CHILD, values(done))]
    assert result.message == devlog.SAVED


def test_without_a_pending_temporary_record_a_completed_entry_is_a_new_record():
    done = entry(3, 11)
    result = plan(done)
    assert result.writes == []
    assert result.inserts == [NewCompleted(CHILD, values(done))]


def test_after_completing_its_temporary_record_a_child_gets_a_new_one():
    done, temp = entry(1, 11), entry(None)
    result = plan(done, temp, pending=[stored(5, None, is_temp=True)])
    assert result.writes == [
        UpdateRecord(5, values(done), complete=True),
        CreateTemporary(NewTemporary(0), CHILD, temp_values(temp)),
    ]


def test_a_log_carried_by_a_temporary_record_completes_it_wherever_it_stands():
    other, done = entry(1, 10, real_user_id=OTHER_CHILD), entry(1, 11)
    temporary = stored(5, 11, is_temp=True)
    result = plan(other, done, pending=[temporary], files=[temporary])
    assert result.inserts == [NewCompleted(OTHER_CHILD, values(other))]
    assert result.writes == [UpdateRecord(5, values(done), complete=True)]


def test_a_first_entry_completing_the_temporary_record_makes_its_log_a_retry():
    first, carried = entry(1, 10), entry(1, 11)
    temporary = stored(5, 11, is_temp=True)
    result = plan(first, carried, pending=[temporary], files=[temporary])
    assert result.writes == [UpdateRecord(5, values(first), complete=True)]
    assert result.inserts == []


def test_a_stored_temporary_record_of_another_child_is_completed_by_its_log():
    done = entry(1, 11)
    result = plan(done, entry(1, 12), files=[stored(9, 11, is_temp=True, child_id=OTHER_CHILD)])
    assert result.writes == [UpdateRecord(9, values(done), complete=True)]


def test_a_temporary_record_created_with_a_log_is_completed_by_that_log():
    temp, other, done = entry(None, 11), entry(1, 10), entry(1, 11)
    result = plan(temp, other, done)
    assert result.writes == [
        CreateTemporary(NewTemporary(0), CHILD, temp_values(temp)),
        UpdateRecord(NewTemporary(0), values(done), complete=True),
    ]
    assert result.inserts == [NewCompleted(CHILD, values(other))]


# --- retries --------------------------------------------------------------------------


def test_a_log_stored_complete_is_skipped():
    result = plan(entry(1, 11), entry(1, 12), files=[stored(4, 11, is_temp=False)])
    assert result.writes == []
    assert result.inserts == [NewCompleted(CHILD, values(entry(1, 12)))]
    assert result.last_log_file_ids == {DEVICE: 12}


def test_a_retried_upload_writes_nothing():
    result = plan(entry(1, 11), files=[stored(4, 11, is_temp=False)])
    assert (result.writes, result.inserts, result.last_log_file_ids) == ([], [], {})
    assert result.message == devlog.SAVED


def test_a_retried_completion_does_not_touch_the_pending_temporary_record():
    result = plan(
        entry(1, 11),
        pending=[stored(5, None, is_temp=True)],
        files=[stored(4, 11, is_temp=False)],
    )
    assert (result.writes, result.inserts) == ([], [])


def test_a_temporary_entry_with_a_log_stored_complete_is_skipped():
    result = plan(entry(None, 11), files=[stored(4, 11, is_temp=False)])
    assert result.writes == []
    assert result.message == devlog.TEMP_SAVED


def test_the_same_log_twice_in_one_upload_is_stored_once():
    first, again = entry(1, 11), entry(1, 11, treatment_time=1)
    result = plan(first, again)
    assert result.inserts == [NewCompleted(CHILD, values(first))]


def test_a_temporary_record_once_completed_is_not_completed_again_by_its_earlier_log():
    temp_a, temp_b = entry(None, 10), entry(None, 11)
    done_b, retry_a = entry(1, 11), entry(1, 10)
    result = plan(temp_a, temp_b, done_b, retry_a)
    assert result.writes == [
        CreateTemporary(NewTemporary(0), CHILD, temp_values(temp_a)),
        UpdateRecord(NewTemporary(0), temp_values(temp_b), complete=False),
        UpdateRecord(NewTemporary(0), values(done_b), complete=True),
    ]
    assert result.inserts == []


def test_entries_without_a_log_file_id_are_never_recognised_as_retries():
    done = entry(1)
    result = plan(done, done)
    assert result.inserts == [NewCompleted(CHILD, values(done))] * 2
    assert result.last_log_file_ids == {}


def test_the_insert_takes_its_entries_columns_as_sent_in_order():
    upload = DevlogUpload.of(
        [
            entry(None),
            entry(2, 11, movement=1, log_data="x", treatment_date="2025-02-21T15:48:49+09:00"),
            entry(1, 4, device_id=DEVICE + 1, real_user_id=OTHER_CHILD, treatment_time=7),
        ]
    )
    dates = devlog.treatment_dates(upload)
    result = plan_upload(upload, dates, pending_temporaries=[], stored_files=[])
    assert result.inserts == [1, 2]
    columns = completed_columns(upload, dates, result.inserts)
    assert dataclasses.asdict(columns) == {
        "device_ids": [DEVICE, DEVICE + 1],
        "child_ids": [CHILD, OTHER_CHILD],
        "log_file_ids": [11, 4],
        "treatment_dates": [dt.datetime(2025, 2, 21, 6, 48, 49), SENT_AT],
        "finish_flags": [2, 1],
        "last_intensities": [3, 3],
        "treatment_times": [600, 7],
        "movements": [1, None],
        "log_data": ["x", None],
    }
    every = completed_columns(upload, dates, [0, 1, 2])
    assert every.treatment_dates == dates and every.log_data == [None, "x", None]


# --- the device's last_log_file_id ----------------------------------------------------


def test_last_log_file_id_follows_the_highest_completed_log_of_each_device():
    result = plan(
        entry(1, 12),
        entry(1, 30),
        entry(1, 20),
        entry(1, 4, device_id=DEVICE + 1),
        entry(None, 99),  # an unfinished session's log is not uploaded yet
    )
    assert result.last_log_file_ids == {DEVICE: 30, DEVICE + 1: 4}


def test_a_completed_temporary_records_log_counts_for_last_log_file_id():
    temporary = stored(5, 40, is_temp=True)
    result = plan(entry(1, 40), pending=[temporary], files=[temporary])
    assert result.last_log_file_ids == {DEVICE: 40}
