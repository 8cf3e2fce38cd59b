"""MovementService: seed 000 "기기 IMU 센서 기록 업로드" and reading samples back."""

from __future__ import annotations

import grpc
import pytest

from devicehub.v1 import movement_pb2 as pb
from devicehub.v1 import movement_pb2_grpc

from api_client import connect, create_child, metadata, new_device, query_database
from lux_uploads import MOVEMENT_SAVED as SAVED

MOVEMENT = "/api/v1/lux/device/movement"
MISSING_ID = 2**31 - 1
DOC_START = 1736411840


def samples(start: int, count: int, val=lambda ts: ts % 97) -> list[dict]:
    return [{"val": val(ts), "timestamp": ts} for ts in range(start, start + count)]


def upload(stack, lux, movement_data, token=None, child_id=None, device_id=None):
    return stack.request(
        "POST",
        MOVEMENT,
        token or lux.token,
        json={
            "real_user_id": lux.child["id"] if child_id is None else child_id,
            "device_id": lux.device["id"] if device_id is None else device_id,
            "movement_data": movement_data,
        },
    )


def read(stack, lux, token=None, child_id=None, device_id=None, **params):
    return stack.request(
        "GET",
        MOVEMENT,
        token or lux.token,
        params={
            "device_id": lux.device["id"] if device_id is None else device_id,
            "real_user_id": lux.child["id"] if child_id is None else child_id,
            **params,
        },
    )


def answer(response) -> tuple[int, dict]:
    return response.status_code, response.json()


def stored(stack, device_id: int) -> list[tuple[int, int]]:
    """(ts, val) rows of the device, in ts order, straight from the database."""
    return [
        (int(ts), int(val))
        for ts, val in query_database(
            stack,
            "SELECT ts, val FROM movement_sample WHERE device_id = ? ORDER BY ts",
            (device_id,),
        )
    ]


def count(stack, device_id: int) -> int:
    ((total,),) = query_database(
        stack, "SELECT COUNT(*) FROM movement_sample WHERE device_id = ?", (device_id,)
    )
    return int(total)


def test_documented_example_is_saved_and_read_back(stack, lux):
    document_example = [{"val": 10, "timestamp": DOC_START + i} for i in range(11)]
    more = [{"val": -3 + i, "timestamp": DOC_START + 11 + i} for i in range(5)]
    # sent out of order: read back in timestamp order
    movement_data = list(reversed(more)) + document_example
    assert answer(upload(stack, lux, movement_data)) == (200, SAVED)
    expected = document_example + more
    response = read(stack, lux)
    assert answer(response) == (200, {"samples": expected, "next_page_token": ""})
    # timestamps and values are JSON numbers, not strings
    assert '"timestamp":1736411840' in response.text.replace(" ", "")
    assert all(
        type(s["timestamp"]) is int and type(s["val"]) is int for s in response.json()["samples"]
    )
    assert stored(stack, lux.device["id"]) == [(s["timestamp"], s["val"]) for s in expected]


def test_documented_example_over_grpc(stack, lux):
    stub = movement_pb2_grpc.MovementServiceStub(stack.channel())
    md = metadata(lux.token)
    batch = [pb.MovementSample(val=10 + i, timestamp=DOC_START + i) for i in range(12)]
    reply = stub.UploadMovement(
        pb.UploadMovementRequest(
            real_user_id=lux.child["id"],
            device_id=lux.device["id"],
            movement_data=list(reversed(batch)),
        ),
        metadata=md,
    )
    assert (reply.statusCode, reply.message) == (200, "Movement log saved successfully")
    listed = stub.ListMovementSamples(
        pb.ListMovementSamplesRequest(device_id=lux.device["id"], real_user_id=lux.child["id"]),
        metadata=md,
    )
    assert [(s.timestamp, s.val) for s in listed.samples] == [
        (DOC_START + i, 10 + i) for i in range(12)
    ]
    assert listed.next_page_token == ""
    # and the REST read sees the same samples
    rest = read(stack, lux).json()["samples"]
    assert [(s["timestamp"], s["val"]) for s in rest] == [(s.timestamp, s.val) for s in batch]


