"""Fault tests of the firmware service: uploads cut off halfway, and a rollout whose
notifications go on through PostgreSQL restarts and a killed worker 0 (the scheduler's
process).

The promises (README "Firmware"): a failed upload leaves nothing behind; the scheduler's
turn is one transaction, so a restart or a kill -9 in the middle of one loses nothing and
notifies nobody twice; the replaced worker 0 takes the turns up again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator

import grpc
import pytest

from devicehub.testing.pgcluster import ThrowawayCluster
from devicehub.testing.stack import Stack, start_stack
from devicehub.v1 import firmware_pb2, firmware_pb2_grpc

from api_client import metadata, query_database
from bound_accounts import bind
from firmware_setup import PACKAGES, ROLLOUTS, firmware_bytes, fleet, upload_rest
from stack_settings import ADMIN_PASSWORD, stack_env
from worker_processes import replaced, wait_until, worker_pid

DEVICES = 60
DEVICES_PER_ACCOUNT = 5


def versions_of(stack: Stack, device_type: int) -> list[str]:
    response = stack.request(
        "GET", PACKAGES, stack.admin_token, params={"device_type": device_type}
    )
    assert response.status_code == 200, response.text
    return [package["version"] for package in response.json()]


def test_a_rest_upload_cut_off_halfway_stores_nothing(stack: Stack):
    """3 MB announced, 1 MB sent, the connection closed: no package, no chunk, and the same
    version uploads afterwards."""
    device_type = fleet(stack, 1).device_type["id"]
    port = int(stack.env["DEVICEHUB_HTTP_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {PACKAGES}?device_type={device_type}&version=1.0.0&title=cut HTTP/1.1\r\n"
            f"Host: devicehub\r\nAuthorization: Bearer {stack.admin_token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 3000000\r\n\r\n".encode()
        )
        sock.sendall(firmware_bytes(1_000_000))
    assert versions_of(stack, device_type) == []
    assert _chunks_of_type(stack, device_type) == 0
    # The version was not taken by the cut-off upload, and only the new one's chunk is stored.
    response = upload_rest(stack, stack.admin_token, device_type, "1.0.0", firmware_bytes(2000))
    assert response.status_code == 200, response.text
    assert versions_of(stack, device_type) == ["1.0.0"]
    assert _chunks_of_type(stack, device_type) == 1


def test_a_grpc_upload_canceled_halfway_stores_nothing(stack: Stack):
    """grpc.aio ends a canceled client's request stream as if it were complete (and
    cancels the call only afterwards): the size the first message declares tells a cut
    stream from a whole one."""
    device_type = fleet(stack, 1).device_type["id"]
    stub = firmware_pb2_grpc.FirmwareServiceStub(stack.channel())
    sent = threading.Event()

    def requests():
        yield firmware_pb2.UploadFirmwarePackageRequest(
            device_type=device_type, version="1.0.0", title="canceled", size_bytes=2_000_000
        )
        for _ in range(8):
            chunk = firmware_pb2.UploadFirmwarePackageRequest()
            chunk.data.data = firmware_bytes(64 * 1024)
            yield chunk
        sent.set()
        threading.Event().wait(30)  # the client stalls here until canceled

    call = stub.UploadFirmwarePackage.future(
        requests(), metadata=metadata(stack.admin_token), timeout=60
    )
    assert sent.wait(10)
    call.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    assert versions_of(stack, device_type) == []
    assert _chunks_of_type(stack, device_type) == 0
    response = upload_rest(stack, stack.admin_token, device_type, "1.0.0", firmware_bytes(2000))
    assert response.status_code == 200, response.text


def _chunks_of_type(stack: Stack, device_type: int) -> int:
    rows = query_database(
        stack,
        "SELECT count(*) FROM firmware_chunk c JOIN firmware_package p ON p.id = c.package_id "
        "WHERE p.device_type_id = ?",
        (device_type,),
    )
    return rows[0][0]


@pytest.fixture(scope="module")
def paced_stack(
    durable_pg_cluster: ThrowawayCluster, tmp_path_factory, alimtalk_provider, weather_provider
) -> Iterator[Stack]:
    """A stack on a durable cluster notifying 120 devices a minute (2 a second)."""
    tmp = tmp_path_factory.mktemp("stack-faults-firmware")
    database_url = durable_pg_cluster.create_database("faults_firmware")
    env = stack_env(tmp, database_url, alimtalk_provider.base_url, weather_provider.base_url)
    env["DEVICEHUB_FIRMWARE_NOTIFY_PER_MINUTE"] = "120"
    started = start_stack("postgresql", env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


def _bound_fleet(stack: Stack) -> tuple[int, list[int]]:
    """A device type with ``DEVICES`` devices, bound five by five to fresh accounts."""
    admin = stack.admin_token
    devices = fleet(stack, DEVICES)
    token = ""
    for index, device_id in enumerate(devices.device_ids):
        if index % DEVICES_PER_ACCOUNT == 0:
            _, token = stack.new_user()
        response = stack.request("GET", f"/api/device/devices/{device_id}", admin)
        assert response.status_code == 200, response.text
        bind(stack, token, response.json(), is_primary=index % DEVICES_PER_ACCOUNT == 0)
    return devices.device_type["id"], devices.device_ids


def _notified(stack: Stack, rollout_id: int) -> int:
    response = stack.request("GET", f"{ROLLOUTS}/{rollout_id}", stack.admin_token)
    if response.status_code != 200:
        return -1  # the database is restarting
    return response.json()["counts"]["notified"]


def test_notifications_survive_database_restarts_and_a_killed_scheduler(
    paced_stack: Stack, durable_pg_cluster: ThrowawayCluster
):
    stack = paced_stack
    admin = stack.admin_token
    device_type, device_ids = _bound_fleet(stack)
    package = upload_rest(stack, admin, device_type, "3.0.0", firmware_bytes(10_000)).json()
    response = stack.request("POST", ROLLOUTS, admin, json={"package_id": package["id"]})
    assert response.status_code == 200, response.text
    rollout_id = response.json()["id"]

    # Partway through (2 a second: 30 s for all), the database restarts twice ...
    assert wait_until(lambda: _notified(stack, rollout_id) >= 5, 20)
    durable_pg_cluster.restart("immediate")
    durable_pg_cluster.restart("fast")
    assert wait_until(lambda: _notified(stack, rollout_id) >= 20, 30)
    # ... and the scheduler's process is killed.
    port = int(stack.env["DEVICEHUB_GRPC_PORT"])
    old = worker_pid(stack.process.pid, port, 0)
    assert old
    os.kill(old, signal.SIGKILL)
    assert replaced(stack.process.pid, port, 0, old), "worker 0 was not replaced"
    # Precondition of the test: some devices are left for the new worker 0 to notify.
    assert _notified(stack, rollout_id) < DEVICES

    assert wait_until(lambda: _notified(stack, rollout_id) == DEVICES, 60)
    # Every device was told exactly once: one firmware message per device, one
    # `notified` event per update.
    messages = query_database(
        stack,
        "SELECT payload FROM message WHERE type = 'firmware' AND account_id IN "
        "(SELECT account_id FROM binding WHERE device_id IN "
        f"({', '.join('?' for _ in device_ids)}))",
        tuple(device_ids),
    )
    told = sorted(json.loads(payload)["device_id"] for (payload,) in messages)
    assert told == sorted(device_ids)
    events = query_database(
        stack,
        "SELECT e.update_id, count(*) FROM firmware_update_event e "
        "JOIN firmware_update u ON u.id = e.update_id "
        "WHERE u.rollout_id = ? AND e.state = 'notified' GROUP BY e.update_id",
        (rollout_id,),
    )
    assert len(events) == DEVICES and {count for _, count in events} == {1}
    response = stack.request("POST", f"{ROLLOUTS}/{rollout_id}/cancel", admin, json={})
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["canceled"] == DEVICES
