"""DeviceService: seed 003 section 3 (devices and batch_create), REST and gRPC."""

from __future__ import annotations

import uuid

import grpc
import pytest

from devicehub.testing.stack import unique
from devicehub.v1 import device_pb2 as pb
from devicehub.v1 import device_pb2_grpc

from api_client import (
    batch_create_devices,
    create_batch,
    create_type,
    list_all,
    metadata,
    random_mac,
)

DEVICE_KEYS = {
    "id",
    "device_type",
    "device_type_name",
    "batch",
    "batch_number",
    "serial_number",
    "device_code",
    "mac_address",
    "is_active",
    "activated_at",
    "created_at",
    "updated_at",
    "unique_id",
}


@pytest.fixture
def catalog(stack, admin):
    """A fresh device type (code SP + random) and one of its batches."""
    device_type = create_type(stack, admin, code=unique("SP"), name="智能音箱")
    return device_type, create_batch(stack, admin, device_type["id"])


def device_count(stack, token) -> int:
    return len(list_all(stack, "/api/device/devices/", token))


def test_documented_examples_over_rest(stack, admin, catalog):
    device_type, batch = catalog
    mac = random_mac()
    request = {
        "device_type": device_type["id"],
        "batch": batch["id"],
        "serial_number": "00001",
        "mac_address": mac,
    }
    # 3.2 create
    created = stack.request("POST", "/api/device/devices/", admin, json=request)
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == DEVICE_KEYS
    assert {k: body[k] for k in request} == request
    assert body["device_type_name"] == "智能音箱"
    assert body["batch_number"] == batch["batch_number"]
    assert body["device_code"] == device_type["code"] + "00001"
    assert body["is_active"] is False
    assert body["activated_at"] is None
    assert uuid.UUID(body["unique_id"])
    # 3.1 list
    assert body in list_all(stack, "/api/device/devices/", admin)
    # 3.4 get
    got = stack.request("GET", f"/api/device/devices/{body['id']}/", admin)
    assert got.status_code == 200 and got.json() == body
    # 3.5 update: the device code follows the serial number
    updated = stack.request(
        "PUT",
        f"/api/device/devices/{body['id']}/",
        admin,
        json={**request, "serial_number": "00009"},
    )
    assert updated.status_code == 200
    assert updated.json()["device_code"] == device_type["code"] + "00009"
    assert updated.json()["unique_id"] == body["unique_id"]
    # 3.6 delete
    deleted = stack.request("DELETE", f"/api/device/devices/{body['id']}/", admin)
    assert (deleted.status_code, deleted.content) == (204, b"")
    missing = stack.request("GET", f"/api/device/devices/{body['id']}/", admin)
    assert missing.status_code == 404
    assert missing.json()["code"] == "DEVICE_NOT_FOUND"


def test_documented_batch_create_example(stack, admin, catalog):
    device_type, batch = catalog
    prefix = random_mac()[:8]
    response = stack.request(
        "POST",
        "/api/device/devices/batch_create/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch": batch["id"],
            "start_serial": "00001",
            "count": 100,
            "mac_prefix": prefix,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"}
    assert body["status"] == "success"
    assert body["message"] == "成功创建100个设备"
    assert len(body["data"]) == 100 and all(isinstance(i, int) for i in body["data"])
    devices = {d["id"]: d for d in list_all(stack, "/api/device/devices/", admin)}
    created = [devices[i] for i in body["data"]]
    assert [d["serial_number"] for d in created] == [f"{n:05d}" for n in range(1, 101)]
    assert [d["device_code"] for d in created] == [
        f"{device_type['code']}{n:05d}" for n in range(1, 101)
    ]
    assert created[0]["mac_address"] == f"{prefix}:00:00:01"
    assert created[99]["mac_address"] == f"{prefix}:00:00:64"
    assert len({d["unique_id"] for d in created}) == 100
    assert all(d["batch"] == batch["id"] and not d["is_active"] for d in created)


def test_batch_create_keeps_width_and_derives_macs(stack, admin, catalog):
    device_type, batch = catalog
    response = stack.request(
        "POST",
        "/api/device/devices/batch_create/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch": batch["id"],
            "start_serial": "0000998",
            "count": 3,
            "mac_prefix": random_mac()[:11].lower(),
        },
    )
    assert response.status_code == 200, response.text
    ids = response.json()["data"]
    got = [stack.request("GET", f"/api/device/devices/{i}/", admin).json() for i in ids]
    assert [d["serial_number"] for d in got] == ["0000998", "0000999", "0001000"]
    assert [d["mac_address"][-5:] for d in got] == ["03:E6", "03:E7", "03:E8"]
    assert all(d["mac_address"] == d["mac_address"].upper() for d in got)


