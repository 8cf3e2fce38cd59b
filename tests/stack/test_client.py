"""The Python client package (clients/python, ``devicehub_client``) against the real stack.

The client is the one installed in this environment (editable, by scripts/bootstrap.sh).
Its calls go to a stack of this module's own, on each backend, because two tests kill and
restart it: a subscription resumes after its server died (nothing lost, nothing twice, an
acknowledged message not replayed), and an idempotent call made while the server is down
is retried until it answers, while a Create is not retried at all. The others: sign-in and
refresh, a registry built through the stubs and read back with the page iterator across
several pages, the ErrorReason of failures, and a firmware upload in pieces read back
through the download stream.

Nothing asserts a duration; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from devicehub_client import IDEMPOTENT_METHODS, ApiError, Client, RetryPolicy
from devicehub_client.v1 import (
    account_pb2,
    auth_pb2,
    binding_pb2,
    device_batch_pb2,
    device_pb2,
    device_type_pb2,
    firmware_pb2,
    messaging_pb2,
)

from devicehub.testing.stack import Stack, start_stack, stop_process, unique
from devicehub.v1 import device_pb2 as server_device_pb2

from stack_settings import ADMIN_PASSWORD, backend_database, stack_env
from streams import wait_for_states
from worker_processes import alive, wait_until, worker_pids

WAIT = 30.0  # seconds any one expected event may take


@dataclass
class RestartableStack:
    """A stack of this module's own that a test can kill (SIGKILL: its workers and Envoy
    die with it) and start again on the same ports and database."""

    backend: str
    env: dict[str, str]
    log_path: Path
    stack: Stack

    @property
    def target(self) -> str:
        return self.stack.grpc_target

    def kill(self) -> None:
        """SIGKILLs ``devicehub serve`` and waits until its workers are gone too: they get
        their SIGTERM from the kernel when it dies, and one still finishing would accept
        (and cancel) a new connection on the shared port."""
        workers = worker_pids(self.stack.process.pid)
        self.stack.process.kill()
        self.stack.process.wait(WAIT)
        assert wait_until(lambda: not any(alive(pid) for pid in workers), WAIT)
        self.stack.close()

    def start(self) -> None:
        admin_token = self.stack.admin_token
        self.stack = start_stack(self.backend, self.env, self.log_path)
        self.stack.admin_token = admin_token


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def own_stack(request, tmp_path_factory) -> Iterator[RestartableStack]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"client-{backend}")
    env = stack_env(tmp, backend_database(request, backend, tmp))
    log_path = tmp / "serve.log"
    holder = RestartableStack(
        backend, env, log_path, start_stack(backend, env, log_path, ADMIN_PASSWORD)
    )
    yield holder
    if holder.stack.process.poll() is None:
        stop_process(holder.stack.process)


@pytest.fixture
def admin_client(own_stack) -> Iterator[Client]:
    if own_stack.stack.process.poll() is not None:  # a test that killed it failed midway
        own_stack.start()
    with Client(own_stack.target) as client:
        client.sign_in("admin", ADMIN_PASSWORD)
        yield client


def new_user_client(target: str, **options) -> Client:
    """A client signed in as a freshly registered non-admin account."""
    client = Client(target, **options)
    username = unique("client").lower()
    client.auth.Register(auth_pb2.RegisterRequest(username=username, password="password-123"))
    client.sign_in(username, "password-123")
    return client


def registry(admin: Client, count: int) -> tuple[int, int, list[int]]:
    """A new device type and batch with ``count`` devices: (type id, batch id, device ids)."""
    device_type = admin.device_types.CreateDeviceType(
        device_type_pb2.CreateDeviceTypeRequest(
            device_type=device_type_pb2.DeviceType(name="스피커", code=unique("CT"))
        )
    )
    batch = admin.device_batches.CreateDeviceBatch(
        device_batch_pb2.CreateDeviceBatchRequest(
            device_batch=device_batch_pb2.DeviceBatch(
                device_type=device_type.id,
                batch_number=unique("CB"),
                production_date="2025-06-01",
                quantity=count,
            )
        )
    )
    created = admin.devices.BatchCreateDevices(
        device_pb2.BatchCreateDevicesRequest(
            device_type=device_type.id,
            batch=batch.id,
            start_serial="00001",
            count=count,
            # A random 3-octet prefix, so the MACs of every call differ.
            mac_prefix=":".join(unique()[i : i + 2] for i in (0, 2, 4)),
        )
    )
    assert len(created.data) == count
    return device_type.id, batch.id, list(created.data)


def bound_user(target: str, admin: Client, **options) -> Client:
    """A new account with a newly registered device bound to it, signed in."""
    _, _, (device_id,) = registry(admin, 1)
    device = admin.devices.GetDevice(device_pb2.GetDeviceRequest(id=device_id))
    user = new_user_client(target, **options)
    user.binding.BindUserDevice(binding_pb2.BindUserDeviceRequest(mac_address=device.mac_address))
    return user


def send_text(client: Client, content: str) -> None:
    # SendMessage is never retried; waiting for the channel to be ready instead (nothing has
    # been sent before it is) lets a client whose server just restarted send at once.
    client.messaging.SendMessage(
        messaging_pb2.SendMessageRequest(
            type="text", message=messaging_pb2.MessagePayload(content=content)
        ),
        wait_for_ready=True,
    )


@dataclass
class Subscriber:
    """``client.subscribe()`` consumed by a background thread into a queue; the thread ends
    when the client is closed (the stream then fails with CANCELLED, which is no reason to
    resume)."""

    client: Client
    received: queue.Queue = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        try:
            for message in self.client.subscribe(after_id=0):
                self.received.put(message)
        except ApiError as error:
            self.received.put(error)

    def next_message(self) -> messaging_pb2.DeviceMessage:
        try:
            item = self.received.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"no message within {WAIT} s")
        if isinstance(item, ApiError):
            pytest.fail(f"the subscription ended: {item}")
        return item

    def stop(self) -> None:
        self.client.close()
        self._thread.join(WAIT)
        assert not self._thread.is_alive()


# --- without a stack --------------------------------------------------------------------


def test_client_and_server_stubs_load_in_one_process():
    # Same proto file names and identical descriptors: protobuf shares one class.
    assert device_pb2.Device is server_device_pb2.Device
    assert device_pb2.DESCRIPTOR.name == "devicehub/v1/device.proto"


def test_every_idempotent_method_exists_and_none_creates():
    pool = device_pb2.DESCRIPTOR.pool
    for full_name in IDEMPOTENT_METHODS:
        service, method = full_name.removeprefix("/").split("/")
        assert pool.FindServiceByName(service).FindMethodByName(method) is not None, full_name
        assert not method.startswith(("Create", "Send", "Upload", "Bind", "Delete")), method


def test_backoff_grows_with_jitter_within_its_ceilings():
    policy = RetryPolicy(initial_backoff=0.2, max_backoff=1.0)
    for failures, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10, 1.0)]:
        delays = {policy.backoff(failures) for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1  # random, so clients disconnected together spread out
    assert not policy.retries(
        "/devicehub.v1.DeviceService/CreateDevice", grpc.StatusCode.UNAVAILABLE, 1
    )
    assert policy.retries("/devicehub.v1.DeviceService/GetDevice", grpc.StatusCode.UNAVAILABLE, 1)
    assert not policy.retries("/devicehub.v1.DeviceService/GetDevice", grpc.StatusCode.INTERNAL, 1)
    assert not policy.retries(
        "/devicehub.v1.DeviceService/GetDevice", grpc.StatusCode.UNAVAILABLE, policy.max_attempts
    )


# --- against the stack ------------------------------------------------------------------


def test_sign_in_refresh_and_wrong_password(own_stack):
    with Client(own_stack.target) as client:
        tokens = client.sign_in("admin", ADMIN_PASSWORD)
        assert client.token == tokens.access_token
        assert client.refresh_token == tokens.refresh_token
        assert tokens.access_token not in repr(tokens)
        assert client.accounts.GetMyAccount(account_pb2.GetMyAccountRequest()).is_admin

        refreshed = client.refresh()
        assert client.token == refreshed.access_token
        assert refreshed.refresh_token
        assert client.accounts.GetMyAccount(account_pb2.GetMyAccountRequest()).username == "admin"

        client.token = None
        with pytest.raises(ApiError) as anonymous:
            client.accounts.GetMyAccount(account_pb2.GetMyAccountRequest())
        assert anonymous.value.code == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(ApiError) as wrong:
            client.sign_in("admin", "not-the-password")
        assert wrong.value.reason == "INVALID_CREDENTIALS"
        assert client.token is None  # a failed sign-in stores nothing


def test_registry_through_the_stubs_and_the_page_iterator(own_stack, admin_client):
    type_id, batch_id, device_ids = registry(admin_client, 25)
    pages: list[str] = []

    def list_devices(request: device_pb2.ListDevicesRequest) -> device_pb2.ListDevicesResponse:
        pages.append(request.page_token)
        return admin_client.devices.ListDevices(request)

    listed = list(admin_client.paginate(list_devices, device_pb2.ListDevicesRequest(page_size=10)))
    listed_ids = [device.id for device in listed]
    assert len(listed_ids) == len(set(listed_ids))  # no item on two pages
    assert [d.id for d in listed if d.device_type == type_id] == device_ids
    assert all(d.batch == batch_id for d in listed if d.device_type == type_id)
    assert len(pages) >= 3 and pages[0] == "" and all(pages[1:])
    # The list field is found without being named, and the caller's request is not changed.
    first = device_type_pb2.ListDeviceTypesRequest(page_size=1)
    types = list(admin_client.paginate(admin_client.device_types.ListDeviceTypes, first))
    assert type_id in [t.id for t in types] and len(types) >= 1
    assert first.page_token == ""


def test_errors_carry_the_error_reason(own_stack, admin_client):
    with pytest.raises(ApiError) as missing:
        admin_client.devices.GetDevice(device_pb2.GetDeviceRequest(id=2_000_000_000))
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.reason == "DEVICE_NOT_FOUND"
    assert str(missing.value) == f"DEVICE_NOT_FOUND: {missing.value.message} (NOT_FOUND)"
    assert missing.value.message

    code = unique("DUP")
    request = device_type_pb2.CreateDeviceTypeRequest(
        device_type=device_type_pb2.DeviceType(name="dup", code=code)
    )
    admin_client.device_types.CreateDeviceType(request)
    with pytest.raises(ApiError) as duplicate:
        admin_client.device_types.CreateDeviceType(request)
    assert duplicate.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert duplicate.value.reason == "DEVICE_TYPE_CODE_TAKEN"

    with new_user_client(own_stack.target) as user, pytest.raises(ApiError) as denied:
        user.device_types.CreateDeviceType(request)
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.reason == "PERMISSION_DENIED"


def test_bound_device_receives_a_sent_message_and_acknowledges_it(own_stack, admin_client):
    user = bound_user(own_stack.target, admin_client)
    subscriber = Subscriber(user)
    try:
        send_text(user, "안녕하세요")
        message = subscriber.next_message()
        assert (message.type, message.message.content) == ("text", "안녕하세요")
        wait_for_states(own_stack.stack, {message.id: "acked"}, timeout=WAIT)
    finally:
        subscriber.stop()


def test_subscription_resumes_after_the_server_is_killed(own_stack, admin_client):
    sender = bound_user(own_stack.target, admin_client)
    # The subscriber is the same account on a connection of its own; it reconnects at
    # most 1 s apart (the default: 5 s), which only makes the test quicker.
    listener = Client(own_stack.target, token=sender.token, retry=RetryPolicy(max_backoff=1.0))
    subscriber = Subscriber(listener)
    try:
        send_text(sender, "before")
        before = subscriber.next_message()
        assert before.message.content == "before"
        wait_for_states(own_stack.stack, {before.id: "acked"}, timeout=WAIT)

        own_stack.kill()  # the stream breaks: no goodbye from the server
        own_stack.start()

        # Sent right after the restart: the subscriber may still be reconnecting, and then
        # gets it from the backlog (after_id = the last message it yielded), else live.
        send_text(sender, "after 1")
        send_text(sender, "after 2")
        first, second = subscriber.next_message(), subscriber.next_message()
        # Nothing lost, in order, the acknowledged one not replayed ...
        assert [first.message.content, second.message.content] == ["after 1", "after 2"]
        assert before.id < first.id < second.id
        wait_for_states(own_stack.stack, {first.id: "acked", second.id: "acked"}, timeout=WAIT)
        # ... and nothing twice: the next message is a new one.
        send_text(sender, "after 3")
        assert subscriber.next_message().message.content == "after 3"
    finally:
        subscriber.stop()
        sender.close()


@dataclass(frozen=True)
class CountingRetryPolicy(RetryPolicy):
    """A RetryPolicy that records each backoff it hands out."""

    delays: list[float] = field(default_factory=list, compare=False)

    def backoff(self, failures: int) -> float:
        delay = super().backoff(failures)
        self.delays.append(delay)
        return delay


def test_unavailable_is_retried_for_reads_only(own_stack, admin_client):
    _, _, (device_id,) = registry(admin_client, 1)
    # Patient enough to outlast a restart however busy the machine is (about 20-40 s of
    # retrying; the default policy gives up after 8-16 s).
    policy = CountingRetryPolicy(max_attempts=40, initial_backoff=0.1, max_backoff=1.0)
    client = Client(own_stack.target, token=admin_client.token, retry=policy, timeout=120)
    code = unique("RETRY")
    create = device_type_pb2.CreateDeviceTypeRequest(
        device_type=device_type_pb2.DeviceType(name="retry", code=code)
    )
    read: dict[str, object] = {}

    def get_device() -> None:
        try:
            read["device"] = client.devices.GetDevice(device_pb2.GetDeviceRequest(id=device_id))
        except ApiError as error:
            read["error"] = error

    try:
        own_stack.kill()
        # A Create while the server is down fails at once, and is not repeated later.
        with pytest.raises(ApiError) as refused:
            client.device_types.CreateDeviceType(create)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert policy.delays == []

        reader = threading.Thread(target=get_device)
        reader.start()
        own_stack.start()
        reader.join(120)
        assert not reader.is_alive()
        assert "error" not in read, read
        assert read["device"].id == device_id
        assert policy.delays  # it failed at least once before the server answered

        listed = admin_client.paginate(
            admin_client.device_types.ListDeviceTypes,
            device_type_pb2.ListDeviceTypesRequest(page_size=1000),
        )
        assert [t for t in listed if t.code == code] == []
    finally:
        client.close()


def test_firmware_upload_and_download_in_pieces(own_stack, admin_client):
    type_id, _, _ = registry(admin_client, 1)
    blob = bytes(range(256)) * 4096  # 1 MiB, in 7 pieces of at most UPLOAD_PIECE_BYTES
    chunks = [blob[i : i + 300_000] for i in range(0, len(blob), 300_000)]
    progress: list[int] = []
    package = admin_client.upload_firmware(
        type_id,
        "1.2.3",
        iter(chunks),
        title="client test",
        size_bytes=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        progress=progress.append,
    )
    assert isinstance(package, firmware_pb2.FirmwarePackage)
    assert (package.version, package.size_bytes) == ("1.2.3", len(blob))
    assert package.sha256 == hashlib.sha256(blob).hexdigest()
    assert progress == sorted(progress) and progress[-1] == len(blob) and len(progress) > 4
    # A server stream through the client: the bytes come back as they went.
    download = admin_client.firmware.DownloadFirmwarePackage(
        firmware_pb2.DownloadFirmwarePackageRequest(id=package.id)
    )
    assert b"".join(body.data for body in download) == blob

    with pytest.raises(ApiError) as mismatch:
        admin_client.upload_firmware(
            type_id, "1.2.4", [blob], title="bad hash", sha256=hashlib.sha256(b"x").hexdigest()
        )
    assert mismatch.value.code == grpc.StatusCode.INVALID_ARGUMENT
