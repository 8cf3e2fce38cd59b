"""DevlogService: seed 000 "기기 사용 기록 업로드" (both body shapes), REST and gRPC."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import grpc
import pytest
from google.protobuf import struct_pb2

from devicehub.v1 import devlog_pb2 as pb
from devicehub.v1 import devlog_pb2_grpc

from api_client import connect, create_child, metadata, new_device, query_database
from lux_uploads import DEVLOG_SAVED as SAVED
from lux_uploads import legacy_entry

DEVLOG = "/api/v1/lux/device/devlog"
TEMP_SAVED = {"statusCode": 200, "message": "Temp devlog saved successfully"}
MISSING_ID = 2**31 - 1


def entry(
    lux,
    treatment_date: str = "2025-02-21T15:48:49",
    finish_flag=None,
    last_intensity: int = 2,
    treatment_time: int = 255555,
    log_file_id: int | None = None,
    **overrides,
) -> dict:
    """One "통일된 API" log entry for the lux fixture's child and device."""
    body = {
        "real_user_id": lux.child["id"],
        "device_id": lux.device["id"],
        "unique_id": lux.device["unique_id"],
        "detail_data": {
            "treatment_date": treatment_date,
            "finish_flag": finish_flag,
            "last_intensity": last_intensity,
            "treatment_time": treatment_time,
        },
    }
    if log_file_id is not None:
        body["log_file_id"] = log_file_id
    body.update(overrides)
    return body


def completed(lux, log_file_id: int, day: int = 14, **detail) -> dict:
    return entry(
        lux,
        treatment_date=f"2025-02-{day:02d}T15:48:49",
        finish_flag=2,
        last_intensity=25,
        treatment_time=500000,
        log_file_id=log_file_id,
        **detail,
    )


def upload(stack, lux, *entries, token: str | None = None):
    return stack.request("POST", DEVLOG, token or lux.token, json={"log_arrays": list(entries)})


def answer(response) -> tuple[int, dict]:
    return response.status_code, response.json()


def moment(value) -> dt.datetime:
    """A stored TIMESTAMP: a datetime on PostgreSQL, ISO text on SQLite."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def rows(stack, child_id: int) -> list[dict]:
    """The child's devlog rows, oldest first."""
    columns = (
        "device_id",
        "log_file_id",
        "treatment_date",
        "finish_flag",
        "last_intensity",
        "treatment_time",
        "movement",
        "log_data",
        "is_temp",
    )
    found = query_database(
        stack,
        f"SELECT {', '.join(columns)} FROM devlog WHERE child_id = ? ORDER BY id",
        (child_id,),
    )
    result = []
    for row in found:
        record = dict(zip(columns, row, strict=True))
        record["treatment_date"] = moment(record["treatment_date"])
        record["is_temp"] = bool(record["is_temp"])
        result.append(record)
    return result


def temp_rows(stack, child_id: int) -> list[dict]:
    return [row for row in rows(stack, child_id) if row["is_temp"]]


def last_log_file_id(stack, lux) -> int:
    response = stack.request(
        "GET",
        "/api/v1/lux/device/child-device",
        lux.token,
        params={"real_user_id": lux.child["id"]},
    )
    assert response.status_code == 200, response.text
    return response.json()["last_log_file_id"]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# --- the documented flow ----------------------------------------------------------


