"""BindingService: the Lux device API (seed 000) and user devices (seed 003 section 4),
one binding table behind both, over REST through Envoy and over gRPC."""

from __future__ import annotations

import datetime as dt
import threading

import grpc
import pytest

from devicehub.api.rest_edge import REST_ARRAY_HEADER
from devicehub.v1 import binding_pb2 as pb
from devicehub.v1 import binding_pb2_grpc

from api_client import connect, create_child, list_all, metadata, new_device, query_database

LUX = "/api/v1/lux/device"
USER_DEVICES = "/api/device/user-devices/"
CHILDREN = "/api/v1/accounts/children"
MISSING_ID = 987654321
LUX_KEYS = {
    "id",
    "real_user_id",
    "project_id",
    "hardware_id",
    "now_firmware_id",
    "unique_id",
    "serial_code",
    "device_alias",
    "mac_id",
    "created_at",
    "last_log_file_id",
}
CHILD_FIELDS = {"root_user_id", "first_name", "last_name", "birthdate", "gender"}
ROW_KEYS = LUX_KEYS | CHILD_FIELDS | {"firmware_version"}
USER_DEVICE_KEYS = {
    "id",
    "user",
    "device",
    "device_code",
    "device_type",
    "nickname",
    "is_primary",
    "bound_at",
}
CONNECTED = {"statuscode": 200, "message": "device connected"}
UNCONNECTED = {"statusCode": 200, "message": "device unconnected"}


# --- helpers -----------------------------------------------------------------------


def lux_view(device: dict, child_id: int = 0, alias: str = "") -> dict:
    """The Lux API's view of a registry device (as returned by /api/device/devices/)."""
    return {
        "id": device["id"],
        "real_user_id": child_id,
        "project_id": device["device_type"],
        "hardware_id": device["device_type"],
        "now_firmware_id": 0,
        "unique_id": device["unique_id"],
        "serial_code": device["device_code"],
        "device_alias": alias,
        "mac_id": device["mac_address"],
        "created_at": device["created_at"],
        "last_log_file_id": 0,
    }


def child_part(child: dict) -> dict:
    return {key: child[key] for key in CHILD_FIELDS}


def device_row(device: dict, child: dict) -> dict:
    return {**lux_view(device, child["id"]), "firmware_version": "", **child_part(child)}


def empty_row(child: dict) -> dict:
    return {
        "id": 0,
        "real_user_id": child["id"],
        "project_id": 0,
        "hardware_id": 0,
        "now_firmware_id": 0,
        "firmware_version": "",
        "unique_id": "",
        "serial_code": "",
        "device_alias": "",
        "mac_id": "",
        "created_at": None,
        "last_log_file_id": 0,
        **child_part(child),
    }


def registry(stack, device_id: int) -> dict:
    response = stack.request("GET", f"/api/device/devices/{device_id}/", stack.admin_token)
    assert response.status_code == 200, response.text
    return response.json()


def child_device(stack, token: str, child_id: int):
    return stack.request("GET", f"{LUX}/child-device", token, params={"real_user_id": child_id})


def all_devices(stack, token: str) -> list[dict]:
    return list_all(stack, f"{LUX}/get-all-device", token)


def check(stack, token: str, unique_id: str):
    return stack.request("GET", f"{LUX}/check-device", token, params={"unique_id": unique_id})


def unconnect(stack, token: str, unique_id: str, child_id: int):
    return stack.request(
        "PATCH",
        f"{LUX}/un-connect",
        token,
        params={"unique_id": unique_id, "real_user_id": child_id},
    )


def update_alias(stack, token: str, device_id: int, child_id: int, alias: str):
    return stack.request(
        "PATCH",
        f"{LUX}/update-alias",
        token,
        json={"device_id": device_id, "real_user_id": child_id, "device_alias": alias},
    )


def bind(stack, token: str, mac: str, nickname: str = "", is_primary: bool = False):
    return stack.request(
        "POST",
        USER_DEVICES + "bind/",
        token,
        json={"mac_address": mac, "nickname": nickname, "is_primary": is_primary},
    )


