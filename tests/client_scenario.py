"""A program that uses only the installed ``devicehub_client``: what a new user of the wheel
would write. tests/stack/test_client_wheel.py runs it with the interpreter of a fresh
virtualenv that has the client wheel and no server package.

    python client_scenario.py <grpc target> <admin password>

As the admin it registers a type, a batch and devices (batch create, read back through the
page iterator), then as a new account binds one device, subscribes, sends a message and
receives it. It then prints ``DROP`` and waits for a line on stdin: meanwhile the test kills
the server and starts it again. Then it sends two more messages, which the same
subscription (resumed by the client) must yield next, in order, once each. It prints ``OK``
and exits 0, or exits 1 with the reason on stderr. Every wait is bounded.
"""

from __future__ import annotations

import queue
import sys
import threading
import uuid
from typing import NoReturn

from devicehub_client import ApiError, Client
from devicehub_client.v1 import (
    auth_pb2,
    binding_pb2,
    device_batch_pb2,
    device_pb2,
    device_type_pb2,
    messaging_pb2,
)

WAIT = 30.0
DEVICES = 5


def unique(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:8].upper()


def fail(reason: str) -> NoReturn:
    print(reason, file=sys.stderr, flush=True)
    sys.exit(1)


def register_devices(admin: Client) -> list[device_pb2.Device]:
    device_type = admin.device_types.CreateDeviceType(
        device_type_pb2.CreateDeviceTypeRequest(
            device_type=device_type_pb2.DeviceType(name="wheel", code=unique("W"))
        )
    )
    batch = admin.device_batches.CreateDeviceBatch(
        device_batch_pb2.CreateDeviceBatchRequest(
            device_batch=device_batch_pb2.DeviceBatch(
                device_type=device_type.id,
                batch_number=unique("WB"),
                production_date="2025-06-01",
                quantity=DEVICES,
            )
        )
    )
    octets = uuid.uuid4().hex[:6].upper()
    created = admin.devices.BatchCreateDevices(
        device_pb2.BatchCreateDevicesRequest(
            device_type=device_type.id,
            batch=batch.id,
            start_serial="00001",
            count=DEVICES,
            mac_prefix=f"{octets[:2]}:{octets[2:4]}:{octets[4:]}",
        )
    )
    listed = [
        device
        for device in admin.paginate(
            admin.devices.ListDevices, device_pb2.ListDevicesRequest(page_size=2)
        )
        if device.device_type == device_type.id
    ]
    if [device.id for device in listed] != list(created.data):
        fail(f"listed {[d.id for d in listed]}, created {list(created.data)}")
    return listed


def send_text(client: Client, content: str) -> None:
    client.messaging.SendMessage(
        messaging_pb2.SendMessageRequest(
            type="text", message=messaging_pb2.MessagePayload(content=content)
        ),
        wait_for_ready=True,  # after the restart, wait for the connection (never retried)
    )


def main(target: str, admin_password: str) -> None:
    with Client(target) as admin:
        admin.sign_in("admin", admin_password)
        device = register_devices(admin)[0]

    user = Client(target)
    username = unique("wheel").lower()
    user.auth.Register(auth_pb2.RegisterRequest(username=username, password="password-123"))
    user.sign_in(username, "password-123")
    user.binding.BindUserDevice(binding_pb2.BindUserDeviceRequest(mac_address=device.mac_address))

    received: queue.Queue = queue.Queue()

    def consume() -> None:
        try:
            for message in user.subscribe(after_id=0):
                received.put(message.message.content)
        except ApiError as error:
            received.put(error)

    threading.Thread(target=consume, daemon=True).start()

    def next_content() -> str:
        try:
            item = received.get(timeout=WAIT)
        except queue.Empty:
            fail(f"no message within {WAIT} s")
        if isinstance(item, ApiError):
            fail(f"the subscription ended: {item}")
        return item

    send_text(user, "one")
    if (content := next_content()) != "one":
        fail(f"expected 'one', got {content!r}")
    print("DROP", flush=True)
    if not sys.stdin.readline():
        fail("no go-ahead after the drop")
    send_text(user, "two")
    send_text(user, "three")
    if (contents := [next_content(), next_content()]) != ["two", "three"]:
        fail(f"expected ['two', 'three'] after the restart, got {contents}")
    user.close()
    print("OK", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
