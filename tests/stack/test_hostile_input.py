"""Hostile input: every bad value is a 400 in the documented shape, never a 5xx, and a
refused write leaves nothing behind (issue 10, defect 8, server side).

Each test names the defect it pins down; ``assert_documented_error``
(tests/documented_errors.py) is the shape check the fuzz suite (test_fuzz.py) applies to
every answer.
"""

from __future__ import annotations

import base64
import json
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from devicehub.testing.stack import Stack, unique
from devicehub.v1 import (
    auth_pb2,
    device_type_pb2,
    device_type_pb2_grpc,
)

from api_client import create_child, metadata, new_device, query_database
from documented_errors import assert_documented_error

WAIT = 15.0


def count(stack: Stack, table: str) -> int:
    return query_database(stack, f"SELECT COUNT(*) FROM {table}")[0][0]


def grpc_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, error
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


# --- NUL characters: one rule for every text field ------------------------------------


def test_nul_in_any_text_field_is_400_and_writes_nothing(stack, admin):
    _, token = stack.new_user()
    name = unique("nul").lower()
    cases = [
        ("POST", "/api/v1/auth/register", None, {"username": name + "\0", "password": "p" * 10}),
        ("POST", "/api/v1/auth/register", None, {"username": name, "password": "pass\0word-1"}),
        (
            "POST",
            "/api/v1/auth/register",
            None,
            {"username": name, "password": "password-1", "first_name": "\0"},
        ),
        ("POST", "/api/v1/auth/token", None, {"username": "admin\0", "password": "x" * 10}),
        (
            "POST",
            "/api/v1/accounts/children/",
            token,
            {"first_name": "M\0n", "last_name": "Kim", "birthdate": "2015-03-01", "gender": "f"},
        ),
        ("POST", "/api/device/device-types/", admin, {"name": "音箱\0", "code": unique("T")}),
        ("POST", "/api/device/messages/", token, {"type": "text", "message": {"content": "\0"}}),
    ]
    tables = ("account", "child", "device_type", "message")
    before = {table: count(stack, table) for table in tables}
    for method, path, auth, body in cases:
        response = stack.request(method, path, auth, json=body)
        assert response.status_code == 400, (path, body, response.text)
        found = assert_documented_error(response, path)
        assert "NUL" in (found.get("detail") or found.get("message")), found
    assert {table: count(stack, table) for table in tables} == before


def test_nul_in_a_query_string_is_400(stack, user):
    _, token = user
    for path in (
        "/api/v1/lux/device/check-device?unique_id=%00",
        "/api/v1/lux/device/check-device?unique_id=abc%00def",
        "/api/device/rtc-token/get_by_mac/?mac_address=00:11:22:33:44:55%00",
    ):
        response = stack.request("GET", path, token)
        assert response.status_code == 400, (path, response.text)
        assert_documented_error(response, path)


def test_nul_over_grpc_is_invalid_argument(stack, admin):
    stub = device_type_pb2_grpc.DeviceTypeServiceStub(stack.channel())
    request = device_type_pb2.CreateDeviceTypeRequest(
        device_type=device_type_pb2.DeviceType(name="a\0b", code=unique("T"))
    )
    with pytest.raises(grpc.RpcError) as error:
        stub.CreateDeviceType(request, metadata=metadata(admin))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "device_type.name must not contain NUL characters"
    assert grpc_reason(error.value) == "INVALID_ARGUMENT"


# --- invalid UTF-8 that the transcoder passes on from a query string --------------------


@pytest.mark.parametrize("raw", ["%FF", "%ED%A0%80", "abc%C3"])
def test_invalid_utf8_in_a_query_field_is_400(stack, user, raw):
    _, token = user
    for path in (
        f"/api/v1/lux/device/check-device?unique_id={raw}",
        f"/api/device/rtc-token/get_by_mac/?mac_address={raw}",
        f"/api/device/device-types/?page_token={raw}",
    ):
        response = stack.request("GET", path, token)
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert_documented_error(response, path)