def bound(stack, token: str, device: dict, **kwargs) -> dict:
    response = bind(stack, token, device["mac_address"], **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def user_devices(stack, token: str) -> list[dict]:
    return list_all(stack, USER_DEVICES, token)


def primaries(stack, token: str) -> list[int]:
    return [row["id"] for row in user_devices(stack, token) if row["is_primary"]]


def binding_rows(stack, device_id: int) -> list[tuple]:
    return query_rows(
        stack, "SELECT account_id, child_id FROM binding WHERE device_id = ?", device_id
    )


def query_rows(stack, sql: str, *params) -> list[tuple]:
    return query_database(stack, sql, params)


def detail(response) -> tuple[int, dict]:
    return response.status_code, response.json()


def status_error(response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"status", "message", "code"}, body
    assert isinstance(body["message"], str) and body["message"]
    return response.status_code, body["status"], body["code"]


def parent_with_child(stack) -> tuple[dict, str, dict]:
    account, token = stack.new_user()
    return account, token, create_child(stack, token)


# --- Lux: documented examples ------------------------------------------------------


def test_set_my_device_answers_the_documented_body(stack):
    _, token, child = parent_with_child(stack)
    device = new_device(stack)
    response = connect(stack, token, device, child["id"])
    assert response.status_code == 200
    assert response.json() == CONNECTED
    assert binding_rows(stack, device["id"]) == [(child["root_user_id"], child["id"])]


def test_documented_lux_examples_over_rest(stack, lux):
    device = registry(stack, lux.device["id"])
    child_id = lux.child["id"]
    expected = lux_view(device, child_id)

    got = child_device(stack, lux.token, child_id)
    assert got.status_code == 200
    assert set(got.json()) == LUX_KEYS
    assert got.json() == expected

    rows = all_devices(stack, lux.token)
    assert all(set(row) == ROW_KEYS for row in rows)
    assert rows == [device_row(device, lux.child)]
    assert rows[0]["root_user_id"] == lux.account["id"]

    checked = check(stack, lux.token, device["unique_id"])
    assert checked.status_code == 200
    assert checked.json() == {"detail": "Connection Confirmed", "device_data": expected}

    renamed = update_alias(stack, lux.token, device["id"], child_id, "거실 기기")
    assert renamed.status_code == 200
    assert set(renamed.json()) == LUX_KEYS
    assert renamed.json() == lux_view(device, child_id, alias="거실 기기")
    assert child_device(stack, lux.token, child_id).json()["device_alias"] == "거실 기기"

    gone = unconnect(stack, lux.token, device["unique_id"], child_id)
    assert gone.status_code == 200
    assert gone.json() == UNCONNECTED
    assert detail(child_device(stack, lux.token, child_id)) == (404, {"detail": "Device not found"})
    free = check(stack, lux.token, device["unique_id"])
    assert free.status_code == 200
    assert free.json() == {
        "detail": "Device Registerable",
        "device_data": lux_view(device, 0, alias="거실 기기"),
    }


def test_child_device_is_the_most_recently_bound(stack):
    _, token, child = parent_with_child(stack)
    first, second = new_device(stack), new_device(stack)
    assert connect(stack, token, first, child["id"]).status_code == 200
    assert connect(stack, token, second, child["id"]).status_code == 200
    got = child_device(stack, token, child["id"])
    assert got.status_code == 200
    assert got.json()["id"] == second["id"]


# --- Lux: get-all-device -----------------------------------------------------------


def test_get_all_device_has_one_row_per_child_and_device(stack):
    _, token = stack.new_user()
    _, other_token, theirs = parent_with_child(stack)
    with_two, without, with_one = (create_child(stack, token, first_name=n) for n in "ABC")
    devices = [new_device(stack) for _ in range(3)]
    for device, child in zip(devices, (with_two, with_two, with_one), strict=True):
        assert connect(stack, token, device, child["id"]).status_code == 200
    other_device = new_device(stack)
    assert connect(stack, other_token, other_device, theirs["id"]).status_code == 200

    devices = [registry(stack, device["id"]) for device in devices]
    rows = all_devices(stack, token)
    assert rows == [
        device_row(devices[0], with_two),
        device_row(devices[1], with_two),
        empty_row(without),
        device_row(devices[2], with_one),
    ]
    assert all(set(row) == ROW_KEYS for row in rows)
    assert all_devices(stack, other_token) == [
        device_row(registry(stack, other_device["id"]), theirs)
    ]


def test_get_all_device_keeps_a_row_for_a_child_without_device(stack):
    _, token, child = parent_with_child(stack)
    rows = all_devices(stack, token)
    assert rows == [empty_row(child)]
    assert set(rows[0]) == ROW_KEYS
    assert rows[0]["created_at"] is None


def test_get_all_device_is_an_empty_array_without_children(stack, user):
    _, token = user
    response = stack.request("GET", f"{LUX}/get-all-device", token)
    assert response.status_code == 200
    assert response.json() == []


# --- Lux: documented errors --------------------------------------------------------


def test_child_device_errors(stack, lux):
    _, stranger = stack.new_user()
    not_authorized = (401, {"detail": "Not authorized user"})
    assert detail(child_device(stack, stranger, lux.child["id"])) == not_authorized
    assert detail(child_device(stack, lux.token, MISSING_ID)) == not_authorized
    empty_child = create_child(stack, lux.token, first_name="Empty")
    assert detail(child_device(stack, lux.token, empty_child["id"])) == (
        404,
        {"detail": "Device not found"},
    )


def test_set_my_device_refuses_a_child_that_is_not_the_callers(stack, lux):
    _, stranger = stack.new_user()
    device = new_device(stack)
    not_authorized = (401, {"detail": "Not authorized user"})
    assert detail(connect(stack, stranger, device, lux.child["id"])) == not_authorized
    assert detail(connect(stack, lux.token, device, MISSING_ID)) == not_authorized
    assert binding_rows(stack, device["id"]) == []
    assert registry(stack, device["id"])["is_active"] is False


@pytest.mark.parametrize(
    "wrong",
    [
        {"serial_code": "NOPE00001"},
        {"mac_id": "00:00:00:00:00:01"},
        {"mac_id": "test1234"},
        {"unique_id": "00000000-0000-0000-0000-000000000000"},
    ],
    ids=["serial_code", "mac_id", "malformed_mac_id", "unique_id"],
)
def test_set_my_device_needs_all_three_identifiers_of_one_device(stack, wrong):
    _, token, child = parent_with_child(stack)
    device = new_device(stack)
    params = {
        "serial_code": device["device_code"],
        "mac_id": device["mac_address"],
        "unique_id": device["unique_id"],
        "real_user_id": child["id"],
        **wrong,
    }
    response = stack.request("POST", f"{LUX}/set-my-device", token, params=params)
    assert detail(response) == (404, {"detail": "Not Found Device"})
    assert binding_rows(stack, device["id"]) == []


def test_set_my_device_documented_example_values_are_not_found(stack):
    _, token, child = parent_with_child(stack)
    response = stack.request(
        "POST",
        f"{LUX}/set-my-device?serial_code=test1&mac_id=test1234&unique_id=test1234"
        f"&real_user_id={child['id']}",
        token,
    )
    assert detail(response) == (404, {"detail": "Not Found Device"})


def test_set_my_device_accepts_a_lower_case_mac(stack):
    _, token, child = parent_with_child(stack)
    device = new_device(stack)
    lowered = {**device, "mac_address": device["mac_address"].lower()}
    response = connect(stack, token, lowered, child["id"])
    assert response.status_code == 200
    assert response.json() == CONNECTED
    assert child_device(stack, token, child["id"]).json()["mac_id"] == device["mac_address"]


def test_set_my_device_conflicts_when_bound_to_another_users_child(stack, lux):
    _, token, child = parent_with_child(stack)
    response = connect(stack, token, lux.device, child["id"])
    assert detail(response) == (409, {"detail": "Already Connected Device"})
    assert binding_rows(stack, lux.device["id"]) == [(lux.account["id"], lux.child["id"])]


def test_set_my_device_conflicts_when_bound_to_another_child_of_the_caller(stack, lux):
    sibling = create_child(stack, lux.token, first_name="Sibling")
    response = connect(stack, lux.token, lux.device, sibling["id"])
    assert detail(response) == (409, {"detail": "Already Connected Device"})
    assert binding_rows(stack, lux.device["id"]) == [(lux.account["id"], lux.child["id"])]
    assert detail(child_device(stack, lux.token, sibling["id"]))[0] == 404


def test_connecting_again_to_the_same_child_is_idempotent(stack, lux):
    activated = registry(stack, lux.device["id"])["activated_at"]
    again = connect(stack, lux.token, lux.device, lux.child["id"])
    assert again.status_code == 200
    assert again.json() == CONNECTED
    assert binding_rows(stack, lux.device["id"]) == [(lux.account["id"], lux.child["id"])]
    assert len(all_devices(stack, lux.token)) == 1
    assert registry(stack, lux.device["id"])["activated_at"] == activated


def test_un_connect_errors(stack, lux):
    _, stranger, stranger_child = parent_with_child(stack)
    unique_id = lux.device["unique_id"]
    assert detail(unconnect(stack, stranger, unique_id, lux.child["id"])) == (
        401,
        {"detail": "Not authorized user"},
    )
    assert detail(unconnect(stack, lux.token, unique_id, MISSING_ID)) == (
        401,
        {"detail": "Not authorized user"},
    )
    not_found = (404, {"detail": "Not Found Device"})
    assert detail(unconnect(stack, stranger, unique_id, stranger_child["id"])) == not_found
    assert detail(unconnect(stack, lux.token, "test1", lux.child["id"])) == not_found
    sibling = create_child(stack, lux.token, first_name="Sibling")
    assert detail(unconnect(stack, lux.token, unique_id, sibling["id"])) == not_found
    free = new_device(stack)
    assert detail(unconnect(stack, lux.token, free["unique_id"], lux.child["id"])) == not_found
    assert binding_rows(stack, lux.device["id"]) == [(lux.account["id"], lux.child["id"])]
    assert registry(stack, lux.device["id"])["is_active"] is True


def test_check_device_tells_free_from_own_and_foreign(stack, lux):
    free = registry(stack, new_device(stack)["id"])
    registerable = check(stack, lux.token, free["unique_id"])
    assert registerable.status_code == 200
    assert registerable.json() == {"detail": "Device Registerable", "device_data": lux_view(free)}
    assert set(registerable.json()["device_data"]) == LUX_KEYS

    own = registry(stack, lux.device["id"])
    confirmed = check(stack, lux.token, own["unique_id"])
    assert confirmed.status_code == 200
    assert confirmed.json() == {
        "detail": "Connection Confirmed",
        "device_data": lux_view(own, lux.child["id"]),
    }

    _, stranger = stack.new_user()
    assert detail(check(stack, stranger, own["unique_id"])) == (
        409,
        {"detail": "Already Connected Device"},
    )
    assert detail(check(stack, lux.token, "test1")) == (404, {"detail": "Not Found Device"})


def test_update_alias_errors(stack, lux):
    _, stranger, stranger_child = parent_with_child(stack)
    device_id = lux.device["id"]
    assert detail(update_alias(stack, stranger, device_id, lux.child["id"], "x")) == (
        401,
        {"detail": "Not authorized user"},
    )
    assert detail(update_alias(stack, lux.token, device_id, MISSING_ID, "x")) == (
        401,
        {"detail": "Not authorized user"},
    )
    assert detail(update_alias(stack, lux.token, MISSING_ID, lux.child["id"], "x")) == (
        404,
        {"detail": "Not Found Device"},
    )
    not_connected = (409, {"detail": "Not Connected Device"})
    free = new_device(stack)
    assert detail(update_alias(stack, lux.token, free["id"], lux.child["id"], "x")) == not_connected
    sibling = create_child(stack, lux.token, first_name="Sibling")
    assert detail(update_alias(stack, lux.token, device_id, sibling["id"], "x")) == not_connected
    assert (
        detail(update_alias(stack, stranger, device_id, stranger_child["id"], "x")) == not_connected
    )
    assert child_device(stack, lux.token, lux.child["id"]).json()["device_alias"] == ""


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{LUX}/child-device?real_user_id=1"),
        ("GET", f"{LUX}/get-all-device"),
        ("POST", f"{LUX}/set-my-device?serial_code=a&mac_id=b&unique_id=c&real_user_id=1"),
        ("PATCH", f"{LUX}/un-connect?unique_id=test1&real_user_id=1"),
        ("GET", f"{LUX}/check-device?unique_id=test1"),
        ("PATCH", f"{LUX}/update-alias"),
    ],
)
def test_lux_endpoints_need_a_token(stack, method, path):
    response = stack.request(method, path, json={} if method == "PATCH" else None)
    assert detail(response) == (401, {"detail": "Could not validate credentials"})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", USER_DEVICES),
        ("POST", USER_DEVICES + "bind/"),
        ("POST", USER_DEVICES + "1/set_primary/"),
        ("DELETE", USER_DEVICES + "1/"),
    ],
)
def test_user_device_endpoints_need_a_token(stack, method, path):
    response = stack.request(method, path, json={} if method == "POST" else None)
    assert status_error(response) == (401, "error", "UNAUTHENTICATED")