def test_batch_create_collision_is_409_and_writes_nothing(stack, admin, catalog):
    device_type, batch = catalog
    prefix = random_mac()[:8]
    request = {
        "device_type": device_type["id"],
        "batch": batch["id"],
        "start_serial": "00010",
        "count": 5,
        "mac_prefix": prefix,
    }
    single = stack.request(
        "POST",
        "/api/device/devices/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch": batch["id"],
            "serial_number": "00012",
            "mac_address": random_mac(),
        },
    )
    assert single.status_code == 200
    before = device_count(stack, admin)
    response = stack.request("POST", "/api/device/devices/batch_create/", admin, json=request)
    assert response.status_code == 409
    assert response.json() == {
        "status": "error",
        "message": f"Device code already exists: {device_type['code']}00012",
        "code": "DEVICE_CODE_TAKEN",
    }
    assert device_count(stack, admin) == before

    # A MAC collision (same derived MAC under another type) is refused the same way.
    other_type = create_type(stack, admin)
    other_batch = create_batch(stack, admin, other_type["id"])
    taken_mac = f"{prefix}:00:00:21"
    assert (
        stack.request(
            "POST",
            "/api/device/devices/",
            admin,
            json={
                "device_type": other_type["id"],
                "batch": other_batch["id"],
                "serial_number": "X1",
                "mac_address": taken_mac,
            },
        ).status_code
        == 200
    )
    before = device_count(stack, admin)
    response = stack.request(
        "POST",
        "/api/device/devices/batch_create/",
        admin,
        json={**request, "start_serial": "00030"},
    )
    assert response.status_code == 409
    assert response.json()["code"] == "MAC_ADDRESS_TAKEN"
    assert taken_mac in response.json()["message"]
    assert device_count(stack, admin) == before


@pytest.mark.parametrize(
    ("change", "status", "code", "message"),
    [
        ({"count": 1001}, 400, "BATCH_TOO_LARGE", "count must be at most 1000"),
        ({"count": 0}, 400, "INVALID_ARGUMENT", "count must be at least 1"),
        (
            {"start_serial": "A001"},
            400,
            "INVALID_ARGUMENT",
            "start_serial must be digits only, e.g. 00001",
        ),
        (
            {"start_serial": "99", "count": 5},
            400,
            "INVALID_ARGUMENT",
            "5 serial numbers from 99 exceed 2 digits",
        ),
        (
            {"mac_prefix": "00:11:22:33:44:55"},
            400,
            "INVALID_ARGUMENT",
            "mac_prefix must be one to five hex octets like 00:11:22",
        ),
        (
            {"mac_prefix": "0g:11"},
            400,
            "INVALID_ARGUMENT",
            "mac_prefix must be one to five hex octets like 00:11:22",
        ),
        ({"device_type": 987654}, 404, "DEVICE_TYPE_NOT_FOUND", "Device type not found"),
        ({"batch": 987654}, 404, "DEVICE_BATCH_NOT_FOUND", "Device batch not found"),
    ],
)
def test_batch_create_rejects_bad_input(stack, admin, catalog, change, status, code, message):
    device_type, batch = catalog
    request = {
        "device_type": device_type["id"],
        "batch": batch["id"],
        "start_serial": "00001",
        "count": 2,
        "mac_prefix": random_mac()[:8],
        **change,
    }
    before = device_count(stack, admin)
    response = stack.request("POST", "/api/device/devices/batch_create/", admin, json=request)
    assert response.status_code == status
    assert response.json() == {"status": "error", "message": message, "code": code}
    assert device_count(stack, admin) == before


