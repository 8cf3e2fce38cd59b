"""RtcService (seed 003 section 5): Volcano Engine RTC tokens over REST and gRPC."""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from devicehub.integrations import volcano_token
from devicehub.testing.stack import DEVICEHUB, free_port, stop_process
from devicehub.v1 import rtc_pb2, rtc_pb2_grpc

from api_client import (
    batch_create_devices,
    create_batch,
    create_device,
    create_type,
    metadata,
    new_device,
    query_database,
    random_mac,
    within_one_window,
)
from bound_accounts import USER_DEVICES, bind, user_with_primary_device
from stack_settings import RTC_APP_ID, RTC_APP_KEY

GENERATE = "/api/device/rtc-token/generate/"
BY_MAC = "/api/device/rtc-token/get_by_mac/"
DATA_KEYS = {
    "token",
    "room_id",
    "user_id",
    "app_id",
    "expire_time",
    "task_id",
    "device_code",
    "device_type",
}


def typed_device(stack, type_name: str) -> dict:
    admin = stack.admin_token
    device_type = create_type(stack, admin, name=type_name)
    batch = create_batch(stack, admin, device_type["id"])
    return create_device(stack, admin, device_type["id"], batch["id"])


def token_data(response) -> dict:
    """The data of a successful response, after checking the documented envelope."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"}
    assert (body["status"], body["message"]) == ("success", "Token生成成功")
    assert set(body["data"]) == DATA_KEYS
    assert body["data"]["app_id"] == RTC_APP_ID
    assert body["data"]["task_id"].startswith("task-")
    return body["data"]


def error(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"status", "message", "code"}, body
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return response.status_code, body["code"]


def verified(data: dict, ttl: int = 86_400) -> volcano_token.AccessToken:
    """The token's fields, after checking its signature, ids and lifetime."""
    fields = volcano_token.verify_token(data["token"], RTC_APP_KEY)
    assert (fields.app_id, fields.room_id, fields.user_id) == (
        RTC_APP_ID,
        data["room_id"],
        data["user_id"],
    )
    assert fields.expire_at - fields.issued_at == ttl == data["expire_time"]
    assert abs(fields.issued_at - time.time()) < 60
    assert {0, 4} <= set(fields.privileges)
    assert set(fields.privileges.values()) == {fields.expire_at}
    return fields


def by_mac(stack, mac: str, **params):
    return stack.request("GET", BY_MAC, params={"mac_address": mac, **params})