def test_documented_temp_examples_in_order(stack, lux):
    child, device = lux.child["id"], lux.device["id"]
    # 1. temporary record: treatment_date stored 30 s earlier than sent
    assert answer(upload(stack, lux, entry(lux))) == (200, TEMP_SAVED)
    (temp,) = rows(stack, child)
    assert temp == {
        "device_id": device,
        "log_file_id": None,
        "treatment_date": at("2025-02-21T15:48:19"),
        "finish_flag": None,
        "last_intensity": 2,
        "treatment_time": 255555,
        "movement": None,
        "log_data": None,
        "is_temp": True,
    }
    # 2. update of the temporary record: still one row, new values
    update = entry(lux, "2025-02-21T15:49:49", last_intensity=7, treatment_time=300)
    assert answer(upload(stack, lux, update)) == (200, TEMP_SAVED)
    (temp,) = rows(stack, child)
    assert temp["is_temp"] is True
    assert temp["treatment_date"] == at("2025-02-21T15:49:19")
    assert (temp["last_intensity"], temp["treatment_time"]) == (7, 300)
    # 3. completion: the temporary row becomes the completed row, date as sent
    assert answer(upload(stack, lux, completed(lux, 1))) == (200, SAVED)
    assert rows(stack, child) == [
        {
            "device_id": device,
            "log_file_id": 1,
            "treatment_date": at("2025-02-14T15:48:49"),
            "finish_flag": 2,
            "last_intensity": 25,
            "treatment_time": 500000,
            "movement": None,
            "log_data": None,
            "is_temp": False,
        }
    ]
    assert last_log_file_id(stack, lux) == 1
    # 4. the multi-record example as documented: log_file_id 1 is already stored
    # (skipped), log_file_id 2 is new
    assert answer(upload(stack, lux, completed(lux, 1), completed(lux, 2, day=15))) == (
        200,
        SAVED,
    )
    stored = rows(stack, child)
    assert [(r["log_file_id"], r["treatment_date"], r["is_temp"]) for r in stored] == [
        (1, at("2025-02-14T15:48:49"), False),
        (2, at("2025-02-15T15:48:49"), False),
    ]
    assert last_log_file_id(stack, lux) == 2


def test_first_entry_of_multi_upload_overwrites_pending_temp(stack, lux):
    child = lux.child["id"]
    assert answer(upload(stack, lux, entry(lux))) == (200, TEMP_SAVED)
    response = upload(
        stack,
        lux,
        completed(lux, 1),
        completed(lux, 2, day=15),
        completed(lux, 3, day=16),
    )
    assert answer(response) == (200, SAVED)
    stored = rows(stack, child)
    assert temp_rows(stack, child) == []
    assert len(stored) == 3
    # the pending temp row (the oldest id) now holds the first entry
    assert (stored[0]["log_file_id"], stored[0]["treatment_date"]) == (
        1,
        at("2025-02-14T15:48:49"),
    )
    assert [(r["log_file_id"], r["finish_flag"], r["treatment_date"]) for r in stored[1:]] == [
        (2, 2, at("2025-02-15T15:48:49")),
        (3, 2, at("2025-02-16T15:48:49")),
    ]


def test_temp_sent_with_log_file_id_is_completed_by_that_log(stack, lux):
    # The document makes log_file_id optional for a temp record, so the app may send it;
    # the completion then carries the same log_file_id and must still complete the temp.
    assert answer(upload(stack, lux, entry(lux, log_file_id=1))) == (200, TEMP_SAVED)
    assert answer(upload(stack, lux, completed(lux, 1))) == (200, SAVED)
    stored = rows(stack, lux.child["id"])
    assert [(r["log_file_id"], r["finish_flag"], r["is_temp"]) for r in stored] == [(1, 2, False)]
    assert stored[0]["treatment_date"] == at("2025-02-14T15:48:49")


def test_temp_update_sent_with_log_file_id_updates_the_temp(stack, lux):
    assert answer(upload(stack, lux, entry(lux, log_file_id=1))) == (200, TEMP_SAVED)
    update = entry(lux, "2025-02-21T15:58:49", last_intensity=9, log_file_id=1)
    assert answer(upload(stack, lux, update)) == (200, TEMP_SAVED)
    (temp,) = rows(stack, lux.child["id"])
    assert temp["is_temp"] is True
    assert (temp["treatment_date"], temp["last_intensity"]) == (at("2025-02-21T15:58:19"), 9)


def test_completed_upload_without_pending_temp_creates_rows(stack, lux):
    response = upload(stack, lux, completed(lux, 4), completed(lux, 5, day=15))
    assert answer(response) == (200, SAVED)
    stored = rows(stack, lux.child["id"])
    assert [(r["log_file_id"], r["is_temp"]) for r in stored] == [(4, False), (5, False)]


def test_temp_date_with_utc_offset_is_stored_in_utc(stack, lux):
    assert answer(upload(stack, lux, entry(lux, "2025-02-21T15:48:49+09:00"))) == (
        200,
        TEMP_SAVED,
    )
    (temp,) = temp_rows(stack, lux.child["id"])
    assert temp["treatment_date"] == at("2025-02-21T06:48:19")


