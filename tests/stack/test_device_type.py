"""DeviceTypeService: seed 003 section 1, over REST through Envoy and over gRPC."""

from __future__ import annotations

import grpc
import pytest

from devicehub.testing.stack import unique
from devicehub.v1 import device_type_pb2 as pb
from devicehub.v1 import device_type_pb2_grpc

from api_client import create_batch, create_device, create_type, list_all, metadata

TYPE_KEYS = {"id", "name", "code", "description", "created_at", "updated_at"}


def test_documented_examples_over_rest(stack, admin):
    code = unique("SP")
    # 1.2 create
    created = stack.request(
        "POST",
        "/api/device/device-types/",
        admin,
        json={"name": "智能音箱", "code": code, "description": "AI智能音箱设备"},
    )
    assert created.status_code == 200
    body = created.json()
    assert set(body) == TYPE_KEYS
    assert isinstance(body["id"], int)
    assert (body["name"], body["code"], body["description"]) == ("智能音箱", code, "AI智能音箱设备")
    assert body["created_at"].endswith("Z")
    # 1.1 list: bare array, in id order, containing the new type
    listed = list_all(stack, "/api/device/device-types/", admin)
    assert isinstance(listed, list)
    assert [t["id"] for t in listed] == sorted(t["id"] for t in listed)
    assert body in listed
    # 1.3 get, with and without the trailing slash
    for path in (
        f"/api/device/device-types/{body['id']}/",
        f"/api/device/device-types/{body['id']}",
    ):
        got = stack.request("GET", path, admin)
        assert got.status_code == 200
        assert got.json() == body
    # 1.4 update
    updated = stack.request(
        "PUT",
        f"/api/device/device-types/{body['id']}/",
        admin,
        json={"name": "智能音箱", "code": code, "description": "更新后的描述"},
    )
    assert updated.status_code == 200
    assert updated.json()["description"] == "更新后的描述"
    assert updated.json()["created_at"] == body["created_at"]
    assert updated.json()["updated_at"] >= body["updated_at"]
    # 1.5 delete: 204, empty body, then gone
    deleted = stack.request("DELETE", f"/api/device/device-types/{body['id']}/", admin)
    assert deleted.status_code == 204
    assert deleted.content == b""
    missing = stack.request("GET", f"/api/device/device-types/{body['id']}/", admin)
    assert missing.status_code == 404
    assert missing.json() == {
        "status": "error",
        "message": "Device type not found",
        "code": "DEVICE_TYPE_NOT_FOUND",
    }


def test_documented_examples_over_grpc(stack, admin):
    stub = device_type_pb2_grpc.DeviceTypeServiceStub(stack.channel())
    auth = metadata(admin)
    code = unique("SP")
    created = stub.CreateDeviceType(
        pb.CreateDeviceTypeRequest(
            device_type=pb.DeviceType(name="智能音箱", code=code, description="AI智能音箱设备")
        ),
        metadata=auth,
    )
    assert created.id > 0 and created.code == code
    assert stub.GetDeviceType(pb.GetDeviceTypeRequest(id=created.id), metadata=auth) == created
    listed = stub.ListDeviceTypes(pb.ListDeviceTypesRequest(), metadata=auth)
    assert created in listed.device_types
    assert listed.next_page_token == ""
    updated = stub.UpdateDeviceType(
        pb.UpdateDeviceTypeRequest(
            device_type=pb.DeviceType(id=created.id, name="智能音箱", code=code, description="新")
        ),
        metadata=auth,
    )
    assert updated.description == "新"
    stub.DeleteDeviceType(pb.DeleteDeviceTypeRequest(id=created.id), metadata=auth)
    with pytest.raises(grpc.RpcError) as error:
        stub.GetDeviceType(pb.GetDeviceTypeRequest(id=created.id), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_non_admin_cannot_write_but_can_read(stack, admin, user):
    _, token = user
    existing = create_type(stack, admin)
    before = list_all(stack, "/api/device/device-types/", admin)
    denied = stack.request(
        "POST", "/api/device/device-types/", token, json={"name": "x", "code": unique("X")}
    )
    assert denied.status_code == 403
    assert denied.json()["code"] == "PERMISSION_DENIED"
    for method in ("PUT", "DELETE"):
        response = stack.request(
            method,
            f"/api/device/device-types/{existing['id']}/",
            token,
            json={"name": "x", "code": existing["code"]},
        )
        assert response.status_code == 403
    assert list_all(stack, "/api/device/device-types/", token) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"code": "C1"}, "name is required"),
        ({"name": "n"}, "code is required"),
        ({"name": "n", "code": "bad code!"}, "code may contain only letters, digits, '_' and '-'"),
        ({"name": "n" * 101, "code": "C1"}, "name must be at most 100 characters"),
    ],
)
def test_validation_errors_write_nothing(stack, admin, body, message):
    before = list_all(stack, "/api/device/device-types/", admin)
    response = stack.request("POST", "/api/device/device-types/", admin, json=body)
    assert response.status_code == 400
    assert response.json() == {"status": "error", "message": message, "code": "INVALID_ARGUMENT"}
    assert list_all(stack, "/api/device/device-types/", admin) == before