@contextmanager
def extra_server(stack, tmp_path, **env: str) -> Iterator[grpc.Channel]:
    """A second gRPC-only server on the stack's database, with changed settings."""
    env = {
        **stack.env,
        "DEVICEHUB_GRPC_PORT": str(free_port()),
        "DEVICEHUB_WS_PORT": str(free_port()),
        "DEVICEHUB_DATA_DIR": str(tmp_path),
        **env,
    }
    server = subprocess.Popen(
        [DEVICEHUB, "serve", "--no-gateway"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert "gRPC  listening" in server.stdout.readline()
        with grpc.insecure_channel(f"127.0.0.1:{env['DEVICEHUB_GRPC_PORT']}") as channel:
            yield channel
    finally:
        assert stop_process(server) == 0


# --- generate -----------------------------------------------------------------------


def test_generate_documented_example_names_the_primary_device(stack):
    account, token = stack.new_user()
    first, second = typed_device(stack, "智能音箱"), typed_device(stack, "儿童手表")
    bind(stack, token, first)
    bind(stack, token, second, is_primary=True)
    data = token_data(stack.request("POST", GENERATE, token, json={"expire_time": 86400}))
    assert {k: v for k, v in data.items() if k not in ("token", "task_id")} == {
        "room_id": f"{account['id']:08d}",
        "user_id": str(account["id"]),
        "app_id": RTC_APP_ID,
        "expire_time": 86400,
        "device_code": second["device_code"],
        "device_type": "儿童手表",
    }
    verified(data)


def test_generate_over_grpc(stack):
    account, token, device = user_with_primary_device(stack)
    stub = rtc_pb2_grpc.RtcServiceStub(stack.channel())
    response = stub.GenerateRtcToken(
        rtc_pb2.GenerateRtcTokenRequest(expire_time=3600), metadata=metadata(token)
    )
    assert (response.status, response.message) == ("success", "Token生成成功")
    data = response.data
    assert (data.room_id, data.user_id, data.app_id, data.device_code) == (
        f"{account['id']:08d}",
        str(account["id"]),
        RTC_APP_ID,
        device["device_code"],
    )
    fields = ("token", "room_id", "user_id", "expire_time")
    verified({name: getattr(data, name) for name in fields}, ttl=3600)


def test_each_token_has_its_own_task_id(stack):
    _, token, _ = user_with_primary_device(stack)
    tasks = {token_data(stack.request("POST", GENERATE, token, json={}))["task_id"] for _ in "ab"}
    assert len(tasks) == 2


@pytest.mark.parametrize(
    ("body", "ttl"),
    [
        ({}, 86_400),
        ({"expire_time": 0}, 86_400),
        ({"expire_time": 3600}, 3600),
        ({"expire_time": 60}, 60),
        ({"expire_time": 604800}, 604_800),
    ],
)
def test_generate_expire_time(stack, body, ttl):
    _, token, _ = user_with_primary_device(stack)
    data = token_data(stack.request("POST", GENERATE, token, json=body))
    assert data["expire_time"] == ttl
    verified(data, ttl)


@pytest.mark.parametrize("expire_time", [59, 604801, -1])
def test_generate_refuses_expire_time_out_of_range(stack, expire_time):
    _, token, _ = user_with_primary_device(stack)
    response = stack.request("POST", GENERATE, token, json={"expire_time": expire_time})
    assert error(response) == (400, "INVALID_ARGUMENT")


def test_generate_without_bound_device_is_404(stack, user):
    _, token = user
    response = stack.request("POST", GENERATE, token, json={"expire_time": 86400})
    assert error(response) == (404, "NO_BOUND_DEVICE")


def test_generate_after_unbinding_the_only_device_is_404(stack):
    _, token, _ = user_with_primary_device(stack)
    (row,) = stack.request("GET", USER_DEVICES, token).json()
    assert stack.request("DELETE", f"{USER_DEVICES}{row['id']}/", token).status_code == 204
    response = stack.request("POST", GENERATE, token, json={})
    assert error(response) == (404, "NO_BOUND_DEVICE")


def test_generate_needs_a_token(stack):
    response = stack.request("POST", GENERATE, json={"expire_time": 86400})
    assert error(response) == (401, "UNAUTHENTICATED")
    stub = rtc_pb2_grpc.RtcServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as raised:
        stub.GenerateRtcToken(rtc_pb2.GenerateRtcTokenRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- get_by_mac ---------------------------------------------------------------------


def test_get_by_mac_documented_example_needs_no_user_token(stack):
    account, _, device = user_with_primary_device(stack)
    response = by_mac(stack, device["mac_address"], expire_time=86400)
    assert "Authorization" not in response.request.headers
    data = token_data(response)
    assert {k: v for k, v in data.items() if k not in ("token", "task_id")} == {
        "room_id": f"{account['id']:08d}",
        "user_id": f"device-{device['id']}",
        "app_id": RTC_APP_ID,
        "expire_time": 86400,
        "device_code": device["device_code"],
        "device_type": "智能音箱",
    }
    verified(data)


def test_get_by_mac_accepts_lower_case_and_dashes(stack):
    account, _, device = user_with_primary_device(stack)
    for mac in (device["mac_address"].lower(), device["mac_address"].replace(":", "-")):
        data = token_data(by_mac(stack, mac))
        assert (data["room_id"], data["user_id"]) == (
            f"{account['id']:08d}",
            f"device-{device['id']}",
        )


def test_device_and_owner_share_one_room(stack):
    _, token, device = user_with_primary_device(stack)
    user_token = token_data(stack.request("POST", GENERATE, token, json={}))
    device_token = token_data(by_mac(stack, device["mac_address"]))
    assert user_token["room_id"] == device_token["room_id"]
    assert user_token["user_id"] != device_token["user_id"]


def test_get_by_mac_expire_time(stack):
    _, _, device = user_with_primary_device(stack)
    verified(token_data(by_mac(stack, device["mac_address"], expire_time=3600)), 3600)
    for bad in (59, 604801):
        assert error(by_mac(stack, device["mac_address"], expire_time=bad)) == (
            400,
            "INVALID_ARGUMENT",
        )


def test_get_by_mac_over_grpc_without_metadata(stack):
    account, _, device = user_with_primary_device(stack)
    stub = rtc_pb2_grpc.RtcServiceStub(stack.channel())
    response = stub.GetRtcTokenByMac(
        rtc_pb2.GetRtcTokenByMacRequest(mac_address=device["mac_address"])
    )
    assert (response.data.room_id, response.data.user_id, response.data.expire_time) == (
        f"{account['id']:08d}",
        f"device-{device['id']}",
        86400,
    )
    volcano_token.verify_token(response.data.token, RTC_APP_KEY)


def test_get_by_mac_unknown_mac_is_404(stack):
    assert error(by_mac(stack, "02:00:5E:10:00:01")) == (404, "DEVICE_NOT_FOUND")


def test_get_by_mac_registered_but_unbound_device_is_404(stack):
    device = new_device(stack)
    assert error(by_mac(stack, device["mac_address"])) == (404, "DEVICE_NOT_FOUND")


def test_get_by_mac_after_unbinding_is_404(stack):
    _, token, device = user_with_primary_device(stack)
    token_data(by_mac(stack, device["mac_address"]))
    (row,) = stack.request("GET", USER_DEVICES, token).json()
    assert stack.request("DELETE", f"{USER_DEVICES}{row['id']}/", token).status_code == 204
    assert error(by_mac(stack, device["mac_address"])) == (404, "DEVICE_NOT_FOUND")


@pytest.mark.parametrize("mac", ["", "not-a-mac", "00:11:22:33:44", "00:11:22:33:44:GG"])
def test_get_by_mac_malformed_mac_is_400(stack, mac):
    assert error(by_mac(stack, mac)) == (400, "INVALID_ARGUMENT")


def test_get_by_mac_missing_parameter_is_400(stack):
    assert error(stack.request("GET", BY_MAC)) == (400, "INVALID_ARGUMENT")


# --- extra servers: rate limit, not configured --------------------------------------


def test_get_by_mac_is_rate_limited_per_mac(stack, tmp_path):
    _, _, limited = user_with_primary_device(stack)
    _, _, other = user_with_primary_device(stack)
    with extra_server(stack, tmp_path, DEVICEHUB_RTC_MAC_REQUESTS_PER_MINUTE="2") as channel:
        stub = rtc_pb2_grpc.RtcServiceStub(channel)

        def call(mac: str) -> rtc_pb2.RtcTokenResponse:
            return stub.GetRtcTokenByMac(rtc_pb2.GetRtcTokenByMacRequest(mac_address=mac))

        within_one_window(60, needed=10)
        call(limited["mac_address"])
        call(limited["mac_address"].lower())  # the same MAC, however it is spelled
        with pytest.raises(grpc.RpcError) as raised:
            call(limited["mac_address"])
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert call(other["mac_address"]).data.user_id == f"device-{other['id']}"


def test_not_configured_is_unavailable(stack, tmp_path):
    _, token, device = user_with_primary_device(stack)
    with extra_server(stack, tmp_path, DEVICEHUB_RTC_APP_ID="") as channel:
        stub = rtc_pb2_grpc.RtcServiceStub(channel)
        calls = [
            lambda: stub.GenerateRtcToken(
                rtc_pb2.GenerateRtcTokenRequest(), metadata=metadata(token)
            ),
            lambda: stub.GetRtcTokenByMac(
                rtc_pb2.GetRtcTokenByMacRequest(mac_address=device["mac_address"])
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert raised.value.details() == "RTC is not configured"


# --- device secrets and signed get_by_mac ------------------------------------------

SECRETS = "/api/device/device-secrets"


def sign(secret: str, mac: str, timestamp: int) -> str:
    """What firmware sends: hex HMAC-SHA256 keyed with the secret of ``<MAC>:<timestamp>``."""
    return hmac.new(secret.encode(), f"{mac}:{timestamp}".encode(), hashlib.sha256).hexdigest()


def issue(stack, token: str, **body):
    return stack.request("POST", SECRETS, token, json=body)


def issued_secret(stack, device: dict) -> str:
    response = issue(stack, stack.admin_token, device_ids=[device["id"]])
    assert response.status_code == 200, response.text
    (item,) = response.json()["secrets"]
    return item["secret"]


def signed_by_mac(stack, mac: str, secret: str, timestamp: int | None = None, **params):
    timestamp = int(time.time()) if timestamp is None else timestamp
    return by_mac(
        stack, mac, timestamp=timestamp, signature=sign(secret, mac.upper(), timestamp), **params
    )


def test_issuing_device_secrets_is_admin_only(stack, user):
    device = new_device(stack)
    _, token = user
    assert error(issue(stack, token, device_ids=[device["id"]])) == (403, "PERMISSION_DENIED")
    assert error(issue(stack, "", device_ids=[device["id"]])) == (401, "UNAUTHENTICATED")
    stub = rtc_pb2_grpc.RtcServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as raised:
        stub.IssueDeviceSecrets(
            rtc_pb2.IssueDeviceSecretsRequest(device_ids=[device["id"]]), metadata=metadata(token)
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_device_secret_is_shown_once_and_stored_hashed(stack):
    _, _, device = user_with_primary_device(stack)
    response = issue(stack, stack.admin_token, device_ids=[device["id"]])
    assert response.status_code == 200, response.text
    (item,) = response.json()["secrets"]
    assert item["device_id"] == device["id"]
    assert (item["mac_address"], item["device_code"]) == (
        device["mac_address"],
        device["device_code"],
    )
    assert re.fullmatch(r"[0-9a-f]{64}", item["secret"]) and item["generation"] == 1
    # Nowhere to read it again: not in the device, not in the database.
    for path in (f"/api/device/devices/{device['id']}/", "/api/device/devices/"):
        assert item["secret"] not in stack.request("GET", path, stack.admin_token).text
    rows = query_database(
        stack,
        "SELECT generation, secret_sha256 FROM device_credential WHERE device_id = ?",
        (device["id"],),
    )
    assert [tuple(row) for row in rows] == [
        (1, hashlib.sha256(item["secret"].encode()).hexdigest())
    ]
    assert item["secret"] not in repr(query_database(stack, "SELECT * FROM device_credential"))
    # Issuing again replaces it: the old secret no longer signs.
    again = issue(stack, stack.admin_token, device_ids=[device["id"]]).json()["secrets"][0]
    assert again["generation"] == 2 and again["secret"] != item["secret"]
    assert error(signed_by_mac(stack, device["mac_address"], item["secret"])) == (
        401,
        "DEVICE_SIGNATURE_INVALID",
    )
    token_data(signed_by_mac(stack, device["mac_address"], again["secret"]))


def test_device_secrets_for_a_whole_batch(stack):
    admin = stack.admin_token
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    created = batch_create_devices(
        stack, admin, device_type["id"], batch["id"], 5, random_mac()[:8]
    )
    secrets = issue(stack, admin, batch_id=batch["id"]).json()["secrets"]
    assert [item["device_id"] for item in secrets] == sorted(created)
    assert len({item["secret"] for item in secrets}) == 5
    assert error(issue(stack, admin, batch_id=10**9)) == (404, "DEVICE_BATCH_NOT_FOUND")
    assert error(issue(stack, admin, device_ids=[10**9])) == (404, "DEVICE_NOT_FOUND")
    assert error(issue(stack, admin)) == (400, "INVALID_ARGUMENT")


def test_signed_get_by_mac_over_rest_and_grpc(stack):
    account, _, device = user_with_primary_device(stack)
    secret = issued_secret(stack, device)
    now = int(time.time())
    data = token_data(signed_by_mac(stack, device["mac_address"].lower(), secret, now - 2))
    assert (data["room_id"], data["user_id"]) == (f"{account['id']:08d}", f"device-{device['id']}")
    verified(data)
    stub = rtc_pb2_grpc.RtcServiceStub(stack.channel())
    now -= 1  # another signature: the REST call's is used up
    response = stub.GetRtcTokenByMac(
        rtc_pb2.GetRtcTokenByMacRequest(
            mac_address=device["mac_address"],
            timestamp=now,
            signature=sign(secret, device["mac_address"], now),
        )
    )
    assert response.data.user_id == f"device-{device['id']}"
    # Unsigned calls keep working in the default mode (existing firmware).
    token_data(by_mac(stack, device["mac_address"]))


def test_bad_stale_and_replayed_signatures_are_refused(stack):
    _, _, device = user_with_primary_device(stack)
    mac = device["mac_address"]
    secret = issued_secret(stack, device)
    now = int(time.time())
    refused = (401, "DEVICE_SIGNATURE_INVALID")
    assert error(by_mac(stack, mac, timestamp=now, signature="0" * 64)) == refused
    assert error(by_mac(stack, mac, timestamp=now, signature="not hex ü")) == refused
    assert error(by_mac(stack, mac, timestamp=now)) == refused  # timestamp without signature
    assert error(signed_by_mac(stack, mac, "f" * 64, now)) == refused  # another secret
    assert error(signed_by_mac(stack, mac, secret, now - 400)) == refused  # stale
    assert error(signed_by_mac(stack, mac, secret, now + 400)) == refused  # from the future
    first = signed_by_mac(stack, mac, secret, now - 5)
    token_data(first)
    assert error(signed_by_mac(stack, mac, secret, now - 5)) == refused  # replayed
    # A device that has no secret cannot sign.
    _, _, other = user_with_primary_device(stack)
    assert error(signed_by_mac(stack, other["mac_address"], secret, now)) == refused


def test_required_mode_refuses_unsigned_calls(stack, tmp_path):
    _, _, device = user_with_primary_device(stack)
    secret = issued_secret(stack, device)
    mac = device["mac_address"]
    with extra_server(stack, tmp_path, DEVICEHUB_RTC_DEVICE_AUTH="required") as channel:
        stub = rtc_pb2_grpc.RtcServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetRtcTokenByMac(rtc_pb2.GetRtcTokenByMacRequest(mac_address=mac))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert raised.value.details() == "Device signature required"
        now = int(time.time())
        response = stub.GetRtcTokenByMac(
            rtc_pb2.GetRtcTokenByMacRequest(
                mac_address=mac, timestamp=now, signature=sign(secret, mac, now)
            )
        )
        assert response.data.user_id == f"device-{device['id']}"


def test_off_mode_ignores_signatures(stack, tmp_path):
    _, _, device = user_with_primary_device(stack)
    with extra_server(stack, tmp_path, DEVICEHUB_RTC_DEVICE_AUTH="off") as channel:
        stub = rtc_pb2_grpc.RtcServiceStub(channel)
        response = stub.GetRtcTokenByMac(
            rtc_pb2.GetRtcTokenByMacRequest(
                mac_address=device["mac_address"], timestamp=1, signature="0" * 64
            )
        )
        assert response.data.user_id == f"device-{device['id']}"