def test_update_alias_refuses_an_overlong_alias(stack, lux):
    response = update_alias(stack, lux.token, lux.device["id"], lux.child["id"], "x" * 101)
    assert detail(response) == (400, {"detail": "device_alias must be at most 100 characters"})
    exact = update_alias(stack, lux.token, lux.device["id"], lux.child["id"], "y" * 100)
    assert exact.status_code == 200
    assert exact.json()["device_alias"] == "y" * 100


# --- binding effects on the device -------------------------------------------------


def test_binding_activates_the_device_and_unbinding_keeps_activated_at(stack):
    _, token, child = parent_with_child(stack)
    device = new_device(stack)
    assert registry(stack, device["id"])["is_active"] is False
    assert registry(stack, device["id"])["activated_at"] is None

    assert connect(stack, token, device, child["id"]).status_code == 200
    active = registry(stack, device["id"])
    assert active["is_active"] is True
    activated_at = active["activated_at"]
    assert isinstance(activated_at, str) and activated_at.endswith("Z")
    parsed = dt.datetime.fromisoformat(activated_at.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None

    assert unconnect(stack, token, device["unique_id"], child["id"]).json() == UNCONNECTED
    inactive = registry(stack, device["id"])
    assert inactive["is_active"] is False
    assert inactive["activated_at"] == activated_at

    assert connect(stack, token, device, child["id"]).status_code == 200
    again = registry(stack, device["id"])
    assert again["is_active"] is True
    assert again["activated_at"] == activated_at


# --- user devices (seed 003 section 4) ---------------------------------------------


def test_documented_user_device_examples(stack, user):
    account, token = user
    device = new_device(stack)
    response = bind(stack, token, device["mac_address"].lower(), "我的设备", True)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_DEVICE_KEYS
    assert {k: v for k, v in body.items() if k not in ("id", "bound_at")} == {
        "user": account["id"],
        "device": device["id"],
        "device_code": device["device_code"],
        "device_type": "智能音箱",
        "nickname": "我的设备",
        "is_primary": True,
    }
    assert isinstance(body["id"], int) and body["id"] > 0
    assert body["bound_at"].endswith("Z")

    listed = stack.request("GET", USER_DEVICES, token)
    assert listed.status_code == 200
    assert listed.json() == [body]

    primary = stack.request("POST", f"{USER_DEVICES}{body['id']}/set_primary/", token)
    assert primary.status_code == 200
    assert primary.json() == {"status": "success", "message": "成功设置主要设备", "data": body}

    deleted = stack.request("DELETE", f"{USER_DEVICES}{body['id']}/", token)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert user_devices(stack, token) == []
    assert registry(stack, device["id"])["is_active"] is False
    assert binding_rows(stack, device["id"]) == []


def test_user_device_type_is_the_type_name(stack, user):
    _, token = user
    device = new_device(stack)
    body = bound(stack, token, device)
    assert body["device_type"] == registry(stack, device["id"])["device_type_name"] == "智能音箱"
    assert user_devices(stack, token)[0]["device_type"] == "智能音箱"


def test_first_bound_device_is_primary_even_when_not_asked(stack, user):
    _, token = user
    first = bound(stack, token, new_device(stack), is_primary=False)
    assert first["is_primary"] is True
    second = bound(stack, token, new_device(stack), is_primary=False)
    assert second["is_primary"] is False
    assert primaries(stack, token) == [first["id"]]


def test_binding_a_new_primary_unsets_the_old_one(stack, user):
    _, token = user
    first = bound(stack, token, new_device(stack))
    second = bound(stack, token, new_device(stack), is_primary=True)
    assert second["is_primary"] is True
    listed = user_devices(stack, token)
    assert [row["id"] for row in listed] == [first["id"], second["id"]]
    assert primaries(stack, token) == [second["id"]]


def test_set_primary_leaves_exactly_one_primary(stack, user):
    _, token = user
    first, second, third = (bound(stack, token, new_device(stack)) for _ in range(3))
    assert [first["is_primary"], second["is_primary"], third["is_primary"]] == [True, False, False]
    response = stack.request("POST", f"{USER_DEVICES}{third['id']}/set_primary/", token)
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "message": "成功设置主要设备",
        "data": {**third, "is_primary": True},
    }
    assert primaries(stack, token) == [third["id"]]
    again = stack.request("POST", f"{USER_DEVICES}{second['id']}/set_primary/", token)
    assert again.status_code == 200
    assert again.json()["data"] == {**second, "is_primary": True}
    assert primaries(stack, token) == [second["id"]]


