"""The live REST edge answers as the generated OpenAPI document says, on both databases.

Each test tours one part of the API, successes and documented failures alike, and holds
every answer to the document: a documented status of that operation, its media type, a
body that validates against its schema (JSON Schema 2020-12, formats checked) or none
where none is documented, and the headers it requires. tests/unit/test_openapi.py checks
the document itself.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import urlsplit

import jsonschema
import requests

from devicehub import resources
from devicehub.testing.stack import Stack, unique

from api_client import random_mac
from firmware_setup import firmware_bytes

DOCUMENT = json.loads(resources.OPENAPI_DOCUMENT.read_text())
# A literal segment wins over a variable (/devices/batch_create/ is not /devices/{id}/).
TEMPLATES = sorted(
    (
        (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"), path)
        for path in DOCUMENT["paths"]
    ),
    key=lambda pair: pair[1].count("{"),
)


def validate(instance: object, schema: dict) -> None:
    """Validates against a schema of the document, its references resolved in it."""
    jsonschema.Draft202012Validator(
        {**schema, "components": DOCUMENT["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ).validate(instance)


def documented(response: requests.Response) -> dict:
    """The document's answer for ``response``'s request and status (asserted to exist)."""
    request = response.request
    path = urlsplit(request.url).path
    template = next((t for pattern, t in TEMPLATES if pattern.match(path)), None)
    assert template is not None, f"{path} is not in the document"
    operation = DOCUMENT["paths"][template].get(str(request.method).lower())
    assert operation is not None, f"{request.method} {template} is not in the document"
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{request.method} {path}: {status} is not documented: {response.content[:300]!r}"
    )
    answer = operation["responses"][status]
    if "$ref" in answer:
        answer = DOCUMENT["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
    return answer


def conforms(response: requests.Response) -> requests.Response:
    """Asserts that ``response`` is one the document describes; returns it."""
    answer = documented(response)
    where = f"{response.request.method} {response.request.url} {response.status_code}"
    content = answer.get("content")
    if content is None:
        assert response.content == b"", where
    else:
        media = response.headers.get("content-type", "").split(";")[0]
        assert media in content, (where, media, list(content))
        if media == "application/json":
            validate(response.json(), content[media]["schema"])
    for name, header in answer.get("headers", {}).items():
        if name not in response.headers:
            assert not header.get("required"), (where, name)
            continue
        value: object = response.headers[name]
        if header["schema"].get("type") == "integer":
            value = int(str(value))
        validate(value, header["schema"])
    return response


class Client:
    """REST calls whose every answer is held to the document."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def __call__(
        self, method: str, path: str, token: str | None = None, scheme: str = "Bearer", **kwargs
    ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"{scheme} {token}"
        return conforms(
            requests.request(method, self.stack.url(path), headers=headers, timeout=30, **kwargs)
        )

    def ok(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        response = self(method, path, token, **kwargs)
        assert response.status_code in (200, 204, 206), (path, response.text)
        return response

    def fails(self, status: int, method: str, path: str, token: str | None = None, **kwargs):
        response = self(method, path, token, **kwargs)
        assert response.status_code == status, (path, response.text)
        return response


def registered(call: Client) -> tuple[dict, str]:
    username = unique("user").lower()
    credentials = {"username": username, "password": "password-123"}
    account = call.ok("POST", "/api/v1/auth/register", json={**credentials, "phone": "01012345678"})
    token = call.ok("POST", "/api/v1/auth/token", json=credentials).json()["access_token"]
    return account.json(), token


def catalog(call: Client, admin: str, devices: int = 1) -> tuple[dict, dict, list[dict]]:
    """A fresh device type and batch with ``devices`` devices."""
    device_type = call.ok(
        "POST", "/api/device/device-types/", admin, json={"name": "音箱", "code": unique("T")}
    ).json()
    batch = call.ok(
        "POST",
        "/api/device/device-batches/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch_number": unique("B"),
            "production_date": "2023-01-01",
            "quantity": devices,
        },
    ).json()
    created = [
        call.ok(
            "POST",
            "/api/device/devices/",
            admin,
            json={
                "device_type": device_type["id"],
                "batch": batch["id"],
                "serial_number": unique("S"),
                "mac_address": random_mac(),
            },
        ).json()
        for _ in range(devices)
    ]
    return device_type, batch, created


