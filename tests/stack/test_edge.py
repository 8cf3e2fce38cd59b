"""The Envoy REST edge: documented error bodies everywhere, native gRPC untouched."""

from __future__ import annotations

import subprocess
import time

import grpc
import pytest
import requests
import yaml
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from devicehub.api.rest_edge import ERROR_REASON_TRAILER, HTTP_STATUS_TRAILER, REST_ARRAY_HEADER
from devicehub.runtime.gateway import transcoded_services
from devicehub.testing.stack import DEVICEHUB, free_port, stop_process
from devicehub.v1 import device_pb2, device_pb2_grpc

from api_client import metadata
from documented_errors import without_request_id
from stack_settings import REPO_ROOT, stack_env

INTERNAL_HEADERS = (REST_ARRAY_HEADER, ERROR_REASON_TRAILER, HTTP_STATUS_TRAILER)


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
def test_unknown_device_path_has_documented_body(stack, admin, method):
    response = stack.request(method, "/api/device/no-such-thing/", admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": "error",
        "message": "Resource not found",
        "code": "ROUTE_NOT_FOUND",
    }


@pytest.mark.parametrize("path", ["/api/v1/no-such-thing", "/", "/api/v1/lux/device/unknown"])
def test_unknown_path_elsewhere_has_detail_body(stack, path):
    response = stack.request("GET", path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Resource not found"}


def test_wrong_method_on_known_path_is_404(stack, admin):
    response = stack.request("PATCH", "/api/device/device-types/1/", admin, json={})
    assert response.status_code == 404
    assert response.json()["code"] == "ROUTE_NOT_FOUND"


def test_malformed_json_has_documented_bodies(stack, admin):
    device = stack.request(
        "POST",
        "/api/device/device-types/",
        admin,
        data=b'{"name": ',
        headers={"content-type": "application/json"},
    )
    assert device.status_code == 400
    body = device.json()
    assert set(body) == {"status", "message", "code"}
    assert body["status"] == "error" and body["code"] == "MALFORMED_REQUEST"
    assert body["message"].startswith("Malformed request")

    lux = stack.request("POST", "/api/v1/auth/register", data=b"[1, 2")
    assert lux.status_code == 400
    assert set(lux.json()) == {"detail"}
    assert lux.json()["detail"].startswith("Malformed request")

    wrong_type = stack.request("POST", "/api/device/devices/", admin, json={"device_type": "one"})
    assert wrong_type.status_code == 400
    assert wrong_type.json()["code"] == "MALFORMED_REQUEST"
    assert "device_type" in wrong_type.json()["message"]


def test_internal_headers_do_not_leak(stack, admin):
    for path in ("/api/device/device-types/", "/api/device/device-types/987654/"):
        response = stack.request("GET", path, admin)
        for header in INTERNAL_HEADERS:
            assert header not in response.headers


def test_unreachable_grpc_server_gives_documented_503(tmp_path):
    env = stack_env(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    env["DEVICEHUB_GRPC_PORT"] = str(free_port())  # nothing listens there
    process = subprocess.Popen(
        [DEVICEHUB, "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{env['DEVICEHUB_HTTP_PORT']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                device = requests.get(base + "/api/device/devices/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "envoy did not start"
                time.sleep(0.2)
        assert device.status_code == 503
        assert without_request_id(device.json()) == {
            "status": "error",
            "message": "Service temporarily unavailable. Please try again later.",
            "code": "SERVICE_UNAVAILABLE",
        }
        lux = requests.get(base + "/api/v1/accounts/me", timeout=5)
        assert lux.status_code == 503
        assert without_request_id(lux.json()) == {
            "detail": "Service temporarily unavailable. Please try again later."
        }
    finally:
        stop_process(process)


def test_native_grpc_through_envoy_is_untouched(stack, admin):
    channel = stack.channel(via_envoy=True)
    stub = device_pb2_grpc.DeviceServiceStub(channel)
    listed = stub.ListDevices(device_pb2.ListDevicesRequest(page_size=1), metadata=metadata(admin))
    assert len(listed.devices) <= 1
    with pytest.raises(grpc.RpcError) as error:
        stub.GetDevice(device_pb2.GetDeviceRequest(id=987654), metadata=metadata(admin))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "Device not found"
    status = rpc_status.from_call(error.value)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("DEVICE_NOT_FOUND", "devicehub")
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_envoy_yaml_transcodes_every_service():
    config = yaml.safe_load((REPO_ROOT / "envoy.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = {f["name"]: f["typed_config"] for f in manager["typed_config"]["http_filters"]}
    transcoder = filters["envoy.filters.http.grpc_json_transcoder"]
    assert sorted(transcoder["services"]) == transcoded_services()
    assert transcoder["print_options"]["always_print_primitive_fields"] is True
    assert transcoder["print_options"]["preserve_proto_field_names"] is True