def test_unbinding_the_primary_promotes_the_oldest_remaining(stack, user):
    _, token = user
    first, second, third = (bound(stack, token, new_device(stack)) for _ in range(3))
    assert stack.request("POST", f"{USER_DEVICES}{third['id']}/set_primary/", token).ok
    # unbinding a non-primary changes nothing
    assert stack.request("DELETE", f"{USER_DEVICES}{first['id']}/", token).status_code == 204
    assert primaries(stack, token) == [third["id"]]
    # unbinding the primary promotes the oldest remaining binding
    assert stack.request("DELETE", f"{USER_DEVICES}{third['id']}/", token).status_code == 204
    assert user_devices(stack, token) == [{**second, "is_primary": True}]


def test_bind_unknown_mac_is_404(stack, user):
    _, token = user
    response = bind(stack, token, "00:00:00:00:00:02")
    assert status_error(response) == (404, "error", "DEVICE_NOT_FOUND")
    assert user_devices(stack, token) == []


@pytest.mark.parametrize("mac", ["test1234", "00:11:22:33:44", "00:11:22:33:44:GG", ""])
def test_bind_malformed_mac_is_400(stack, user, mac):
    _, token = user
    response = bind(stack, token, mac)
    assert status_error(response) == (400, "error", "INVALID_ARGUMENT")
    assert user_devices(stack, token) == []