def test_duplicate_code_conflicts_and_writes_nothing(stack, admin):
    existing = create_type(stack, admin)
    before = list_all(stack, "/api/device/device-types/", admin)
    response = stack.request(
        "POST", "/api/device/device-types/", admin, json={"name": "dup", "code": existing["code"]}
    )
    assert response.status_code == 409
    assert response.json() == {
        "status": "error",
        "message": f"Device type code already exists: {existing['code']}",
        "code": "DEVICE_TYPE_CODE_TAKEN",
    }
    assert list_all(stack, "/api/device/device-types/", admin) == before
    other = create_type(stack, admin)
    renamed = stack.request(
        "PUT",
        f"/api/device/device-types/{other['id']}/",
        admin,
        json={"name": "x", "code": existing["code"]},
    )
    assert renamed.status_code == 409
    assert stack.request("GET", f"/api/device/device-types/{other['id']}/", admin).json() == other


def test_type_in_use_cannot_be_deleted_or_recoded(stack, admin):
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    response = stack.request("DELETE", f"/api/device/device-types/{device_type['id']}/", admin)
    assert response.status_code == 409
    assert response.json()["code"] == "DEVICE_TYPE_IN_USE"
    create_device(stack, admin, device_type["id"], batch["id"])  # asserts it was created
    recoded = stack.request(
        "PUT",
        f"/api/device/device-types/{device_type['id']}/",
        admin,
        json={"name": "n", "code": unique("N")},
    )
    assert recoded.status_code == 409
    assert recoded.json()["code"] == "DEVICE_TYPE_CODE_LOCKED"
    assert stack.request("GET", f"/api/device/device-types/{device_type['id']}/", admin).json() == (
        device_type
    )


def test_pagination_over_rest_and_grpc(stack, admin):
    for _ in range(3):
        create_type(stack, admin)
    everything = list_all(stack, "/api/device/device-types/", admin)
    pages, token = [], ""
    while True:
        path = "/api/device/device-types/?page_size=2" + (f"&page_token={token}" if token else "")
        response = stack.request("GET", path, admin)
        assert response.status_code == 200
        page = response.json()
        assert isinstance(page, list) and len(page) <= 2
        pages.extend(page)
        token = response.headers.get("x-next-page-token", "")
        if not token:
            break
    assert pages == everything

    stub = device_type_pb2_grpc.DeviceTypeServiceStub(stack.channel())
    first = stub.ListDeviceTypes(pb.ListDeviceTypesRequest(page_size=2), metadata=metadata(admin))
    assert len(first.device_types) == 2 and first.next_page_token
    second = stub.ListDeviceTypes(
        pb.ListDeviceTypesRequest(page_size=2, page_token=first.next_page_token),
        metadata=metadata(admin),
    )
    assert [t.id for t in second.device_types] == [t["id"] for t in everything[2:4]]

    bad = stack.request("GET", "/api/device/device-types/?page_token=nonsense", admin)
    assert bad.status_code == 400
    assert bad.json()["code"] == "INVALID_ARGUMENT"


def test_unknown_id_is_404_everywhere(stack, admin):
    for method in ("GET", "PUT", "DELETE"):
        response = stack.request(
            method, "/api/device/device-types/987654/", admin, json={"name": "n", "code": "C"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "DEVICE_TYPE_NOT_FOUND"
