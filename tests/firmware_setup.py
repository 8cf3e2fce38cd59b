"""Firmware test helpers: packages uploaded over REST and gRPC, and devices to roll out to."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from devicehub.testing.stack import Stack
from devicehub.v1 import firmware_pb2, firmware_pb2_grpc

from api_client import batch_create_devices, create_batch, create_type, metadata

PACKAGES = "/api/device/firmware/packages"
ROLLOUTS = "/api/device/firmware/rollouts"


def firmware_bytes(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes (zero bytes included)."""
    out = bytearray()
    block = hashlib.sha256(f"firmware-{seed}".encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def upload_rest(
    stack: Stack, token: str, device_type: int, version: str, data: bytes, **query: object
):
    params = {"device_type": device_type, "version": version, "title": f"build {version}"}
    params.update(query)
    return stack.request(
        "POST",
        PACKAGES,
        token,
        params=params,
        data=data,
        headers={"content-type": "application/octet-stream"},
    )


def upload_grpc(
    stack: Stack,
    token: str,
    device_type: int,
    version: str,
    data: bytes,
    chunk: int = 64 * 1024,
    **fields: object,
) -> firmware_pb2.FirmwarePackage:
    stub = firmware_pb2_grpc.FirmwareServiceStub(stack.channel())

    def requests():
        yield firmware_pb2.UploadFirmwarePackageRequest(
            device_type=device_type, version=version, title=f"build {version}", **fields
        )
        for start in range(0, len(data), chunk):
            request = firmware_pb2.UploadFirmwarePackageRequest()
            request.data.data = data[start : start + chunk]
            yield request

    return stub.UploadFirmwarePackage(requests(), metadata=metadata(token), timeout=60)


@dataclass
class Fleet:
    """A device type with a batch of ``count`` registered devices."""

    device_type: dict
    batch: dict
    device_ids: list[int]


def fleet(stack: Stack, count: int) -> Fleet:
    admin = stack.admin_token
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    prefix = ":".join(f"{b:02X}" for b in os.urandom(3))
    ids = batch_create_devices(stack, admin, device_type["id"], batch["id"], count, prefix)
    return Fleet(device_type, batch, ids)


# --- rollouts driven by bound devices (tests/stack/test_firmware_rollouts.py, pacing) ---

DEVICES = "/api/device/firmware/devices"


@dataclass
class BoundFleet:
    """A fleet whose devices are bound to fresh accounts, ``per_account`` devices each."""

    fleet: Fleet
    tokens: dict[int, str]  # device id -> the token of the account it is bound to
    accounts: dict[int, int]  # device id -> that account's id

    @property
    def device_ids(self) -> list[int]:
        return self.fleet.device_ids


def bind_fleet(stack: Stack, devices: Fleet, per_account: int) -> BoundFleet:
    """Binds the fleet's devices in id order to fresh accounts, ``per_account`` each."""
    tokens: dict[int, str] = {}
    accounts: dict[int, int] = {}
    account: dict = {}
    token = ""
    for position, device_id in enumerate(devices.device_ids):
        if position % per_account == 0:
            account, token = stack.new_user()
        got = stack.request("GET", f"/api/device/devices/{device_id}/", stack.admin_token)
        assert got.status_code == 200, got.text
        bound = stack.request(
            "POST",
            "/api/device/user-devices/bind/",
            token,
            json={"mac_address": got.json()["mac_address"]},
        )
        assert bound.status_code == 200, bound.text
        tokens[device_id], accounts[device_id] = token, account["id"]
    return BoundFleet(devices, tokens, accounts)


def create_rollout(stack: Stack, package_id: int, **body: object) -> dict:
    response = stack.request(
        "POST", ROLLOUTS, stack.admin_token, json={"package_id": package_id, **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


def get_rollout(stack: Stack, rollout_id: int) -> dict:
    response = stack.request("GET", f"{ROLLOUTS}/{rollout_id}", stack.admin_token)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_rollout(stack: Stack, rollout_id: int, done, timeout: float = 20.0) -> dict:
    """Polls the rollout until ``done(rollout)`` holds (the scheduler works in the
    background); fails with the last state seen after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rollout = get_rollout(stack, rollout_id)
        if done(rollout):
            return rollout
        assert time.monotonic() < deadline, rollout
        time.sleep(0.05)


def scheduler_turn_passed(stack: Stack) -> None:
    """Returns once the scheduler has taken a turn that began after this call: a rollout
    to one fresh unbound device is created and waited for until the scheduler notifies it
    (its notification is due in the same turns as any other queued update)."""
    devices = fleet(stack, 1)
    package = upload_rest(
        stack, stack.admin_token, devices.device_type["id"], "1.0.0", firmware_bytes(64)
    )
    assert package.status_code == 200, package.text
    rollout = create_rollout(stack, package.json()["id"])
    wait_for_rollout(stack, rollout["id"], lambda r: r["counts"]["notified"] == 1)