def test_grpc_pagination_and_range(stack, lux):
    stub = movement_pb2_grpc.MovementServiceStub(stack.channel())
    md = metadata(lux.token)
    assert answer(upload(stack, lux, samples(500, 30))) == (200, SAVED)
    seen, token = [], ""
    while True:
        page = stub.ListMovementSamples(
            pb.ListMovementSamplesRequest(
                device_id=lux.device["id"],
                real_user_id=lux.child["id"],
                start=505,
                end=525,
                page_size=6,
                page_token=token,
            ),
            metadata=md,
        )
        assert len(page.samples) <= 6
        seen += [s.timestamp for s in page.samples]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(505, 525))


def test_retried_batch_stores_no_duplicates(stack, lux):
    batch = samples(1000, 20)
    for _ in range(3):
        assert answer(upload(stack, lux, batch)) == (200, SAVED)
    assert count(stack, lux.device["id"]) == 20
    assert stored(stack, lux.device["id"]) == [(s["timestamp"], s["val"]) for s in batch]


def test_overlapping_batch_adds_only_new_samples(stack, lux):
    first = samples(2000, 20, val=lambda ts: 1)
    overlap = samples(2010, 20, val=lambda ts: 2)
    assert answer(upload(stack, lux, first)) == (200, SAVED)
    assert answer(upload(stack, lux, overlap)) == (200, SAVED)
    # already stored samples are skipped, not overwritten
    assert stored(stack, lux.device["id"]) == [(ts, 1) for ts in range(2000, 2020)] + [
        (ts, 2) for ts in range(2020, 2030)
    ]


def test_duplicates_inside_one_batch_are_stored_once(stack, lux):
    batch = [
        {"val": 1, "timestamp": 3000},
        {"val": 2, "timestamp": 3001},
        {"val": 3, "timestamp": 3000},
        {"val": 4, "timestamp": 3001},
        {"val": 5, "timestamp": 3002},
    ]
    assert answer(upload(stack, lux, batch)) == (200, SAVED)
    rows = stored(stack, lux.device["id"])
    assert [ts for ts, _ in rows] == [3000, 3001, 3002]
    assert rows[2] == (3002, 5)


def test_time_range_start_inclusive_end_exclusive(stack, lux):
    assert answer(upload(stack, lux, samples(4000, 20))) == (200, SAVED)

    def timestamps(**params) -> list[int]:
        response = read(stack, lux, **params)
        assert response.status_code == 200, response.text
        assert response.json()["next_page_token"] == ""
        return [s["timestamp"] for s in response.json()["samples"]]

    assert timestamps(start=4005, end=4010) == list(range(4005, 4010))
    assert timestamps(start=4015) == list(range(4015, 4020))
    assert timestamps(start=4015, end=0) == list(range(4015, 4020))
    assert timestamps(end=4003) == [4000, 4001, 4002]
    assert timestamps(start=4019, end=4020) == [4019]
    assert timestamps(start=4010, end=4010) == []
    assert timestamps(start=5000) == []


def test_pagination_covers_everything_exactly_once(stack, lux):
    batch = samples(6000, 25)
    assert answer(upload(stack, lux, batch)) == (200, SAVED)
    pages, token = [], ""
    while True:
        params = {"page_size": 10}
        if token:
            params["page_token"] = token
        response = read(stack, lux, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["samples"])
        token = body["next_page_token"]
        if not token:
            break
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [s for page in pages for s in page] == batch