def test_earlier_bare_array_body_is_accepted_and_stores_movement_and_log_data(stack, lux):
    document_example = [legacy_entry(lux)]
    response = stack.request("POST", DEVLOG, lux.token, json=document_example)
    assert answer(response) == (200, SAVED)
    assert rows(stack, lux.child["id"]) == [
        {
            "device_id": lux.device["id"],
            "log_file_id": 0,
            "treatment_date": at("2024-12-05T14:06:47"),
            "finish_flag": 2,
            "last_intensity": 2,
            "treatment_time": 416,
            "movement": 1,
            "log_data": "",
            "is_temp": False,
        }
    ]


def test_earlier_body_with_null_string_finish_flag_is_a_temp_record(stack, lux):
    legacy = legacy_entry(lux)
    legacy["detail_data"]["finish_flag"] = "null"
    del legacy["log_file_id"]
    response = stack.request("POST", DEVLOG, lux.token, json=[legacy])
    assert answer(response) == (200, TEMP_SAVED)
    (temp,) = rows(stack, lux.child["id"])
    assert temp["is_temp"] is True
    assert temp["treatment_date"] == at("2024-12-05T14:06:17")


# --- last_log_file_id -----------------------------------------------------------------


def test_last_log_file_id_follows_highest_stored_and_never_goes_down(stack, lux):
    assert last_log_file_id(stack, lux) == 0
    assert answer(upload(stack, lux, completed(lux, 3), completed(lux, 7, day=15))) == (
        200,
        SAVED,
    )
    assert last_log_file_id(stack, lux) == 7
    assert answer(upload(stack, lux, completed(lux, 5, day=16))) == (200, SAVED)
    assert last_log_file_id(stack, lux) == 7
    assert answer(upload(stack, lux, completed(lux, 12, day=17))) == (200, SAVED)
    assert last_log_file_id(stack, lux) == 12
    assert sorted(r["log_file_id"] for r in rows(stack, lux.child["id"])) == [3, 5, 7, 12]


def test_last_log_file_id_follows_bare_array_uploads(stack, lux):
    body = [legacy_entry(lux, 9), legacy_entry(lux, 4)]
    assert answer(stack.request("POST", DEVLOG, lux.token, json=body)) == (200, SAVED)
    assert last_log_file_id(stack, lux) == 9


# --- idempotent retries -----------------------------------------------------------------


def test_retried_upload_creates_no_duplicates(stack, lux):
    batch = [completed(lux, 1), completed(lux, 2, day=15), completed(lux, 3, day=16)]
    for _ in range(3):
        assert answer(upload(stack, lux, *batch)) == (200, SAVED)
    assert [r["log_file_id"] for r in rows(stack, lux.child["id"])] == [1, 2, 3]
    assert last_log_file_id(stack, lux) == 3


def test_retried_bare_array_upload_creates_no_duplicates(stack, lux):
    body = [legacy_entry(lux, 0), legacy_entry(lux, 1)]
    for _ in range(2):
        assert answer(stack.request("POST", DEVLOG, lux.token, json=body)) == (200, SAVED)
    assert [r["log_file_id"] for r in rows(stack, lux.child["id"])] == [0, 1]


def test_retry_in_the_other_body_shape_creates_no_duplicate(stack, lux):
    legacy = legacy_entry(lux, 6)
    assert answer(stack.request("POST", DEVLOG, lux.token, json=[legacy])) == (200, SAVED)
    assert answer(upload(stack, lux, legacy)) == (200, SAVED)
    assert len(rows(stack, lux.child["id"])) == 1


def test_retried_completion_keeps_the_completed_row(stack, lux):
    assert answer(upload(stack, lux, entry(lux))) == (200, TEMP_SAVED)
    assert answer(upload(stack, lux, completed(lux, 1))) == (200, SAVED)
    assert answer(upload(stack, lux, completed(lux, 1))) == (200, SAVED)
    stored = rows(stack, lux.child["id"])
    assert [(r["log_file_id"], r["is_temp"]) for r in stored] == [(1, False)]


def test_same_log_file_id_twice_in_one_batch_is_stored_once(stack, lux):
    response = upload(stack, lux, completed(lux, 8), completed(lux, 8, day=20))
    assert answer(response) == (200, SAVED)
    (stored,) = rows(stack, lux.child["id"])
    assert (stored["log_file_id"], stored["treatment_date"]) == (8, at("2025-02-14T15:48:49"))


