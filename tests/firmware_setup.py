"""Firmware test helpers: packages uploaded over REST and gRPC, and devices to roll out to."""

from __future__ import annotations

import hashlib
import os
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
    **fields: str,
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