def test_pagination_with_range_and_exact_page_boundary(stack, lux):
    assert answer(upload(stack, lux, samples(7000, 40))) == (200, SAVED)
    seen, token, calls = [], "", 0
    while True:
        params = {"start": 7010, "end": 7030, "page_size": 5}
        if token:
            params["page_token"] = token
        body = read(stack, lux, **params).json()
        seen += [s["timestamp"] for s in body["samples"]]
        token, calls = body["next_page_token"], calls + 1
        if not token:
            break
    assert seen == list(range(7010, 7030))
    assert calls in (4, 5)  # a final empty page is allowed, a missing one is not


def test_bad_page_token_is_400(stack, lux):
    response = read(stack, lux, page_token="not-a-token")
    assert answer(response) == (
        400,
        {"detail": "page_token is not a token from an earlier page"},
    )


# --- errors -----------------------------------------------------------------------------


def test_another_users_child_is_401_not_authorized_user(stack, lux):
    _, stranger = stack.new_user()
    response = upload(stack, lux, samples(1, 5), token=stranger)
    assert answer(response) == (401, {"detail": "Not authorized user"})
    assert count(stack, lux.device["id"]) == 0


def test_nonexistent_child_is_404_not_found_user(stack, lux):
    response = upload(stack, lux, samples(1, 5), child_id=MISSING_ID)
    assert answer(response) == (404, {"detail": "Not Found User"})
    assert count(stack, lux.device["id"]) == 0


def test_nonexistent_device_is_404_not_found_device(stack, lux):
    response = upload(stack, lux, samples(1, 5), device_id=MISSING_ID)
    assert answer(response) == (404, {"detail": "Not Found Device"})


def test_unbound_device_is_409_not_connected_device(stack, lux):
    other = new_device(stack)
    response = upload(stack, lux, samples(1, 5), device_id=other["id"])
    assert answer(response) == (409, {"detail": "Not Connected Device"})
    assert count(stack, other["id"]) == 0


def test_device_of_a_sibling_is_409_not_connected_device(stack, lux):
    sibling = create_child(stack, lux.token, first_name="Jun")
    other = new_device(stack)
    assert connect(stack, lux.token, other, sibling["id"]).status_code == 200
    response = upload(stack, lux, samples(1, 5), device_id=other["id"])
    assert answer(response) == (409, {"detail": "Not Connected Device"})
    assert count(stack, other["id"]) == 0


def test_empty_movement_data_is_400(stack, lux):
    response = upload(stack, lux, [])
    assert answer(response) == (400, {"detail": "movement_data must contain at least one sample"})


def test_more_than_10000_samples_is_400_and_stores_nothing(stack, lux):
    response = upload(stack, lux, samples(10_000, 10_001))
    assert answer(response) == (
        400,
        {"detail": "movement_data may contain at most 10000 samples"},
    )
    assert count(stack, lux.device["id"]) == 0


@pytest.mark.parametrize(
    "sample",
    [
        {"val": 1, "timestamp": -1},
        {"val": 1.5, "timestamp": 100},
        {"val": "abc", "timestamp": 100},
        {"val": 2**31, "timestamp": 100},
        {"val": 1, "timestamp": "soon"},
    ],
    ids=["negative_timestamp", "float_val", "string_val", "val_overflow", "string_timestamp"],
)
def test_malformed_sample_is_400_and_stores_nothing(stack, lux, sample):
    response = upload(stack, lux, [*samples(100, 3), sample])
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail"}
    assert body["detail"].startswith("Malformed request")
    assert count(stack, lux.device["id"]) == 0