# --- one request is one transaction -------------------------------------------------


def _bad_finish_flag(stack, lux) -> dict:
    bad = completed(lux, 12, day=16)
    bad["detail_data"]["finish_flag"] = 9
    return bad


def _unbound_device(stack, lux) -> dict:
    other = new_device(stack)
    return completed(lux, 12, day=16, device_id=other["id"], unique_id=other["unique_id"])


def _bad_date(stack, lux) -> dict:
    bad = completed(lux, 12, day=16)
    bad["detail_data"]["treatment_date"] = "2025-02-30T25:61:00"
    return bad


@pytest.mark.parametrize(
    ("make_bad", "status", "detail"),
    [
        (_bad_finish_flag, 400, "finish_flag must be 1 to 6 or null"),
        (_unbound_device, 409, "Not Connected Device"),
        (
            _bad_date,
            400,
            "treatment_date must be an ISO 8601 date and time, e.g. 2025-02-21T15:48:49",
        ),
    ],
    ids=["finish_flag_9", "unbound_device", "malformed_date"],
)
def test_batch_with_bad_third_entry_stores_nothing(stack, lux, make_bad, status, detail):
    assert answer(upload(stack, lux, entry(lux))) == (200, TEMP_SAVED)
    assert answer(upload(stack, lux, completed(lux, 5, day=10))) == (200, SAVED)
    assert answer(upload(stack, lux, entry(lux, "2025-02-21T16:00:00"))) == (200, TEMP_SAVED)
    before = rows(stack, lux.child["id"])
    batch = [completed(lux, 10), completed(lux, 11, day=15), make_bad(stack, lux)]
    assert answer(upload(stack, lux, *batch)) == (status, {"detail": detail})
    assert rows(stack, lux.child["id"]) == before
    assert len(temp_rows(stack, lux.child["id"])) == 1
    assert last_log_file_id(stack, lux) == 5


def test_bare_array_batch_with_bad_third_entry_stores_nothing(stack, lux):
    bad = legacy_entry(lux, 3)
    bad["detail_data"]["finish_flag"] = "9"
    body = [legacy_entry(lux, 1), legacy_entry(lux, 2), bad]
    response = stack.request("POST", DEVLOG, lux.token, json=body)
    assert answer(response) == (400, {"detail": "finish_flag must be 1 to 6 or null"})
    assert rows(stack, lux.child["id"]) == []
    assert last_log_file_id(stack, lux) == 0


# --- documented errors ------------------------------------------------------------------


def test_another_users_child_is_401_not_authorized_user(stack, lux):
    _, stranger = stack.new_user()
    response = upload(stack, lux, completed(lux, 1), token=stranger)
    assert answer(response) == (401, {"detail": "Not authorized user"})
    assert rows(stack, lux.child["id"]) == []


def test_child_of_another_user_in_own_request_is_401(stack, lux):
    _, stranger = stack.new_user()
    their_child = create_child(stack, stranger)
    response = upload(
        stack, lux, completed(lux, 1), completed(lux, 2, real_user_id=their_child["id"])
    )
    assert answer(response) == (401, {"detail": "Not authorized user"})
    assert rows(stack, lux.child["id"]) == []


def test_nonexistent_child_is_404_not_found_user(stack, lux):
    response = upload(stack, lux, completed(lux, 1, real_user_id=MISSING_ID))
    assert answer(response) == (404, {"detail": "Not Found User"})


def test_nonexistent_device_is_404_not_found_device(stack, lux):
    response = upload(stack, lux, completed(lux, 1, device_id=MISSING_ID))
    assert answer(response) == (404, {"detail": "Not Found Device"})
    assert rows(stack, lux.child["id"]) == []


def test_unique_id_of_another_device_is_404_not_found_device(stack, lux):
    other = new_device(stack)
    response = upload(stack, lux, completed(lux, 1, unique_id=other["unique_id"]))
    assert answer(response) == (404, {"detail": "Not Found Device"})
    response = upload(stack, lux, completed(lux, 1, unique_id="withnox_temp"))
    assert answer(response) == (404, {"detail": "Not Found Device"})
    assert rows(stack, lux.child["id"]) == []