def test_bind_refuses_an_overlong_nickname(stack, user):
    _, token = user
    device = new_device(stack)
    response = bind(stack, token, device["mac_address"], "n" * 101)
    assert status_error(response) == (400, "error", "INVALID_ARGUMENT")
    assert binding_rows(stack, device["id"]) == []


def test_bind_already_bound_device_is_409(stack, user, lux):
    _, token = user
    via_lux = bind(stack, token, lux.device["mac_address"])
    assert status_error(via_lux) == (409, "error", "DEVICE_ALREADY_BOUND")
    _, owner = stack.new_user()
    device = new_device(stack)
    bound(stack, owner, device)
    for caller in (token, owner):
        response = bind(stack, caller, device["mac_address"])
        assert status_error(response) == (409, "error", "DEVICE_ALREADY_BOUND")
    assert user_devices(stack, token) == []
    assert len(binding_rows(stack, device["id"])) == 1


def test_another_users_binding_is_not_found(stack, user):
    _, token = user
    _, owner = stack.new_user()
    theirs = bound(stack, owner, new_device(stack))
    mine = bound(stack, token, new_device(stack))
    paths = [
        ("POST", f"{USER_DEVICES}{theirs['id']}/set_primary/"),
        ("DELETE", f"{USER_DEVICES}{theirs['id']}/"),
        ("POST", f"{USER_DEVICES}{MISSING_ID}/set_primary/"),
        ("DELETE", f"{USER_DEVICES}{MISSING_ID}/"),
    ]
    for method, path in paths:
        response = stack.request(method, path, token)
        assert status_error(response) == (404, "error", "BINDING_NOT_FOUND"), path
    assert user_devices(stack, owner) == [theirs]
    assert user_devices(stack, token) == [mine]