def test_grpc_errors_carry_status_codes(stack, lux):
    stub = movement_pb2_grpc.MovementServiceStub(stack.channel())
    _, stranger = stack.new_user()
    other = new_device(stack)
    one = [pb.MovementSample(val=1, timestamp=1)]
    cases = [
        (stranger, {}, grpc.StatusCode.PERMISSION_DENIED, "Not authorized user"),
        (lux.token, {"real_user_id": MISSING_ID}, grpc.StatusCode.NOT_FOUND, "Not Found User"),
        (lux.token, {"device_id": MISSING_ID}, grpc.StatusCode.NOT_FOUND, "Not Found Device"),
        (
            lux.token,
            {"device_id": other["id"]},
            grpc.StatusCode.FAILED_PRECONDITION,
            "Not Connected Device",
        ),
        (
            lux.token,
            {"movement_data": []},
            grpc.StatusCode.INVALID_ARGUMENT,
            "movement_data must contain at least one sample",
        ),
    ]
    for token, change, code, detail in cases:
        fields = {
            "real_user_id": lux.child["id"],
            "device_id": lux.device["id"],
            "movement_data": one,
        } | change
        with pytest.raises(grpc.RpcError) as error:
            stub.UploadMovement(pb.UploadMovementRequest(**fields), metadata=metadata(token))
        assert (error.value.code(), error.value.details()) == (code, detail)
    assert count(stack, lux.device["id"]) == 0


# --- volume -----------------------------------------------------------------------------


def test_10000_samples_are_stored_in_one_upload(stack, lux):
    batch = samples(1_700_000_000, 10_000)
    assert answer(upload(stack, lux, batch)) == (200, SAVED)
    assert count(stack, lux.device["id"]) == 10_000
    rows = stored(stack, lux.device["id"])
    assert rows[0] == (1_700_000_000, batch[0]["val"])
    assert rows[-1] == (1_700_009_999, batch[-1]["val"])
    body = read(stack, lux, page_size=10_000).json()
    assert body["samples"] == batch and body["next_page_token"] == ""


# --- reading is private -----------------------------------------------------------------


def test_reading_another_users_child_is_401_and_returns_nothing(stack, lux):
    assert answer(upload(stack, lux, samples(8000, 5))) == (200, SAVED)
    _, stranger = stack.new_user()
    response = read(stack, lux, token=stranger)
    assert answer(response) == (401, {"detail": "Not authorized user"})
    # naming their own child does not reveal the samples of a device they do not use
    their_child = create_child(stack, stranger)
    response = read(stack, lux, token=stranger, child_id=their_child["id"])
    assert "samples" not in response.text or response.json()["samples"] == []


def test_reading_with_a_nonexistent_child_is_404(stack, lux):
    response = read(stack, lux, child_id=MISSING_ID)
    assert answer(response) == (404, {"detail": "Not Found User"})


def test_reading_without_a_device_is_400(stack, lux):
    """``device_id`` is required (tests/stack/test_openapi_conformance.py found a read
    without one answered with an empty page)."""
    refused = (400, {"detail": "device_id is required and must be a positive id"})
    assert answer(read(stack, lux, device_id=0)) == refused
    assert answer(read(stack, lux, device_id=-1)) == refused
    without = stack.request("GET", MOVEMENT, lux.token, params={"real_user_id": lux.child["id"]})
    assert answer(without) == refused


def test_reading_over_grpc_for_another_users_child_is_permission_denied(stack, lux):
    assert answer(upload(stack, lux, samples(9000, 5))) == (200, SAVED)
    _, stranger = stack.new_user()
    stub = movement_pb2_grpc.MovementServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.ListMovementSamples(
            pb.ListMovementSamplesRequest(device_id=lux.device["id"], real_user_id=lux.child["id"]),
            metadata=metadata(stranger),
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unbinding_keeps_movement_history(stack, lux):
    assert answer(upload(stack, lux, samples(9500, 5))) == (200, SAVED)
    response = stack.request(
        "PATCH",
        "/api/v1/lux/device/un-connect",
        lux.token,
        params={"unique_id": lux.device["unique_id"], "real_user_id": lux.child["id"]},
    )
    assert response.status_code == 200, response.text
    assert count(stack, lux.device["id"]) == 5
    assert [s["timestamp"] for s in read(stack, lux).json()["samples"]] == list(range(9500, 9505))