def test_unbound_device_is_409_not_connected_device(stack, lux):
    other = new_device(stack)
    bad = completed(lux, 1, device_id=other["id"], unique_id=other["unique_id"])
    assert answer(upload(stack, lux, bad)) == (409, {"detail": "Not Connected Device"})
    assert rows(stack, lux.child["id"]) == []


def test_device_bound_to_a_sibling_is_409_not_connected_device(stack, lux):
    sibling = create_child(stack, lux.token, first_name="Jun")
    other = new_device(stack)
    assert connect(stack, lux.token, other, sibling["id"]).status_code == 200
    bad = completed(lux, 1, device_id=other["id"], unique_id=other["unique_id"])
    assert answer(upload(stack, lux, bad)) == (409, {"detail": "Not Connected Device"})
    assert rows(stack, lux.child["id"]) == [] and rows(stack, sibling["id"]) == []


def test_children_are_checked_before_devices(stack, lux):
    _, stranger = stack.new_user()
    their_child = create_child(stack, stranger)
    batch = [
        completed(lux, 1, device_id=MISSING_ID),
        completed(lux, 2, real_user_id=their_child["id"]),
    ]
    assert answer(upload(stack, lux, *batch)) == (401, {"detail": "Not authorized user"})
    assert rows(stack, lux.child["id"]) == []


def test_children_are_checked_in_id_order(stack, lux):
    _, stranger = stack.new_user()
    their_child = create_child(stack, stranger)  # an id below MISSING_ID
    missing = completed(lux, 1, real_user_id=MISSING_ID)
    theirs = completed(lux, 2, real_user_id=their_child["id"])
    for batch in ([missing, theirs], [theirs, missing]):
        assert answer(upload(stack, lux, *batch)) == (401, {"detail": "Not authorized user"})
    assert rows(stack, lux.child["id"]) == []


def test_device_errors_follow_the_order_of_the_entries(stack, lux):
    other = new_device(stack)
    unbound = completed(lux, 1, device_id=other["id"], unique_id=other["unique_id"])
    wrong_unique_id = completed(lux, 2, unique_id=other["unique_id"])
    assert answer(upload(stack, lux, completed(lux, 3), unbound, wrong_unique_id)) == (
        409,
        {"detail": "Not Connected Device"},
    )
    assert answer(upload(stack, lux, completed(lux, 3), wrong_unique_id, unbound)) == (
        404,
        {"detail": "Not Found Device"},
    )
    assert rows(stack, lux.child["id"]) == []


def test_one_upload_stores_the_logs_of_two_children_and_their_devices(stack, lux):
    sibling = create_child(stack, lux.token, first_name="Jun")
    theirs = new_device(stack)
    assert connect(stack, lux.token, theirs, sibling["id"]).status_code == 200
    of_sibling = {
        "real_user_id": sibling["id"],
        "device_id": theirs["id"],
        "unique_id": f"  {theirs['unique_id']} ",  # compared stripped, as before
    }
    batch = [
        completed(lux, 7),
        completed(lux, 4, **of_sibling),
        entry(lux, **of_sibling),
        completed(lux, 5, day=15),
        completed(lux, 9, day=15, **of_sibling),
    ]
    assert answer(upload(stack, lux, *batch)) == (200, SAVED)
    mine, siblings = rows(stack, lux.child["id"]), rows(stack, sibling["id"])
    assert [(r["log_file_id"], r["is_temp"]) for r in mine] == [(7, False), (5, False)]
    assert [(r["device_id"], r["log_file_id"], r["is_temp"]) for r in siblings] == [
        (theirs["id"], None, True),  # the temporary record is written before the inserts
        (theirs["id"], 4, False),
        (theirs["id"], 9, False),
    ]
    assert last_log_file_id(stack, lux) == 7
    response = stack.request(
        "GET", "/api/v1/lux/device/child-device", lux.token, params={"real_user_id": sibling["id"]}
    )
    assert response.json()["last_log_file_id"] == 9


def test_bare_array_errors_use_the_documented_bodies(stack, lux):
    stranger_body = [legacy_entry(lux)]
    _, stranger = stack.new_user()
    response = stack.request("POST", DEVLOG, stranger, json=stranger_body)
    assert answer(response) == (401, {"detail": "Not authorized user"})
    missing = legacy_entry(lux) | {"device_id": MISSING_ID}
    response = stack.request("POST", DEVLOG, lux.token, json=[missing])
    assert answer(response) == (404, {"detail": "Not Found Device"})