# --- one binding table across both APIs --------------------------------------------


def test_lux_binding_shows_in_user_devices(stack, lux):
    listed = user_devices(stack, lux.token)
    assert len(listed) == 1
    row = listed[0]
    assert set(row) == USER_DEVICE_KEYS
    assert {k: v for k, v in row.items() if k not in ("id", "bound_at")} == {
        "user": lux.account["id"],
        "device": lux.device["id"],
        "device_code": lux.device["device_code"],
        "device_type": "智能音箱",
        "nickname": "",
        "is_primary": True,
    }


def test_user_device_binding_blocks_lux_connection_of_others(stack, user):
    _, token = user
    _, other_token, other_child = parent_with_child(stack)
    device = new_device(stack)
    bound(stack, token, device)
    conflict = (409, {"detail": "Already Connected Device"})
    assert detail(check(stack, other_token, device["unique_id"])) == conflict
    assert detail(connect(stack, other_token, device, other_child["id"])) == conflict
    assert len(binding_rows(stack, device["id"])) == 1


def test_user_device_binding_is_confirmed_for_its_owner(stack, user):
    _, token = user
    device = registry(stack, new_device(stack)["id"])
    bound(stack, token, device)
    confirmed = check(stack, token, device["unique_id"])
    assert confirmed.status_code == 200
    assert confirmed.json() == {
        "detail": "Connection Confirmed",
        "device_data": lux_view(device, 0),
    }


def test_unbinding_a_lux_device_through_user_devices_frees_it(stack, lux):
    (row,) = user_devices(stack, lux.token)
    assert stack.request("DELETE", f"{USER_DEVICES}{row['id']}/", lux.token).status_code == 204
    assert detail(child_device(stack, lux.token, lux.child["id"]))[0] == 404
    assert all_devices(stack, lux.token) == [empty_row(lux.child)]
    assert check(stack, lux.token, lux.device["unique_id"]).json()["detail"] == (
        "Device Registerable"
    )


# --- deleting a child --------------------------------------------------------------


def test_deleting_a_child_unbinds_its_devices(stack, lux):
    deleted = stack.request("DELETE", f"{CHILDREN}/{lux.child['id']}", lux.token)
    assert deleted.status_code == 204
    assert registry(stack, lux.device["id"])["is_active"] is False
    assert binding_rows(stack, lux.device["id"]) == []
    assert user_devices(stack, lux.token) == []
    _, token, child = parent_with_child(stack)
    response = connect(stack, token, lux.device, child["id"])
    assert response.status_code == 200
    assert response.json() == CONNECTED
    assert registry(stack, lux.device["id"])["is_active"] is True


# --- concurrency -------------------------------------------------------------------
# Each race is run for several rounds: a server that decides from state read before it
# takes the account lock loses some of them on PostgreSQL.

ROUNDS = 8