def test_serial_that_does_not_fit_the_mac_is_refused(stack, admin, catalog):
    device_type, batch = catalog
    response = stack.request(
        "POST",
        "/api/device/devices/batch_create/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch": batch["id"],
            "start_serial": "0255",
            "count": 2,
            "mac_prefix": random_mac()[:14],
        },
    )
    assert response.status_code == 400
    assert "does not fit" in response.json()["message"]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"mac_address": "00:11:22:33:44"}, 400, "INVALID_ARGUMENT"),
        ({"mac_address": ""}, 400, "INVALID_ARGUMENT"),
        ({"serial_number": ""}, 400, "INVALID_ARGUMENT"),
        ({"serial_number": "00 01"}, 400, "INVALID_ARGUMENT"),
        ({"batch": 987654}, 404, "DEVICE_BATCH_NOT_FOUND"),
        ({"device_type": 987654}, 404, "DEVICE_TYPE_NOT_FOUND"),
    ],
)
def test_invalid_devices_write_nothing(stack, admin, catalog, change, status, code):
    device_type, batch = catalog
    before = device_count(stack, admin)
    request = {
        "device_type": device_type["id"],
        "batch": batch["id"],
        "serial_number": "00001",
        "mac_address": random_mac(),
        **change,
    }
    response = stack.request("POST", "/api/device/devices/", admin, json=request)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert device_count(stack, admin) == before


def test_batch_of_another_type_is_refused(stack, admin, catalog):
    device_type, _ = catalog
    other_batch = create_batch(stack, admin, create_type(stack, admin)["id"])
    response = stack.request(
        "POST",
        "/api/device/devices/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch": other_batch["id"],
            "serial_number": "1",
            "mac_address": random_mac(),
        },
    )
    assert response.status_code == 400
    assert response.json()["code"] == "BATCH_TYPE_MISMATCH"


def test_duplicates_conflict(stack, admin, catalog):
    device_type, batch = catalog
    mac = random_mac()
    request = {
        "device_type": device_type["id"],
        "batch": batch["id"],
        "serial_number": "00001",
        "mac_address": mac,
    }
    assert stack.request("POST", "/api/device/devices/", admin, json=request).status_code == 200
    before = device_count(stack, admin)
    same_code = stack.request(
        "POST", "/api/device/devices/", admin, json={**request, "mac_address": random_mac()}
    )
    assert same_code.status_code == 409
    assert same_code.json()["code"] == "DEVICE_CODE_TAKEN"
    same_mac = stack.request(
        "POST",
        "/api/device/devices/",
        admin,
        json={**request, "serial_number": "00002", "mac_address": mac.lower()},
    )
    assert same_mac.status_code == 409
    assert same_mac.json()["code"] == "MAC_ADDRESS_TAKEN"
    assert device_count(stack, admin) == before