def test_undecodable_grpc_request_is_invalid_argument(stack):
    call = stack.channel().unary_unary(
        "/devicehub.v1.AuthService/CreateToken",
        request_serializer=None,  # raw bytes, as a broken client would send them
        response_deserializer=auth_pb2.Token.FromString,
    )
    bad_utf8 = b"\x0a\x03\xff\xfe\xfd"  # field 1 (username), three bytes that are no UTF-8
    truncated = b"\x0a\x05ab"  # field 1 says 5 bytes, 2 follow
    for raw, message in (
        (bad_utf8, "Request text must be valid UTF-8"),
        (truncated, "Request is not a valid protobuf message"),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call(raw)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
        assert error.value.details() == message
        assert grpc_reason(error.value) == "INVALID_ARGUMENT"


# --- numbers and dates at the edges ------------------------------------------------------


@pytest.fixture
def bound_child(stack: Stack):
    """A parent's token, their child and a device bound to it."""
    _, token = stack.new_user()
    child = create_child(stack, token)
    device = new_device(stack)
    response = stack.request(
        "POST",
        "/api/v1/lux/device/set-my-device",
        token,
        params={
            "serial_code": device["device_code"],
            "mac_id": device["mac_address"],
            "unique_id": device["unique_id"],
            "real_user_id": child["id"],
        },
    )
    assert response.status_code == 200, response.text
    return token, child, device


@pytest.mark.parametrize(
    ("treatment_date", "finish_flag"),
    [
        ("0001-01-01T00:00:00+01:00", 1),  # before year 1 in UTC
        ("9999-12-31T23:59:59-01:00", 1),  # after year 9999 in UTC
        ("0001-01-01T00:00:10", None),  # a temporary record is stored 30 s earlier
    ],
)
def test_treatment_date_beyond_the_calendar_is_400(stack, bound_child, treatment_date, finish_flag):
    token, child, device = bound_child
    entry = {
        "real_user_id": child["id"],
        "device_id": device["id"],
        "unique_id": device["unique_id"],
        "log_file_id": 1,
        "detail_data": {
            "treatment_date": treatment_date,
            "finish_flag": finish_flag,
            "last_intensity": 1,
            "treatment_time": 1,
        },
    }
    before = count(stack, "devlog")
    response = stack.request(
        "POST", "/api/v1/lux/device/devlog", token, json={"log_arrays": [entry]}
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "treatment_date is out of range (years 1 to 9999 in UTC)"}
    assert count(stack, "devlog") == before


def bound_account(stack: Stack) -> tuple[dict, str]:
    account, token = stack.new_user()
    device = new_device(stack)
    response = stack.request(
        "POST", "/api/device/user-devices/bind/", token, json={"mac_address": device["mac_address"]}
    )
    assert response.status_code == 200, response.text
    return account, token


@pytest.mark.parametrize("user_id", ["²", "١", "99999999999999999999", "-1", "1e3"])
def test_message_user_id_is_ascii_digits_only(stack, user_id):
    _, token = bound_account(stack)
    before = count(stack, "message")
    response = stack.request(
        "POST",
        "/api/device/messages/",
        token,
        json={"type": "text", "message": {"content": "hi"}, "user_id": user_id},
    )
    assert response.status_code == 400, response.text
    assert assert_documented_error(response, "/api/device/")["code"] == "INVALID_ARGUMENT"
    assert count(stack, "message") == before


def test_long_message_type_is_400_with_a_short_message(stack):
    _, token = bound_account(stack)
    response = stack.request(
        "POST", "/api/device/messages/", token, json={"type": "t" * 200_000, "message": {}}
    )
    assert response.status_code == 400, response.text
    body = assert_documented_error(response, "/api/device/")
    assert len(body["message"]) < 200


def forged_token(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


@pytest.mark.parametrize("value", ["99999999999999999999999", "-5", "²"])
def test_forged_page_token_is_400(stack, bound_child, value):
    token, child, device = bound_child
    for path in (
        f"/api/device/device-types/?page_size=2&page_token={forged_token('after', value)}",
        f"/api/v1/accounts/children/?page_size=2&page_token={forged_token('after', value)}",
        f"/api/v1/lux/device/movement?device_id={device['id']}&real_user_id={child['id']}"
        f"&page_token={forged_token('ts', value)}",
    ):
        response = stack.request("GET", path, token)
        assert response.status_code == 400, (path, response.text)
        assert_documented_error(response, path)


# --- the WebSocket --------------------------------------------------------------------


def ws_url(stack: Stack, user_id, token: str, query: str = "") -> str:
    base = stack.rest_url.replace("http://", "ws://")
    return f"{base}/api/device/messages/{user_id}/?token={token}{query}"


@pytest.mark.parametrize("after_id", ["%C2%B2", "99999999999999999999999", "abc"])
def test_websocket_bad_after_id_is_400(stack, after_id):
    account, token = bound_account(stack)
    with pytest.raises(InvalidStatus) as error:
        connect(ws_url(stack, account["id"], token, f"&after_id={after_id}"), open_timeout=WAIT)
    assert error.value.response.status_code == 400


def message_state(stack: Stack, message_id: int) -> str:
    return query_database(stack, "SELECT state FROM message WHERE id = ?", (message_id,))[0][0]


def test_websocket_bad_ack_frames_are_ignored_and_later_acks_work(stack):
    account, token = bound_account(stack)
    for content in ("first", "second"):
        response = stack.request(
            "POST",
            "/api/device/messages/",
            token,
            json={"type": "text", "message": {"content": content}},
        )
        assert response.status_code == 200, response.text
    with connect(ws_url(stack, account["id"], token), open_timeout=WAIT) as socket:
        first, second = (json.loads(socket.recv(timeout=WAIT))["id"] for _ in range(2))
        for bad in (
            '{"ack":[1e400]}',  # killed the reader: int(inf) raised OverflowError
            '{"ack":[99999999999999999999999999]}',  # beyond any id the database binds
            f'{{"ack":[{first}.5]}}',  # was truncated to an id and acknowledged it
            f'{{"ack":{{"{first}":1}}}}',  # a dict's keys were read as ids
            "[" * 100_000,  # too deep for the JSON parser
            "not json",
            b"\xff\xfe",
        ):
            socket.send(bad)
        socket.send(json.dumps({"ack": [second]}))
        # Frames are read in order: once the last one is applied, all were.
        deadline = time.monotonic() + WAIT
        while message_state(stack, second) != "acked" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert message_state(stack, second) == "acked"
        assert message_state(stack, first) != "acked"