def run_together(calls) -> list:
    """Runs the calls in threads released at the same moment; returns their results."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(index: int, call) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:
            results[index] = error

    threads = [
        threading.Thread(target=worker, args=(index, call)) for index, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def statuses(results) -> list:
    return [getattr(result, "status_code", result) for result in results]


def texts(results) -> list:
    return [getattr(result, "text", result) for result in results]


def two_users_bind_one_device(stack) -> None:
    account_a, token_a = stack.new_user()
    # A connects to a different child in each request, so a repeat is a conflict too.
    children_a = [create_child(stack, token_a, first_name=f"A{i}") for i in range(4)]
    account_b, token_b = stack.new_user()
    device = new_device(stack)
    calls = []
    for index in range(8):
        if index % 2 == 0:
            child_id = children_a[index // 2]["id"]
            calls.append(lambda c=child_id: ("A", connect(stack, token_a, device, c)))
        else:
            calls.append(lambda: ("B", bind(stack, token_b, device["mac_address"])))
    results = run_together(calls)
    assert all(isinstance(result, tuple) for result in results), results
    codes = sorted(response.status_code for _, response in results)
    assert codes == [200] + [409] * 7, [(who, r.text) for who, r in results]
    for who, response in results:
        if response.status_code == 409 and who == "A":
            assert response.json() == {"detail": "Already Connected Device"}
        elif response.status_code == 409:
            assert status_error(response) == (409, "error", "DEVICE_ALREADY_BOUND")
    rows = binding_rows(stack, device["id"])
    assert len(rows) == 1
    (winner,) = [who for who, response in results if response.status_code == 200]
    assert rows[0][0] == (account_a if winner == "A" else account_b)["id"]
    assert registry(stack, device["id"])["is_active"] is True


def test_concurrent_binds_of_one_device_by_two_users_bind_it_once(stack):
    for _ in range(3):
        two_users_bind_one_device(stack)


def identical_connects(stack) -> None:
    account, token, child = parent_with_child(stack)
    device = new_device(stack)
    results = run_together([lambda: connect(stack, token, device, child["id"])] * 8)
    assert statuses(results) == [200] * 8, texts(results)
    assert all(result.json() == CONNECTED for result in results)
    assert binding_rows(stack, device["id"]) == [(account["id"], child["id"])]


def test_concurrent_identical_connects_are_idempotent(stack):
    for _ in range(3):
        identical_connects(stack)


def test_concurrent_binds_by_one_account_make_one_primary(stack):
    _, token, child = parent_with_child(stack)
    devices = [new_device(stack) for _ in range(8)]
    calls = [
        (lambda d=d: connect(stack, token, d, child["id"]))
        if index % 2
        else (lambda d=d: bind(stack, token, d["mac_address"]))
        for index, d in enumerate(devices)
    ]
    results = run_together(calls)
    assert statuses(results) == [200] * 8, texts(results)
    listed = user_devices(stack, token)
    assert sorted(row["device"] for row in listed) == sorted(d["id"] for d in devices)
    assert len([row for row in listed if row["is_primary"]]) == 1


def test_concurrent_set_primary_leaves_one_primary(stack, user):
    account, token = user
    bindings = [bound(stack, token, new_device(stack)) for _ in range(8)]
    calls = [
        (lambda b=b: stack.request("POST", f"{USER_DEVICES}{b['id']}/set_primary/", token))
        for b in bindings
    ]
    results = run_together(calls)
    assert statuses(results) == [200] * 8, texts(results)
    assert len(primaries(stack, token)) == 1
    counted = query_rows(
        stack,
        "SELECT COUNT(*) FROM binding WHERE account_id = ? AND is_primary = ?",
        account["id"],
        True,
    )
    assert counted == [(1,)]


def unbind_primary_while_choosing_another(stack) -> None:
    _, token = stack.new_user()
    oldest, current, chosen = (bound(stack, token, new_device(stack)) for _ in range(3))
    assert stack.request("POST", f"{USER_DEVICES}{current['id']}/set_primary/", token).ok
    results = run_together(
        [
            lambda: stack.request("DELETE", f"{USER_DEVICES}{current['id']}/", token),
            lambda: stack.request("POST", f"{USER_DEVICES}{chosen['id']}/set_primary/", token),
        ]
    )
    assert statuses(results) == [204, 200], texts(results)
    remaining = user_devices(stack, token)
    assert [row["id"] for row in remaining] == [oldest["id"], chosen["id"]]
    assert [row["id"] for row in remaining if row["is_primary"]] == [chosen["id"]]


def test_unbinding_the_primary_while_another_is_made_primary_leaves_one_primary(stack):
    for _ in range(ROUNDS):
        unbind_primary_while_choosing_another(stack)


def unbind_primary_and_another(stack, api: str) -> None:
    _, token, child = parent_with_child(stack)
    devices = [new_device(stack) for _ in range(3)]
    for device in devices:
        assert connect(stack, token, device, child["id"]).status_code == 200
    first, second, third = user_devices(stack, token)
    assert first["is_primary"] is True

    def unbind(row: dict, device: dict):
        if api == "un-connect":
            return unconnect(stack, token, device["unique_id"], child["id"])
        return stack.request("DELETE", f"{USER_DEVICES}{row['id']}/", token)

    results = run_together([lambda: unbind(first, devices[0]), lambda: unbind(second, devices[1])])
    expected = 200 if api == "un-connect" else 204
    assert statuses(results) == [expected, expected], texts(results)
    assert user_devices(stack, token) == [{**third, "is_primary": True}]


@pytest.mark.parametrize("api", ["user-devices", "un-connect"])
def test_unbinding_the_primary_and_another_together_leaves_one_primary(stack, api):
    for _ in range(2 * ROUNDS):
        unbind_primary_and_another(stack, api)


# --- gRPC --------------------------------------------------------------------------


@pytest.fixture
def binding_stub(stack):
    return binding_pb2_grpc.BindingServiceStub(stack.channel())


def test_lux_flow_over_grpc(stack, binding_stub):
    _, token, child = parent_with_child(stack)
    auth = metadata(token)
    device = new_device(stack)
    connected = binding_stub.ConnectDevice(
        pb.ConnectDeviceRequest(
            serial_code=device["device_code"],
            mac_id=device["mac_address"],
            unique_id=device["unique_id"],
            real_user_id=child["id"],
        ),
        metadata=auth,
    )
    assert connected == pb.ConnectDeviceResponse(statuscode=200, message="device connected")

    got = binding_stub.GetChildDevice(
        pb.GetChildDeviceRequest(real_user_id=child["id"]), metadata=auth
    )
    assert (got.id, got.real_user_id, got.unique_id, got.serial_code, got.mac_id) == (
        device["id"],
        child["id"],
        device["unique_id"],
        device["device_code"],
        device["mac_address"],
    )
    assert got.project_id == got.hardware_id == device["device_type"]

    checked = binding_stub.CheckDevice(
        pb.CheckDeviceRequest(unique_id=device["unique_id"]), metadata=auth
    )
    assert checked.detail == "Connection Confirmed"
    assert checked.device_data == got

    empty_child = create_child(stack, token, first_name="Empty")
    rows = binding_stub.ListChildDevices(pb.ListChildDevicesRequest(), metadata=auth).rows
    assert [(row.real_user_id, row.id) for row in rows] == [
        (child["id"], device["id"]),
        (empty_child["id"], 0),
    ]
    assert rows[0].created_at.string_value.endswith("Z")
    assert rows[1].created_at.WhichOneof("kind") == "null_value"

    renamed = binding_stub.UpdateDeviceAlias(
        pb.UpdateDeviceAliasRequest(
            device_id=device["id"], real_user_id=child["id"], device_alias="bedroom"
        ),
        metadata=auth,
    )
    assert renamed.device_alias == "bedroom"

    status = binding_stub.DisconnectDevice(
        pb.DisconnectDeviceRequest(unique_id=device["unique_id"], real_user_id=child["id"]),
        metadata=auth,
    )
    assert (status.statusCode, status.message) == (200, "device unconnected")
    with pytest.raises(grpc.RpcError) as error:
        binding_stub.GetChildDevice(
            pb.GetChildDeviceRequest(real_user_id=child["id"]), metadata=auth
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "Device not found"


def test_home_screen_marks_the_array_for_rest_only(stack, binding_stub, lux):
    """The REST edge needs the marker (the documented body is a bare array); a native
    gRPC client gets the plain response without metadata sent ahead of it."""
    rest = stack.request("GET", "/api/v1/lux/device/get-all-device", lux.token)
    assert rest.status_code == 200
    assert [row["id"] for row in rest.json()] == [lux.device["id"]]
    assert REST_ARRAY_HEADER not in rest.headers
    response, call = binding_stub.ListChildDevices.with_call(
        pb.ListChildDevicesRequest(), metadata=metadata(lux.token)
    )
    assert [row.id for row in response.rows] == [lux.device["id"]]
    assert REST_ARRAY_HEADER not in dict(call.initial_metadata())


def test_user_device_flow_over_grpc(stack, binding_stub, user):
    account, token = user
    auth = metadata(token)
    first_device, second_device = new_device(stack), new_device(stack)
    first = binding_stub.BindUserDevice(
        pb.BindUserDeviceRequest(mac_address=first_device["mac_address"].lower(), nickname="a"),
        metadata=auth,
    )
    assert (first.user, first.device, first.nickname, first.is_primary) == (
        account["id"],
        first_device["id"],
        "a",
        True,
    )
    assert first.device_type == "智能音箱"
    second = binding_stub.BindUserDevice(
        pb.BindUserDeviceRequest(mac_address=second_device["mac_address"]), metadata=auth
    )
    assert second.is_primary is False

    primary = binding_stub.SetPrimaryUserDevice(
        pb.SetPrimaryUserDeviceRequest(id=second.id), metadata=auth
    )
    assert (primary.status, primary.message) == ("success", "成功设置主要设备")
    assert primary.data.id == second.id and primary.data.is_primary

    listed = binding_stub.ListUserDevices(pb.ListUserDevicesRequest(), metadata=auth)
    assert [(row.id, row.is_primary) for row in listed.user_devices] == [
        (first.id, False),
        (second.id, True),
    ]

    binding_stub.UnbindUserDevice(pb.UnbindUserDeviceRequest(id=second.id), metadata=auth)
    listed = binding_stub.ListUserDevices(pb.ListUserDevicesRequest(), metadata=auth)
    assert [(row.id, row.is_primary) for row in listed.user_devices] == [(first.id, True)]

    with pytest.raises(grpc.RpcError) as error:
        binding_stub.UnbindUserDevice(pb.UnbindUserDeviceRequest(id=second.id), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_foreign_child_is_permission_denied_over_grpc(stack, binding_stub, lux):
    _, stranger = stack.new_user()
    auth = metadata(stranger)
    device = new_device(stack)
    calls = [
        lambda: binding_stub.GetChildDevice(
            pb.GetChildDeviceRequest(real_user_id=lux.child["id"]), metadata=auth
        ),
        lambda: binding_stub.ConnectDevice(
            pb.ConnectDeviceRequest(
                serial_code=device["device_code"],
                mac_id=device["mac_address"],
                unique_id=device["unique_id"],
                real_user_id=lux.child["id"],
            ),
            metadata=auth,
        ),
        lambda: binding_stub.DisconnectDevice(
            pb.DisconnectDeviceRequest(
                unique_id=lux.device["unique_id"], real_user_id=lux.child["id"]
            ),
            metadata=auth,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.value.details() == "Not authorized user"
    assert binding_rows(stack, lux.device["id"]) == [(lux.account["id"], lux.child["id"])]
    assert binding_rows(stack, device["id"]) == []