def test_missing_token_is_401(stack, lux):
    response = stack.request("POST", DEVLOG, json={"log_arrays": [completed(lux, 1)]})
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}
    assert rows(stack, lux.child["id"]) == []


# --- bad input ------------------------------------------------------------------------


def _with_detail(lux, **detail) -> dict:
    base = completed(lux, 1)
    base["detail_data"].update(detail)
    return base


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"finish_flag": 0}, "finish_flag must be 1 to 6 or null"),
        ({"finish_flag": 7}, "finish_flag must be 1 to 6 or null"),
        ({"finish_flag": "abc"}, "finish_flag must be 1 to 6 or null"),
        ({"finish_flag": 2.5}, "finish_flag must be 1 to 6 or null"),
        ({"finish_flag": True}, "finish_flag must be 1 to 6 or null"),
        ({"treatment_time": -1}, "log_arrays[0]: treatment_time must not be negative"),
        ({"last_intensity": -1}, "log_arrays[0]: last_intensity must not be negative"),
        (
            {"treatment_date": "yesterday"},
            "treatment_date must be an ISO 8601 date and time, e.g. 2025-02-21T15:48:49",
        ),
    ],
    ids=[
        "finish_flag_0",
        "finish_flag_7",
        "finish_flag_abc",
        "finish_flag_2.5",
        "finish_flag_true",
        "negative_treatment_time",
        "negative_last_intensity",
        "date_yesterday",
    ],
)
def test_invalid_detail_is_400_and_writes_nothing(stack, lux, change, detail):
    response = upload(stack, lux, _with_detail(lux, **change))
    assert answer(response) == (400, {"detail": detail})
    assert rows(stack, lux.child["id"]) == []
    assert last_log_file_id(stack, lux) == 0


def test_negative_log_file_id_is_400(stack, lux):
    response = upload(stack, lux, completed(lux, 1) | {"log_file_id": -1})
    assert answer(response) == (400, {"detail": "log_arrays[0]: log_file_id must not be negative"})
    assert rows(stack, lux.child["id"]) == []


@pytest.mark.parametrize("body", [{"log_arrays": []}, [], {}], ids=["empty", "bare_empty", "none"])
def test_empty_upload_is_400(stack, lux, body):
    response = stack.request("POST", DEVLOG, lux.token, json=body)
    assert answer(response) == (400, {"detail": "log_arrays must contain at least one log"})


def test_more_than_1000_entries_is_400_and_writes_nothing(stack, lux):
    batch = [completed(lux, i) for i in range(1001)]
    response = upload(stack, lux, *batch)
    assert answer(response) == (400, {"detail": "log_arrays may contain at most 1000 logs"})
    assert rows(stack, lux.child["id"]) == []
    assert last_log_file_id(stack, lux) == 0


def test_exactly_1000_entries_are_stored(stack, lux):
    batch = [completed(lux, i) for i in range(1000)]
    assert answer(upload(stack, lux, *batch)) == (200, SAVED)
    assert len(rows(stack, lux.child["id"])) == 1000
    assert last_log_file_id(stack, lux) == 999


@pytest.mark.parametrize(
    "change",
    [
        {"treatment_time": "abc"},
        {"last_intensity": 1.5},
        {"treatment_date": 20250221},
        {"treatment_time": 2**31},
    ],
    ids=["time_abc", "intensity_float", "date_number", "time_overflow"],
)
def test_wrong_json_types_are_400_malformed(stack, lux, change):
    response = upload(stack, lux, _with_detail(lux, **change))
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail"}
    assert body["detail"].startswith("Malformed request")
    assert rows(stack, lux.child["id"]) == []


