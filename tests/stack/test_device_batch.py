"""DeviceBatchService: seed 003 section 2, over REST through Envoy and over gRPC."""

from __future__ import annotations

import grpc
import pytest

from devicehub.testing.stack import unique
from devicehub.v1 import device_batch_pb2 as pb
from devicehub.v1 import device_batch_pb2_grpc

from api_client import create_batch, create_device, create_type, list_all, metadata

BATCH_KEYS = {
    "id",
    "device_type",
    "device_type_name",
    "batch_number",
    "production_date",
    "quantity",
    "description",
    "created_at",
    "updated_at",
}


def test_documented_examples_over_rest(stack, admin):
    device_type = create_type(stack, admin, name="智能音箱")
    number = unique("BSP")
    request = {
        "device_type": device_type["id"],
        "batch_number": number,
        "production_date": "2023-01-01",
        "quantity": 500,
        "description": "第一批智能音箱",
    }
    # 2.2 create
    created = stack.request("POST", "/api/device/device-batches/", admin, json=request)
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == BATCH_KEYS
    assert {k: body[k] for k in request} == request
    assert body["device_type_name"] == "智能音箱"
    # 2.1 list
    assert body in list_all(stack, "/api/device/device-batches/", admin)
    # 2.3 get
    got = stack.request("GET", f"/api/device/device-batches/{body['id']}/", admin)
    assert got.status_code == 200 and got.json() == body
    # 2.4 update
    changed = {**request, "quantity": 600, "description": "更新后的描述"}
    updated = stack.request("PUT", f"/api/device/device-batches/{body['id']}/", admin, json=changed)
    assert updated.status_code == 200
    assert {k: updated.json()[k] for k in changed} == changed
    # 2.5 delete
    deleted = stack.request("DELETE", f"/api/device/device-batches/{body['id']}/", admin)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert stack.request("GET", f"/api/device/device-batches/{body['id']}/", admin).status_code == (
        404
    )


def test_documented_examples_over_grpc(stack, admin):
    device_type = create_type(stack, admin)
    stub = device_batch_pb2_grpc.DeviceBatchServiceStub(stack.channel())
    auth = metadata(admin)
    created = stub.CreateDeviceBatch(
        pb.CreateDeviceBatchRequest(
            device_batch=pb.DeviceBatch(
                device_type=device_type["id"],
                batch_number=unique("B"),
                production_date="2023-01-01",
                quantity=500,
            )
        ),
        metadata=auth,
    )
    assert created.device_type_name == device_type["name"]
    assert stub.GetDeviceBatch(pb.GetDeviceBatchRequest(id=created.id), metadata=auth) == created
    assert (
        created
        in stub.ListDeviceBatches(pb.ListDeviceBatchesRequest(), metadata=auth).device_batches
    )
    created.quantity = 600
    updated = stub.UpdateDeviceBatch(
        pb.UpdateDeviceBatchRequest(device_batch=created), metadata=auth
    )
    assert updated.quantity == 600
    stub.DeleteDeviceBatch(pb.DeleteDeviceBatchRequest(id=created.id), metadata=auth)
    with pytest.raises(grpc.RpcError) as error:
        stub.GetDeviceBatch(pb.GetDeviceBatchRequest(id=created.id), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"batch_number": ""}, 400, "batch_number is required"),
        (
            {"production_date": "2023-02-30"},
            400,
            "production_date must be a date written YYYY-MM-DD",
        ),
        (
            {"production_date": "01/01/2023"},
            400,
            "production_date must be a date written YYYY-MM-DD",
        ),
        ({"quantity": -1}, 400, "quantity must not be negative"),
        ({"device_type": 0}, 400, "device_type is required and must be a positive id"),
        ({"device_type": 987654}, 404, "Device type not found"),
    ],
)
def test_invalid_batches_write_nothing(stack, admin, change, status, message):
    device_type = create_type(stack, admin)
    before = list_all(stack, "/api/device/device-batches/", admin)
    request = {
        "device_type": device_type["id"],
        "batch_number": unique("B"),
        "production_date": "2023-01-01",
        "quantity": 1,
        **change,
    }
    response = stack.request("POST", "/api/device/device-batches/", admin, json=request)
    assert response.status_code == status
    assert response.json()["message"] == message
    assert list_all(stack, "/api/device/device-batches/", admin) == before


def test_duplicate_batch_number_conflicts(stack, admin):
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    before = list_all(stack, "/api/device/device-batches/", admin)
    response = stack.request(
        "POST",
        "/api/device/device-batches/",
        admin,
        json={
            "device_type": device_type["id"],
            "batch_number": batch["batch_number"],
            "production_date": "2023-01-01",
        },
    )
    assert response.status_code == 409
    assert response.json()["code"] == "BATCH_NUMBER_TAKEN"
    assert list_all(stack, "/api/device/device-batches/", admin) == before


def test_batch_with_devices_cannot_be_deleted_or_moved(stack, admin):
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    create_device(stack, admin, device_type["id"], batch["id"])  # asserts it was created
    deleted = stack.request("DELETE", f"/api/device/device-batches/{batch['id']}/", admin)
    assert deleted.status_code == 409
    assert deleted.json()["code"] == "DEVICE_BATCH_IN_USE"
    other_type = create_type(stack, admin)
    moved = stack.request(
        "PUT",
        f"/api/device/device-batches/{batch['id']}/",
        admin,
        json={**batch, "device_type": other_type["id"]},
    )
    assert moved.status_code == 409
    assert stack.request("GET", f"/api/device/device-batches/{batch['id']}/", admin).json() == batch


def test_non_admin_cannot_write(stack, admin, user):
    _, token = user
    device_type = create_type(stack, admin)
    response = stack.request(
        "POST",
        "/api/device/device-batches/",
        token,
        json={
            "device_type": device_type["id"],
            "batch_number": unique("B"),
            "production_date": "2023-01-01",
        },
    )
    assert response.status_code == 403
    assert response.json()["code"] == "PERMISSION_DENIED"