def test_documented_examples_over_grpc(stack, admin, catalog):
    device_type, batch = catalog
    stub = device_pb2_grpc.DeviceServiceStub(stack.channel())
    auth = metadata(admin)
    created = stub.CreateDevice(
        pb.CreateDeviceRequest(
            device=pb.Device(
                device_type=device_type["id"],
                batch=batch["id"],
                serial_number="00001",
                mac_address=random_mac(),
            )
        ),
        metadata=auth,
    )
    assert created.device_code == device_type["code"] + "00001"
    assert created.activated_at.WhichOneof("kind") == "null_value"
    assert stub.GetDevice(pb.GetDeviceRequest(id=created.id), metadata=auth) == created
    batch_response = stub.BatchCreateDevices(
        pb.BatchCreateDevicesRequest(
            device_type=device_type["id"],
            batch=batch["id"],
            start_serial="00002",
            count=3,
            mac_prefix=random_mac()[:8],
        ),
        metadata=auth,
    )
    assert batch_response.status == "success"
    assert batch_response.message == "成功创建3个设备"
    assert len(batch_response.data) == 3
    listed = stub.ListDevices(pb.ListDevicesRequest(), metadata=auth).devices
    assert {created.id, *batch_response.data} <= {d.id for d in listed}
    stub.DeleteDevice(pb.DeleteDeviceRequest(id=created.id), metadata=auth)
    with pytest.raises(grpc.RpcError) as error:
        stub.GetDevice(pb.GetDeviceRequest(id=created.id), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as error:
        stub.BatchCreateDevices(
            pb.BatchCreateDevicesRequest(
                device_type=device_type["id"],
                batch=batch["id"],
                start_serial="1",
                count=1001,
                mac_prefix="00",
            ),
            metadata=auth,
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_non_admin_cannot_write(stack, admin, user, catalog):
    _, token = user
    device_type, batch = catalog
    before = device_count(stack, admin)
    for path in ("/api/device/devices/", "/api/device/devices/batch_create/"):
        response = stack.request(
            "POST",
            path,
            token,
            json={
                "device_type": device_type["id"],
                "batch": batch["id"],
                "serial_number": "1",
                "mac_address": random_mac(),
                "start_serial": "1",
                "count": 1,
                "mac_prefix": "02",
            },
        )
        assert response.status_code == 403
    assert device_count(stack, admin) == before


def test_non_admin_reads_only_devices_bound_to_them(stack, admin, user, catalog):
    """A device's code, MAC and unique_id are what set-my-device asks for: strangers
    must not be able to list them."""
    _, token = user
    device_type, batch = catalog
    mac = random_mac()
    device = stack.request(
        "POST",
        "/api/device/devices/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch": batch["id"],
            "serial_number": "7",
            "mac_address": mac,
        },
    ).json()
    assert list_all(stack, "/api/device/devices/", token) == []
    hidden = stack.request("GET", f"/api/device/devices/{device['id']}/", token)
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "DEVICE_NOT_FOUND"

    bound = stack.request(
        "POST", "/api/device/user-devices/bind/", token, json={"mac_address": mac}
    )
    assert bound.status_code == 200, bound.text
    [visible] = list_all(stack, "/api/device/devices/", token)
    assert visible["id"] == device["id"]
    assert visible["is_active"] is True
    assert stack.request("GET", f"/api/device/devices/{device['id']}/", token).json() == visible


def _batch_create(stack, admin, body: dict):
    return stack.request("POST", "/api/device/devices/batch_create/", admin, json=body)


def test_batch_create_from_an_explicit_list(stack, admin, catalog):
    device_type, batch = catalog
    listed = [
        {"serial_number": "F-0007", "mac_address": random_mac().lower().replace(":", "-")},
        {"serial_number": "F-0003", "mac_address": random_mac()},
    ]
    response = _batch_create(
        stack, admin, {"device_type": device_type["id"], "batch": batch["id"], "devices": listed}
    )
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "成功创建2个设备"
    ids = response.json()["data"]
    got = [stack.request("GET", f"/api/device/devices/{i}/", admin).json() for i in ids]
    # In the order given, each with its own MAC address, normalized as CreateDevice does.
    assert [d["serial_number"] for d in got] == ["F-0007", "F-0003"]
    assert [d["mac_address"] for d in got] == [
        listed[0]["mac_address"].upper().replace("-", ":"),
        listed[1]["mac_address"],
    ]
    assert got[0]["device_code"] == device_type["code"] + "F-0007"


@pytest.mark.parametrize(
    "listed, extra, message",
    [
        (
            [{"serial_number": "00001", "mac_address": "AA"}],
            {},
            "devices[0].mac_address must be six hex octets like 00:11:22:33:44:55",
        ),
        (
            [{"serial_number": "0 1", "mac_address": "02:00:00:00:00:01"}],
            {},
            None,
        ),
        (
            [
                {"serial_number": "00001", "mac_address": "02:00:00:00:00:01"},
                {"serial_number": "00001", "mac_address": "02:00:00:00:00:02"},
            ],
            {},
            "devices lists serial_number 00001 twice",
        ),
        (
            [
                {"serial_number": "00001", "mac_address": "02:00:00:00:00:01"},
                {"serial_number": "00002", "mac_address": "02-00-00-00-00-01"},
            ],
            {},
            "devices lists mac_address 02:00:00:00:00:01 twice",
        ),
        (
            [{"serial_number": "00001", "mac_address": "02:00:00:00:00:01"}],
            {"count": 1},
            "give either devices or start_serial, count and mac_prefix, not both",
        ),
    ],
)
def test_batch_create_list_rejects_bad_input(stack, admin, catalog, listed, extra, message):
    device_type, batch = catalog
    before = device_count(stack, admin)
    response = _batch_create(
        stack,
        admin,
        {"device_type": device_type["id"], "batch": batch["id"], "devices": listed, **extra},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == "error" and body["code"] == "INVALID_ARGUMENT"
    if message is not None:
        assert body["message"] == message
    assert device_count(stack, admin) == before


def test_batch_create_list_of_more_than_1000_is_refused(stack, admin, catalog):
    device_type, batch = catalog
    listed = [
        {"serial_number": f"{i:05d}", "mac_address": f"02:00:00:00:{i >> 8:02X}:{i & 255:02X}"}
        for i in range(1001)
    ]
    response = _batch_create(
        stack, admin, {"device_type": device_type["id"], "batch": batch["id"], "devices": listed}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "BATCH_TOO_LARGE"


def test_batch_create_list_collision_writes_nothing(stack, admin, catalog):
    device_type, batch = catalog
    taken = random_mac()
    first = _batch_create(
        stack,
        admin,
        {
            "device_type": device_type["id"],
            "batch": batch["id"],
            "devices": [{"serial_number": "L1", "mac_address": taken}],
        },
    )
    assert first.status_code == 200, first.text
    before = device_count(stack, admin)
    response = _batch_create(
        stack,
        admin,
        {
            "device_type": device_type["id"],
            "batch": batch["id"],
            "devices": [
                {"serial_number": "L2", "mac_address": random_mac()},
                {"serial_number": "L3", "mac_address": taken},
            ],
        },
    )
    assert response.status_code == 409
    assert response.json()["code"] == "MAC_ADDRESS_TAKEN"
    assert device_count(stack, admin) == before


def test_list_filters_by_batch_and_mac_address(stack, admin, catalog):
    device_type, batch = catalog
    ids = batch_create_devices(stack, admin, device_type["id"], batch["id"], 5, random_mac()[:8])
    other_type = create_type(stack, admin)
    other_batch = create_batch(stack, admin, other_type["id"])
    other = batch_create_devices(
        stack, admin, other_type["id"], other_batch["id"], 2, random_mac()[:8]
    )
    assert [
        d["id"] for d in list_all(stack, f"/api/device/devices/?batch={batch['id']}", admin)
    ] == ids
    # Paged, the filter holds on every page.
    paged, token = [], ""
    while True:
        page = stack.request(
            "GET",
            "/api/device/devices/",
            admin,
            params={"batch": batch["id"], "page_size": 2, "page_token": token},
        )
        paged += [d["id"] for d in page.json()]
        token = page.headers.get("x-next-page-token", "")
        if not token:
            break
    assert paged == ids
    target = stack.request("GET", f"/api/device/devices/{other[1]}/", admin).json()
    found = stack.request(
        "GET",
        "/api/device/devices/",
        admin,
        params={"mac_address": target["mac_address"].lower().replace(":", "-")},
    )
    assert found.status_code == 200
    assert [d["id"] for d in found.json()] == [other[1]]
    # Both filters at once: that MAC is not in the first batch.
    both = stack.request(
        "GET",
        "/api/device/devices/",
        admin,
        params={"batch": batch["id"], "mac_address": target["mac_address"]},
    )
    assert both.json() == []
    bad = stack.request("GET", "/api/device/devices/", admin, params={"mac_address": "nope"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "INVALID_ARGUMENT"


def test_list_filters_over_grpc_and_for_a_bound_account(stack, admin, user, catalog):
    device_type, batch = catalog
    ids = batch_create_devices(stack, admin, device_type["id"], batch["id"], 3, random_mac()[:8])
    device = stack.request("GET", f"/api/device/devices/{ids[0]}/", admin).json()
    stub = device_pb2_grpc.DeviceServiceStub(stack.channel())
    response = stub.ListDevices(
        pb.ListDevicesRequest(mac_address=device["mac_address"]), metadata=metadata(admin)
    )
    assert [d.id for d in response.devices] == [ids[0]]
    # A stranger finds nothing by MAC address: the filter never widens what one may see.
    _, user_token = user
    stranger = stub.ListDevices(
        pb.ListDevicesRequest(mac_address=device["mac_address"]), metadata=metadata(user_token)
    )
    assert list(stranger.devices) == []