def test_accounts_and_tokens_answer_as_documented(stack: Stack):
    call = Client(stack)
    call.ok("GET", "/api/v1/ping")
    call.ok("GET", "/api/v1/ping/")
    username = unique("user").lower()
    credentials = {"username": username, "password": "password-123"}
    account = call.ok("POST", "/api/v1/auth/register", json=credentials).json()
    call.fails(409, "POST", "/api/v1/auth/register", json=credentials)
    call.fails(400, "POST", "/api/v1/auth/register", json={"username": "x", "password": "p"})
    call.fails(400, "POST", "/api/v1/auth/register/", data="{not json")
    tokens = call.ok("POST", "/api/v1/auth/token", json=credentials).json()
    call.fails(401, "POST", "/api/v1/auth/token", json={**credentials, "password": "wrong-one"})
    call.ok("POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    call.fails(401, "POST", "/api/v1/auth/refresh", json={"refresh_token": "not-a-token"})
    token = tokens["access_token"]

    call.ok("GET", "/api/v1/accounts/me", token)
    call.ok("GET", "/api/v1/accounts/me/", token, scheme="Token")
    call.fails(401, "GET", "/api/v1/accounts/me")
    call.fails(401, "GET", "/api/v1/accounts/me", "not-a-token")
    child_fields = {"first_name": "Min", "last_name": "Kim", "birthdate": "2015-03-01"}
    for first_name in ("Min", "Jun"):
        body = {**child_fields, "first_name": first_name, "gender": "female"}
        child = call.ok("POST", "/api/v1/accounts/children/", token, json=body).json()
    call.fails(400, "POST", "/api/v1/accounts/children", token, json={"first_name": ""})
    page = call.ok("GET", "/api/v1/accounts/children/", token, params={"page_size": 1})
    assert len(page.json()) == 1 and page.headers["x-next-page-token"]
    call.ok(
        "GET",
        "/api/v1/accounts/children",
        token,
        params={"page_token": page.headers["x-next-page-token"]},
    )
    call.fails(400, "GET", "/api/v1/accounts/children/", token, params={"page_token": "zzz"})
    call.ok("PATCH", f"/api/v1/accounts/children/{child['id']}/", token, json={"gender": "male"})
    call.fails(404, "PATCH", "/api/v1/accounts/children/2000000000/", token, json={"gender": "m"})
    call.fails(400, "PATCH", "/api/v1/accounts/children/abc/", token, json={"gender": "m"})
    wrong = {"current_password": "wrong-password", "new_password": "password-456"}
    call.fails(403, "POST", "/api/v1/accounts/me/password", token, json=wrong)
    call.fails(
        403, "PUT", f"/api/v1/accounts/{account['id']}/admin", token, json={"is_admin": True}
    )
    call.fails(
        404, "PUT", "/api/v1/accounts/2000000000/admin", stack.admin_token, json={"is_admin": True}
    )
    call.ok("DELETE", f"/api/v1/accounts/children/{child['id']}/", token)
    call.fails(404, "DELETE", f"/api/v1/accounts/children/{child['id']}", token)
    call.ok(
        "POST",
        "/api/v1/accounts/me/password/",
        token,
        json={**wrong, "current_password": "password-123"},
    )
    token = call.ok(
        "POST", "/api/v1/auth/token", json={**credentials, "password": "password-456"}
    ).json()["access_token"]
    call.ok("DELETE", "/api/v1/accounts/me", token)
    call.fails(401, "DELETE", "/api/v1/accounts/me/", token)


def test_the_catalog_answers_as_documented(stack: Stack, admin: str):
    call = Client(stack)
    _, user = registered(call)
    device_type, batch, (device,) = catalog(call, admin)
    type_path = f"/api/device/device-types/{device_type['id']}/"
    batch_path = f"/api/device/device-batches/{batch['id']}/"
    device_path = f"/api/device/devices/{device['id']}/"
    new_type = {"name": "音箱", "code": unique("T")}
    call.fails(
        409,
        "POST",
        "/api/device/device-types/",
        admin,
        json={**new_type, "code": device_type["code"]},
    )
    call.fails(403, "POST", "/api/device/device-types", user, json=new_type)
    call.ok("GET", "/api/device/device-types/", user, params={"page_size": 2})
    call.ok("GET", type_path, user)
    call.fails(404, "GET", "/api/device/device-types/2000000000/", user)
    call.ok(
        "PUT",
        type_path,
        admin,
        json={"name": "音箱 2", "code": device_type["code"], "description": "新"},
    )
    call.fails(
        409, "PUT", type_path, admin, json={"name": "音箱", "code": unique("T")}
    )  # code locked
    call.ok("GET", "/api/device/device-batches/", user, params={"page_size": 2})
    call.ok("GET", batch_path, user)
    batch_fields = {"device_type": device_type["id"], "batch_number": batch["batch_number"]}
    call.ok("PUT", batch_path, admin, json={**batch_fields, "production_date": "2023-02-01"})
    call.fails(403, "PUT", batch_path, user, json={**batch_fields, "production_date": "2023-02-01"})

    serials = {"device_type": device_type["id"], "batch": batch["id"], "start_serial": "00100"}
    mac_prefix = ":".join(uuid.uuid4().hex[i : i + 2] for i in range(0, 6, 2))
    created = call.ok(
        "POST",
        "/api/device/devices/batch_create/",
        admin,
        json={**serials, "count": 3, "mac_prefix": mac_prefix},
    )
    assert len(created.json()["data"]) == 3
    call.fails(
        409,
        "POST",
        "/api/device/devices/batch_create",
        admin,
        json={**serials, "count": 3, "mac_prefix": mac_prefix},
    )
    call.fails(
        400,
        "POST",
        "/api/device/devices/batch_create/",
        admin,
        json={**serials, "count": 1001, "mac_prefix": "0A"},
    )
    page = call.ok("GET", "/api/device/devices/", admin, params={"page_size": 2})
    assert page.headers["x-next-page-token"]
    call.ok(
        "GET", "/api/device/devices", admin, params={"mac_address": device["mac_address"].lower()}
    )
    call.fails(400, "GET", "/api/device/devices/", admin, params={"mac_address": "zz"})
    call.ok("GET", device_path, admin)
    call.fails(404, "GET", device_path, user)  # not bound to the caller
    fields = {
        "device_type": device_type["id"],
        "batch": batch["id"],
        "mac_address": device["mac_address"],
    }
    call.ok("PUT", device_path, admin, json={**fields, "serial_number": unique("S")})
    assert call.ok("GET", device_path, admin).json()["activated_at"] is None

    call.fails(409, "DELETE", type_path, admin)
    call.fails(409, "DELETE", batch_path, admin)
    for device_id in (device["id"], *created.json()["data"]):
        call.ok("DELETE", f"/api/device/devices/{device_id}", admin)
    call.fails(404, "DELETE", device_path, admin)
    call.ok("DELETE", batch_path, admin)
    call.ok("DELETE", type_path, admin)


def test_the_lux_api_answers_as_documented(stack: Stack, admin: str):
    call = Client(stack)
    _, token = registered(call)
    child = call.ok(
        "POST",
        "/api/v1/accounts/children",
        token,
        json={"first_name": "Min", "last_name": "Kim", "birthdate": "2015-03-01", "gender": "f"},
    ).json()
    _, _, (device, other) = catalog(call, admin, devices=2)
    ids = {"unique_id": device["unique_id"], "real_user_id": child["id"]}
    call.ok(
        "GET", "/api/v1/lux/device/check-device", token, params={"unique_id": device["unique_id"]}
    )
    call.fails(404, "GET", "/api/v1/lux/device/check-device/", token, params={"unique_id": "nope"})
    connect = {"serial_code": device["device_code"], "mac_id": device["mac_address"], **ids}
    call.ok("POST", "/api/v1/lux/device/set-my-device", token, params=connect)
    call.fails(
        404,
        "POST",
        "/api/v1/lux/device/set-my-device/",
        token,
        params={**connect, "serial_code": "nope"},
    )
    call.fails(
        400,
        "POST",
        "/api/v1/lux/device/set-my-device",
        token,
        params={**connect, "real_user_id": "abc"},
    )
    unknown_child = call(
        "GET", "/api/v1/lux/device/child-device", token, params={"real_user_id": 2000000000}
    )
    assert unknown_child.status_code in (401, 404), unknown_child.text
    call.ok("GET", "/api/v1/lux/device/child-device", token, params={"real_user_id": child["id"]})
    rows = call.ok("GET", "/api/v1/lux/device/get-all-device", token).json()
    assert [row["id"] for row in rows] == [device["id"]]
    alias = {"device_id": device["id"], "real_user_id": child["id"], "device_alias": "내 기기"}
    call.ok("PATCH", "/api/v1/lux/device/update-alias", token, json=alias)
    call.fails(
        409,
        "PATCH",
        "/api/v1/lux/device/update-alias/",
        token,
        json={**alias, "device_id": other["id"]},
    )

    entry = {
        "real_user_id": child["id"],
        "device_id": device["id"],
        "unique_id": device["unique_id"],
    }
    temporary = {
        "treatment_date": "2025-02-21T15:48:49",
        "finish_flag": None,
        "last_intensity": 2,
        "treatment_time": 25,
    }
    call.ok(
        "POST",
        "/api/v1/lux/device/devlog",
        token,
        json={"log_arrays": [{**entry, "detail_data": temporary}]},
    )
    legacy = {**temporary, "finish_flag": "2", "movement": 1, "log_data": ""}
    call.ok(
        "POST",
        "/api/v1/lux/device/devlog/",
        token,
        json=[{**entry, "detail_data": legacy, "log_file_id": 3}],
    )
    call.fails(
        404,
        "POST",
        "/api/v1/lux/device/devlog",
        token,
        json={"log_arrays": [{**entry, "device_id": 2000000000, "detail_data": temporary}]},
    )
    samples = [{"val": 10, "timestamp": 1736411840 + second} for second in range(3)]
    movement = {"real_user_id": child["id"], "device_id": device["id"]}
    call.ok(
        "POST", "/api/v1/lux/device/movement", token, json={**movement, "movement_data": samples}
    )
    read = call.ok(
        "GET", "/api/v1/lux/device/movement/", token, params={**movement, "page_size": 2}
    )
    assert read.json()["next_page_token"]

    sent = call.ok("POST", "/api/v1/lux/device/alimtalk", token)
    assert sent.content == b"null" and sent.headers["x-alimtalk-outcome"] == "sent"
    again = call.ok("POST", "/api/v1/lux/device/alimtalk/", token)
    assert again.headers["x-alimtalk-outcome"] == "suppressed"

    call.ok("PATCH", "/api/v1/lux/device/un-connect", token, params=ids)
    call.fails(
        404, "PATCH", "/api/v1/lux/device/un-connect/", token, params={**ids, "unique_id": "nope"}
    )


def test_bindings_messages_and_rtc_answer_as_documented(stack: Stack, admin: str):
    call = Client(stack)
    account, token = registered(call)
    _, batch, (device, spare) = catalog(call, admin, devices=2)
    mac = device["mac_address"]
    call.fails(
        404, "POST", "/api/device/user-devices/bind/", token, json={"mac_address": random_mac()}
    )
    binding = call.ok(
        "POST",
        "/api/device/user-devices/bind/",
        token,
        json={"mac_address": mac.lower(), "nickname": "我的设备"},
    ).json()
    _, stranger = registered(call)
    call.fails(409, "POST", "/api/device/user-devices/bind", stranger, json={"mac_address": mac})
    assert call.ok("GET", "/api/device/user-devices/", token).json()[0]["is_primary"] is True
    call.ok("POST", f"/api/device/user-devices/{binding['id']}/set_primary/", token)
    call.fails(404, "POST", f"/api/device/user-devices/{binding['id']}/set_primary", stranger)

    text = {"type": "text", "message": {"content": "你好"}, "user_id": str(account["id"])}
    call.ok("POST", "/api/device/messages/", token, json=text)
    call.fails(403, "POST", "/api/device/messages/", stranger, json=text)
    call.fails(409, "POST", "/api/device/messages", stranger, json={**text, "user_id": ""})
    call.ok(
        "POST",
        "/api/device/messages/",
        token,
        json={"type": "weather", "message": {"city": "北京"}},
    )
    call.fails(
        404,
        "POST",
        "/api/device/messages/",
        token,
        json={"type": "weather", "message": {"city": "Atlantis"}},
    )
    call.fails(400, "POST", "/api/device/messages/", token, json={"type": "fly", "message": {}})
    stream = requests.get(
        stack.url("/api/device/messages/stream/"),
        headers={"Authorization": f"Bearer {token}"},
        params={"after_id": "0"},
        stream=True,
        timeout=(5, 30),
    )
    try:
        documented(stream)
        assert stream.headers["content-type"].startswith("text/event-stream")
        schema = DOCUMENT["paths"]["/api/device/messages/stream/"]["get"]["responses"]["200"][
            "content"
        ]["text/event-stream"]["x-event-data-schema"]
        line = next(line for line in stream.iter_lines(decode_unicode=True) if line)
        event = json.loads(line.removeprefix("data:"))
        validate(event, schema)
        message_id = event["message"]["id"]
    finally:
        stream.close()
    call.fails(400, "GET", "/api/device/messages/stream", token, params={"after_id": "x"})
    assert call.ok(
        "POST", "/api/device/messages/ack/", token, json={"ids": [message_id]}
    ).json() == {"acked": 1}
    call.fails(400, "POST", "/api/device/messages/ack", token, json={"ids": "x"})

    call.ok("POST", "/api/device/rtc-token/generate/", token, json={"expire_time": 3600})
    call.fails(404, "POST", "/api/device/rtc-token/generate/", stranger, json={})
    call.ok("GET", "/api/device/rtc-token/get_by_mac/", params={"mac_address": mac})
    call.fails(
        404, "GET", "/api/device/rtc-token/get_by_mac", params={"mac_address": spare["mac_address"]}
    )
    call.fails(
        401,
        "GET",
        "/api/device/rtc-token/get_by_mac/",
        params={"mac_address": mac, "timestamp": 1, "signature": "00"},
    )
    call.ok("POST", "/api/device/device-secrets", admin, json={"batch_id": batch["id"]})
    call.fails(
        403, "POST", "/api/device/device-secrets/", token, json={"device_ids": [device["id"]]}
    )
    call.fails(404, "POST", "/api/device/device-secrets", admin, json={"device_ids": [2000000000]})

    call.ok("DELETE", f"/api/device/user-devices/{binding['id']}/", token)
    call.fails(404, "DELETE", f"/api/device/user-devices/{binding['id']}", token)


def test_firmware_answers_as_documented(stack: Stack, admin: str):
    call = Client(stack)
    _, token = registered(call)
    device_type, _, (device,) = catalog(call, admin)
    call.ok(
        "POST", "/api/device/user-devices/bind/", token, json={"mac_address": device["mac_address"]}
    )
    data = firmware_bytes(1000)
    packages = "/api/device/firmware/packages"
    query = {"device_type": device_type["id"], "version": "1.2.0", "title": "Quieter fan"}
    octets = {"content-type": "application/octet-stream"}
    package = call.ok("POST", packages, admin, params=query, data=data, headers=octets).json()
    call.fails(409, "POST", f"{packages}/", admin, params=query, data=data, headers=octets)
    call.fails(
        400, "POST", packages, admin, params={**query, "version": "one"}, data=data, headers=octets
    )
    call.fails(
        403,
        "POST",
        packages,
        token,
        params={**query, "version": "1.3.0"},
        data=data,
        headers=octets,
    )
    call.ok("GET", packages, admin, params={"page_size": 1})
    call.fails(403, "GET", f"{packages}/", token)
    call.ok("GET", f"{packages}/{package['id']}", admin)
    call.fails(404, "GET", f"{packages}/2000000000/", admin)
    download = f"{packages}/{package['id']}/download"
    assert call.ok("GET", download, token).content == data
    partial = call.ok("GET", f"{download}/", admin, headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == data[10:20]
    call.fails(416, "GET", download, admin, headers={"Range": "bytes=5000-"})

    device_path = f"/api/device/firmware/devices/{device['id']}"
    call.ok("POST", f"{device_path}/installed", token, json={"version": "1.0.0"})
    call.ok("GET", f"{device_path}/installed/", token)
    _, stranger = registered(call)
    call.fails(404, "GET", f"{device_path}/installed", stranger)  # not the stranger's device
    call.ok("GET", f"{device_path}/check", token)
    rollouts = "/api/device/firmware/rollouts"
    rollout = call.ok("POST", rollouts, admin, json={"package_id": package["id"]}).json()
    call.fails(404, "POST", f"{rollouts}/", admin, json={"package_id": 2000000000})
    call.ok("GET", rollouts, admin, params={"page_size": 1})
    call.ok("GET", f"{rollouts}/{rollout['id']}/", admin)
    call.ok("GET", f"{rollouts}/{rollout['id']}/updates", admin, params={"group": 0})
    assert call.ok("GET", f"{device_path}/check/", token).json()["update_available"] is True
    call.ok("POST", f"{device_path}/progress", token, json={"state": "downloading"})
    call.fails(400, "POST", f"{device_path}/progress/", token, json={"state": "updated"})
    call.ok("GET", f"{device_path}/updates", token)
    call.ok("POST", f"{rollouts}/{rollout['id']}/pause", admin)
    call.fails(409, "POST", f"{rollouts}/{rollout['id']}/pause/", admin)
    call.ok("POST", f"{rollouts}/{rollout['id']}/resume", admin)
    call.ok("POST", f"{rollouts}/{rollout['id']}/cancel/", admin)
    call.fails(409, "DELETE", f"{packages}/{package['id']}", admin)  # the rollout uses it
    spare = call.ok(
        "POST", packages, admin, params={**query, "version": "2.0.0"}, data=data, headers=octets
    ).json()
    call.ok("DELETE", f"{packages}/{spare['id']}/", admin)


def test_the_edge_limits_answer_as_documented(stack: Stack, admin: str):
    call = Client(stack)
    huge = b'{"name": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    json_body = {"content-type": "application/json"}
    response = call.fails(
        413, "POST", "/api/device/device-types/", admin, data=huge, headers=json_body
    )
    assert response.json()["code"] == "REQUEST_TOO_LARGE"
    call.fails(413, "POST", "/api/v1/auth/register", data=huge, headers=json_body)
    big_header = {"x-padding": "y" * 70_000}
    call.fails(431, "GET", "/api/device/device-types/", admin, headers=dict(big_header))
    call.fails(431, "GET", "/api/v1/accounts/me", admin, headers=dict(big_header))