def test_unparsable_json_is_400_malformed(stack, lux):
    response = stack.request(
        "POST",
        DEVLOG,
        lux.token,
        data='{"log_arrays": [',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed request")


# --- concurrency ----------------------------------------------------------------------


def test_concurrent_temp_uploads_keep_one_temp_record(stack, lux):
    threads = 8
    barrier = threading.Barrier(threads)
    results: list = [None] * threads

    def send(index: int) -> None:
        body = entry(lux, "2025-02-21T15:48:49", last_intensity=index, treatment_time=index)
        barrier.wait()
        response = upload(stack, lux, body)
        results[index] = answer(response)

    workers = [threading.Thread(target=send, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [(200, TEMP_SAVED)] * threads
    stored = rows(stack, lux.child["id"])
    assert len(stored) == 1 and stored[0]["is_temp"] is True
    assert stored[0]["last_intensity"] in range(threads)


def test_concurrent_identical_uploads_store_each_log_once(stack, lux):
    threads = 8
    barrier = threading.Barrier(threads)
    batch = [completed(lux, 1), completed(lux, 2, day=15)]
    results: list = [None] * threads

    def send(index: int) -> None:
        barrier.wait()
        results[index] = answer(upload(stack, lux, *batch))

    workers = [threading.Thread(target=send, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [(200, SAVED)] * threads
    assert [r["log_file_id"] for r in rows(stack, lux.child["id"])] == [1, 2]


# --- history ----------------------------------------------------------------------------


def test_unbinding_keeps_the_devlog_history(stack, lux):
    assert answer(upload(stack, lux, completed(lux, 1), completed(lux, 2, day=15))) == (
        200,
        SAVED,
    )
    before = rows(stack, lux.child["id"])
    response = stack.request(
        "PATCH",
        "/api/v1/lux/device/un-connect",
        lux.token,
        params={"unique_id": lux.device["unique_id"], "real_user_id": lux.child["id"]},
    )
    assert response.status_code == 200, response.text
    assert rows(stack, lux.child["id"]) == before
    assert len(before) == 2
    # and the unbound device can no longer receive logs for the child
    assert answer(upload(stack, lux, completed(lux, 3))) == (
        409,
        {"detail": "Not Connected Device"},
    )


# --- gRPC -------------------------------------------------------------------------------


def grpc_entry(lux, date: str, flag: int | None, log_file_id: int | None = None, **kw):
    finish_flag = (
        struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
        if flag is None
        else struct_pb2.Value(number_value=flag)
    )
    fields = {
        "real_user_id": lux.child["id"],
        "device_id": lux.device["id"],
        "unique_id": lux.device["unique_id"],
        "detail_data": pb.DevlogDetail(
            treatment_date=date,
            finish_flag=finish_flag,
            last_intensity=kw.pop("last_intensity", 2),
            treatment_time=kw.pop("treatment_time", 255555),
        ),
    }
    if log_file_id is not None:
        fields["log_file_id"] = log_file_id
    fields.update(kw)
    return pb.DevlogEntry(**fields)


def test_documented_flow_over_grpc(stack, lux):
    stub = devlog_pb2_grpc.DevlogServiceStub(stack.channel())
    md = metadata(lux.token)
    child = lux.child["id"]

    def send(*entries):
        reply = stub.UploadDevlogs(pb.UploadDevlogsRequest(log_arrays=entries), metadata=md)
        return reply.statusCode, reply.message

    temp_saved = (200, "Temp devlog saved successfully")
    saved = (200, "Devlog saved successfully")
    assert send(grpc_entry(lux, "2025-02-21T15:48:49", None)) == temp_saved
    (temp,) = rows(stack, child)
    assert temp["is_temp"] and temp["treatment_date"] == at("2025-02-21T15:48:19")
    assert send(grpc_entry(lux, "2025-02-21T15:50:49", None, last_intensity=9)) == temp_saved
    (temp,) = rows(stack, child)
    assert (temp["treatment_date"], temp["last_intensity"]) == (at("2025-02-21T15:50:19"), 9)
    done = grpc_entry(
        lux, "2025-02-14T15:48:49", 2, log_file_id=1, last_intensity=25, treatment_time=500000
    )
    assert send(done) == saved
    (row,) = rows(stack, child)
    assert (row["is_temp"], row["log_file_id"], row["finish_flag"]) == (False, 1, 2)
    assert row["treatment_date"] == at("2025-02-14T15:48:49")
    # a temp, then a multi-record upload whose first entry completes it; a retry is a no-op
    assert send(grpc_entry(lux, "2025-02-22T10:00:30", None)) == temp_saved
    batch = [
        grpc_entry(lux, "2025-02-22T10:00:00", 1, log_file_id=2),
        grpc_entry(lux, "2025-02-23T10:00:00", 3, log_file_id=3),
    ]
    assert send(*batch) == saved
    assert send(*batch) == saved
    stored = rows(stack, child)
    assert [(r["log_file_id"], r["finish_flag"], r["is_temp"]) for r in stored] == [
        (1, 2, False),
        (2, 1, False),
        (3, 3, False),
    ]
    assert last_log_file_id(stack, lux) == 3


def test_grpc_string_finish_flag_is_accepted(stack, lux):
    stub = devlog_pb2_grpc.DevlogServiceStub(stack.channel())
    legacy = grpc_entry(lux, "2024-12-05T14:06:47", None, log_file_id=0)
    legacy.detail_data.finish_flag.string_value = "2"
    legacy.detail_data.movement = 1
    legacy.detail_data.log_data = ""
    reply = stub.UploadDevlogs(
        pb.UploadDevlogsRequest(log_arrays=[legacy]), metadata=metadata(lux.token)
    )
    assert (reply.statusCode, reply.message) == (200, "Devlog saved successfully")
    (row,) = rows(stack, lux.child["id"])
    assert (row["finish_flag"], row["movement"], row["log_data"]) == (2, 1, "")


def test_grpc_errors_carry_status_codes(stack, lux):
    stub = devlog_pb2_grpc.DevlogServiceStub(stack.channel())
    md = metadata(lux.token)
    _, stranger = stack.new_user()
    other = new_device(stack)
    cases = [
        (stranger, {}, grpc.StatusCode.PERMISSION_DENIED, "Not authorized user"),
        (lux.token, {"real_user_id": MISSING_ID}, grpc.StatusCode.NOT_FOUND, "Not Found User"),
        (lux.token, {"device_id": MISSING_ID}, grpc.StatusCode.NOT_FOUND, "Not Found Device"),
        (
            lux.token,
            {"device_id": other["id"], "unique_id": other["unique_id"]},
            grpc.StatusCode.FAILED_PRECONDITION,
            "Not Connected Device",
        ),
        (
            lux.token,
            {"treatment_time": -1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "log_arrays[0]: treatment_time must not be negative",
        ),
    ]
    for token, change, code, detail in cases:
        bad = grpc_entry(lux, "2025-02-14T15:48:49", 2, log_file_id=1, **change)
        with pytest.raises(grpc.RpcError) as error:
            stub.UploadDevlogs(pb.UploadDevlogsRequest(log_arrays=[bad]), metadata=metadata(token))
        assert (error.value.code(), error.value.details()) == (code, detail)
    with pytest.raises(grpc.RpcError) as error:
        stub.UploadDevlogs(pb.UploadDevlogsRequest(), metadata=md)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rows(stack, lux.child["id"]) == []


@pytest.mark.parametrize(
    ("pending_temp", "message"),
    [(False, "Create Device Log Failed"), (True, "Update Device Log Failed")],
)
def test_a_write_the_database_refuses_is_the_documented_409(
    stack, lux, in_process_db, pending_temp, message
):
    """Below request validation, the database's own CHECK constraints still hold; a
    refused write is the documented 409 and rolls the request back."""
    from devicehub import devlog
    from devicehub.api.errors import http_status
    from devicehub.errors import Conflict

    child, device = lux.child["id"], lux.device
    entry = devlog.DevlogEntry(
        real_user_id=child,
        device_id=device["id"],
        unique_id=device["unique_id"],
        treatment_date="2025-02-21T15:48:49",
        finish_flag=None,
        last_intensity=1,
        treatment_time=10,
    )
    date = devlog._treatment_date(entry.treatment_date)
    if pending_temp:
        with in_process_db.atomic():
            devlog._store_all(devlog.DevlogUpload.of([entry]), [date])
    before = query_database(
        stack, "SELECT COUNT(*), MAX(treatment_time) FROM devlog WHERE child_id = ?", (child,)
    )
    broken = dataclasses.replace(entry, treatment_time=-5)  # bypasses _validate
    with pytest.raises(Conflict) as error, in_process_db.atomic():
        devlog._store_all(devlog.DevlogUpload.of([broken]), [date])
    assert error.value.message == message
    assert http_status(error.value) == 409
    after = query_database(
        stack, "SELECT COUNT(*), MAX(treatment_time) FROM devlog WHERE child_id = ?", (child,)
    )
    assert after == before
