"""The gRPC server itself: reflection, health, graceful shutdown."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devicehub.runtime.server import SERVICE_NAMES
from devicehub.testing.stack import DEVICEHUB, free_port, stop_process
from devicehub.v1 import device_pb2, device_pb2_grpc

from api_client import create_batch, create_type, list_all, metadata, random_mac

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_reflection_lists_and_describes_every_service(stack):
    listed = set(grpcurl(stack.grpc_target, "list").split())
    assert set(SERVICE_NAMES) <= listed
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed
    for service in SERVICE_NAMES:
        assert f"{service} is a service" in grpcurl(stack.grpc_target, "describe", service)
    method = grpcurl(stack.grpc_target, "describe", "devicehub.v1.DeviceService.BatchCreateDevices")
    assert '"/api/device/devices/batch_create"' in method
    message = grpcurl(stack.grpc_target, "describe", "devicehub.v1.Device")
    assert "google.protobuf.Value activated_at" in message


def test_grpcurl_calls_with_token(stack, admin):
    out = grpcurl(
        "-H",
        f"authorization: Bearer {admin}",
        stack.grpc_target,
        "devicehub.v1.AccountService/GetMyAccount",
    )
    assert '"username": "admin"' in out
    assert '"is_admin": true' in out or '"isAdmin": true' in out


def test_health_reports_every_service_serving(stack):
    stub = health_pb2_grpc.HealthStub(stack.channel())
    for service in ("", *SERVICE_NAMES):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_shutdown_finishes_in_flight_work_and_writes_all_or_nothing(stack, admin, tmp_path):
    """A second server on the same database is stopped while a batch_create is in flight:
    either the call succeeded and all devices exist, or it failed and none do."""
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    env = {
        **stack.env,
        "DEVICEHUB_GRPC_PORT": str(free_port()),
        "DEVICEHUB_WS_PORT": str(free_port()),
        "DEVICEHUB_DATA_DIR": str(tmp_path),
    }
    server = subprocess.Popen(
        [DEVICEHUB, "serve", "--no-gateway"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert "gRPC  listening" in server.stdout.readline()
    channel = grpc.insecure_channel(f"127.0.0.1:{env['DEVICEHUB_GRPC_PORT']}")
    stub = device_pb2_grpc.DeviceServiceStub(channel)
    outcome: dict = {}

    def create() -> None:
        try:
            outcome["ids"] = stub.BatchCreateDevices(
                device_pb2.BatchCreateDevicesRequest(
                    device_type=device_type["id"],
                    batch=batch["id"],
                    start_serial="000001",
                    count=1000,
                    mac_prefix=random_mac()[:8],
                ),
                metadata=metadata(admin),
                timeout=60,
            ).data
        except grpc.RpcError as error:
            outcome["error"] = error.code()

    caller = threading.Thread(target=create)
    caller.start()
    time.sleep(0.05)
    assert stop_process(server) == 0
    caller.join()
    channel.close()
    stored = [
        d for d in list_all(stack, "/api/device/devices/", admin) if d["batch"] == batch["id"]
    ]
    if "ids" in outcome:
        assert len(outcome["ids"]) == 1000
        assert sorted(d["id"] for d in stored) == sorted(outcome["ids"])
    else:
        assert outcome["error"] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert stored == []


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_serve_stops_cleanly_on_signals(stack, tmp_path, signal_name):
    import signal

    env = {
        **stack.env,
        "DEVICEHUB_GRPC_PORT": str(free_port()),
        "DEVICEHUB_DATA_DIR": str(tmp_path),
    }
    env["DEVICEHUB_HTTP_PORT"] = str(free_port())
    env["DEVICEHUB_WS_PORT"] = str(free_port())
    process = subprocess.Popen([DEVICEHUB, "serve"], env=env, stdout=subprocess.PIPE, text=True)
    lines = [process.stdout.readline() for _ in range(3)]
    assert lines[0].startswith("gRPC  listening on 127.0.0.1:")
    assert lines[1].startswith("REST  listening on http://127.0.0.1:")
    process.send_signal(getattr(signal, signal_name))
    assert process.wait(30) == 0
    assert process.stdout.read().strip().endswith("stopped")


def test_shutdown_ends_live_streams_cleanly(stack, admin, tmp_path):
    """An open subscription must not hold shutdown for the whole grace period."""
    from devicehub.v1 import messaging_pb2, messaging_pb2_grpc

    env = {
        **stack.env,
        "DEVICEHUB_GRPC_PORT": str(free_port()),
        "DEVICEHUB_WS_PORT": str(free_port()),
        "DEVICEHUB_DATA_DIR": str(tmp_path),
        "DEVICEHUB_SHUTDOWN_GRACE": "30",
    }
    server = subprocess.Popen(
        [DEVICEHUB, "serve", "--no-gateway"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert "gRPC  listening" in server.stdout.readline()
    channel = grpc.insecure_channel(f"127.0.0.1:{env['DEVICEHUB_GRPC_PORT']}")
    stream = messaging_pb2_grpc.MessagingServiceStub(channel).SubscribeMessages(
        messaging_pb2.SubscribeMessagesRequest(), metadata=metadata(admin)
    )
    ended: dict = {}
    opened = threading.Event()

    def read() -> None:
        opened.set()
        try:
            ended["events"] = list(stream)
            ended["status"] = "ok"
        except grpc.RpcError as error:
            ended["status"] = error.code()

    reader = threading.Thread(target=read)
    reader.start()
    opened.wait(5)
    time.sleep(0.3)  # let the subscription reach the server
    assert stop_process(server) == 0
    reader.join(10)
    channel.close()
    # Ended by the server with an OK status; a stream cut off at the end of the grace
    # period would end CANCELLED or UNAVAILABLE instead.
    assert ended["status"] == "ok"


def test_ping_needs_no_token_over_grpc_and_rest(stack):
    from devicehub.v1 import system_pb2, system_pb2_grpc

    stub = system_pb2_grpc.SystemServiceStub(stack.channel())
    assert stub.Ping(system_pb2.PingRequest()).status == "ok"
    response = stack.request("GET", "/api/v1/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
