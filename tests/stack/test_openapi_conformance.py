"""Schemathesis holds every operation of the generated OpenAPI document to the live stack.

Every operation of ``server/devicehub/v1/openapi.json`` (both families of paths, both forms
of each path) is called through Envoy, on a stack of this module's own per database, with
requests schemathesis generates from the document; every answer must be:

- never a 5xx (``not_a_server_error``);
- a status the document lists for that operation (``status_code_conformance``), with its
  media type (``content_type_conformance``), its headers (``response_headers_conformance``)
  and a body that validates against its schema (``response_schema_conformance``; each event
  of the message stream too);
- a 4xx whenever the request is invalid by the document (``negative_data_rejection``).

Bounded: the coverage phase (each parameter and property missing, of the wrong type, at its
boundaries, unexpected methods and content types: the few dozen cases the document defines
per operation) and ``MAX_EXAMPLES`` fuzzed examples per operation, positive and negative
together; derandomized, without the example database and without shrinking (a failure is
reported as found). The requests still vary a little between runs: the scene's values are
unique per run and schemathesis adapts to the answers. No stateful phase: ``Scene`` builds
the state the operations act on instead.

Realistic data: generated ids would almost always be 404s, so ``Scene`` builds a catalog, a
parent with a child, devices connected (Lux) and bound (user-devices) to them, a firmware
package and a rollout, and each operation's preparer puts their ids (and valid dates, MACs,
versions, passwords) into the generated request wherever the generated value has the same
JSON type, so that a value generated of another type still tests its rejection. A call
that uses up what it acts on (a DELETE, unbinding, cancelling, deleting or re-passwording
the calling account) acts on a throwaway of its own, replaced once a call used it up (a
refused call leaves it as it was), so the scene and the admin survive the run.

Tokens: the admin-only operations run as the admin, the public ones without a token, the
rest as the scene's parent (or a throwaway account); the documented form of each path sends
``Authorization: Bearer``, its other form (with or without the trailing slash)
``Authorization: Token``.

The backend matters (PostgreSQL refuses NUL in text, the storage code differs), so it runs
on both. Each run has a stack of its own: its generated writes (hundreds of types, devices,
accounts, rollouts) must not reach the session stack the other tests share.

Left out: schemathesis' ``unsupported_method`` check, which wants 405 for a method the
document does not list. A wrong method on a documented path is 404 ``ROUTE_NOT_FOUND`` by
design ("No REST route matches the path and method", proto/devicehub/v1/error.proto; README
"Errors": unknown paths and wrong methods get the documented bodies), and OpenAPI cannot
document an answer of an operation that does not exist. The coverage phase still sends
those requests, held to no 5xx. And ``positive_data_acceptance``: the document gives value
rules (ranges, formats, which fields go together) in descriptions, not in schemas, so
schema-valid data is often rightly refused with 400.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis import checks as schemathesis_checks
from schemathesis.specs.openapi import checks as openapi_checks

from devicehub import resources
from devicehub.testing.stack import Stack, start_stack, unique

from api_client import connect, create_batch, create_child, create_device, create_type, random_mac
from bound_accounts import bind
from firmware_setup import ROLLOUTS, create_rollout, firmware_bytes, upload_rest
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env

MAX_EXAMPLES = 4  # fuzzed examples per operation, beside the coverage phase
REQUEST_TIMEOUT = 20.0
# Seconds a message stream is read: the scene's parent always has a pending message, which
# arrives at once, and one event is enough (max-stream-events).
STREAM_READ_SECONDS = 2.0
PASSWORD = "password-123"

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "no-shrink": True,
            "database": "none",
            # The test sends the token (Bearer or Token) itself: a generated Authorization
            # header would only be refused with 401, for every operation alike.
            "with-security-parameters": False,
        },
        # The document gives no examples; the scene stands for the stateful phase.
        "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
        "request-timeout": REQUEST_TIMEOUT,
        "max-stream-events": 1,
    }
)
SCHEMA = schemathesis.openapi.from_path(resources.OPENAPI_DOCUMENT, config=CONFIG)
CHECKS = [
    schemathesis_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]


def succeeded(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class Account:
    """A non-admin account of the scene, signed in."""

    record: dict
    username: str
    token: str
    refresh_token: str

    @property
    def id(self) -> int:
        return self.record["id"]


def register(stack: Stack) -> Account:
    username = unique("user").lower()
    record = succeeded(
        stack.request(
            "POST",
            "/api/v1/auth/register",
            json={"username": username, "password": PASSWORD, "phone": "01012345678"},
        )
    )
    tokens = succeeded(
        stack.request(
            "POST", "/api/v1/auth/token", json={"username": username, "password": PASSWORD}
        )
    )
    return Account(record, username, tokens["access_token"], tokens["refresh_token"])


INT32 = range(-(2**31), 2**31)
DIGITS = re.compile(r"-?[0-9]+")


def same_kind(generated: object, value: object, as_text: bool) -> bool:
    """Whether ``generated`` is a value of ``value``'s JSON type; ``as_text``: in a path or
    query, where an integer may come as its digits. Integers beyond int32 are boundary
    cases, never replaced."""
    if isinstance(value, bool) or isinstance(generated, bool):
        return isinstance(value, bool) and isinstance(generated, bool)
    if isinstance(value, int):
        if as_text and isinstance(generated, str) and DIGITS.fullmatch(generated):
            generated = int(generated)
        return isinstance(generated, int) and generated in INT32
    return isinstance(generated, type(value))


def fill(container: object, key: str, value: object, as_text: bool = False) -> None:
    """Puts ``value`` at ``key`` where the generated request has a value of the same kind
    there: a missing key stays missing and a value of another type stays, so the negative
    cases still test what they were generated for."""
    if isinstance(container, dict) and same_kind(container.get(key), value, as_text):
        container[key] = value


def fill_parameter(container: dict, key: str, value: object) -> None:
    """``fill`` for a path or query parameter."""
    fill(container, key, value, as_text=True)


def devlog_entries(body: object) -> list[dict]:
    """The entries of either devlog body: ``{"log_arrays": [...]}`` or the bare array."""
    if isinstance(body, dict):
        body = body.get("log_arrays")
    return [entry for entry in body if isinstance(entry, dict)] if isinstance(body, list) else []


# The operations only an admin may call (catalog.require_admin and its kin): the admin
# calls them, to reach more than PERMISSION_DENIED.
ADMIN_METHODS = frozenset(
    {
        "AccountService.SetAccountAdmin",
        "DeviceTypeService.CreateDeviceType",
        "DeviceTypeService.UpdateDeviceType",
        "DeviceTypeService.DeleteDeviceType",
        "DeviceBatchService.CreateDeviceBatch",
        "DeviceBatchService.UpdateDeviceBatch",
        "DeviceBatchService.DeleteDeviceBatch",
        "DeviceService.CreateDevice",
        "DeviceService.BatchCreateDevices",
        "DeviceService.UpdateDevice",
        "DeviceService.DeleteDevice",
        "RtcService.IssueDeviceSecrets",
        "FirmwareService.UploadFirmwarePackage",
        "FirmwareService.ListFirmwarePackages",
        "FirmwareService.GetFirmwarePackage",
        "FirmwareService.DeleteFirmwarePackage",
        "FirmwareService.CreateFirmwareRollout",
        "FirmwareService.ListFirmwareRollouts",
        "FirmwareService.GetFirmwareRollout",
        "FirmwareService.PauseFirmwareRollout",
        "FirmwareService.ResumeFirmwareRollout",
        "FirmwareService.CancelFirmwareRollout",
        "FirmwareService.ListFirmwareRolloutUpdates",
    }
)
# Operations that delete the calling account or revoke its tokens.
ACCOUNT_CONSUMING = frozenset({"AccountService.DeleteMyAccount", "AccountService.ChangeMyPassword"})
CHILD_FIELDS = {"first_name": "Min", "last_name": "Kim", "birthdate": "2015-03-01", "gender": "f"}
# The fields of each type (weather: a city the fake weather provider knows).
MESSAGE_FIELDS = {
    "text": {"content": "你好"},
    "sing": {"song": "小星星", "artist": "佚名"},
    "dance": {"dance": "街舞", "style": "欢快", "duration": "30秒"},
    "weather": {"city": "北京"},
}
MESSAGE_TYPES = tuple(MESSAGE_FIELDS)


CONTAINERS = ("path_parameters", "query", "body")
_GENERATED: dict[int, tuple[schemathesis.Case, dict[str, Any]]] = {}


def as_generated(case: schemathesis.Case) -> None:
    """Gives ``case`` the values schemathesis generated for it, as copies for the preparers
    to change: schemathesis hands one coverage case to the test of each backend, and one
    body to several cases (the content-type probes of a valid request)."""
    if id(case) not in _GENERATED:
        _GENERATED[id(case)] = (case, {name: getattr(case, name) for name in CONTAINERS})
    for name, value in _GENERATED[id(case)][1].items():
        if isinstance(value, dict | list):  # the rest the preparers never change
            setattr(case, name, copy.deepcopy(value))


def is_other_form(case: schemathesis.Case) -> bool:
    """Whether the case's path is the form its document does not give (with or without
    the trailing slash)."""
    return case.operation.definition.raw["operationId"].endswith("slash")


def method_of(case: schemathesis.Case) -> str:
    """``Service.Method`` of the case's operation (its ``x-grpc-method``)."""
    return case.operation.definition.raw["x-grpc-method"].rsplit(".", 1)[-1].replace("/", ".")


@dataclass
class Scene:
    """What the generated requests act on, on one stack: built through the API."""

    stack: Stack
    parent: Account
    child: dict
    device_type: dict  # the scene's own devices
    batch: dict
    spare_type: dict  # what generated writes create and change
    spare_batch: dict
    spare_device: dict
    lux_device: dict  # connected to the child
    own_device: dict  # bound to the parent (user-devices)
    own_binding: dict
    second_device: dict  # bound to the parent too: the other path form's RTC MAC
    package: dict  # of device_type, rolled out by rollout
    rollout: dict
    spare_package: dict  # of spare_type, for generated rollouts
    admin_target: Account  # whose admin flag SetAccountAdmin changes
    throwaways: dict[str, Any] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    answered_2xx: collections.Counter = field(default_factory=collections.Counter)
    operations: set[str] = field(default_factory=set)

    @property
    def admin(self) -> str:
        return self.stack.admin_token

    def serial(self) -> str:
        """A fresh serial number: 7 digits, so a range from it still fits the 3 octets a
        MAC address gives it after a 3-octet prefix."""
        return f"{uuid.uuid4().int % 10**7:07d}"

    # --- throwaways: one per operation that uses it up, replaced once used up ---

    def throwaway(self, method: str, make: Callable[[], Any]) -> Any:
        if method not in self.throwaways:
            self.throwaways[method] = make()
        return self.throwaways[method]

    def new_device(self, device_type: dict | None = None, batch: dict | None = None) -> dict:
        return create_device(
            self.stack,
            self.admin,
            (device_type or self.device_type)["id"],
            (batch or self.batch)["id"],
        )

    def connected_device(self) -> dict:
        device = self.new_device()
        succeeded(connect(self.stack, self.parent.token, device, self.child["id"]))
        return device

    def bound_device(self) -> dict:
        return bind(self.stack, self.parent.token, self.new_device(), is_primary=False)

    def new_rollout(self) -> dict:
        """A running rollout of a type of its own: one over the spare type would find its
        devices in the generated rollouts, and end at once with none."""
        device_type = create_type(self.stack, self.admin)
        batch = create_batch(self.stack, self.admin, device_type["id"])
        self.new_device(device_type, batch)
        package = succeeded(
            upload_rest(self.stack, self.admin, device_type["id"], "1.0.0", firmware_bytes(64))
        )
        return create_rollout(self.stack, package["id"])

    def rollout_in(self, state: str) -> None:
        """Puts the scene's rollout in ``state`` if it is in the other one (running or
        paused); a rollout that ended stays as it is."""
        rollout = f"{ROLLOUTS}/{self.rollout['id']}"
        other, verb = ("paused", "resume") if state == "running" else ("running", "pause")
        if succeeded(self.stack.request("GET", rollout, self.admin))["state"] == other:
            succeeded(self.stack.request("POST", f"{rollout}/{verb}", self.admin))

    def spare_package_upload(self) -> dict:
        version = f"9.{next(self.counter)}.0"
        return succeeded(
            upload_rest(self.stack, self.admin, self.spare_type["id"], version, firmware_bytes(64))
        )

    # --- each call ---

    def prepare(self, case: schemathesis.Case) -> str | None:
        """Puts the scene's ids into ``case``; the Authorization header to send."""
        method = method_of(case)
        PREPARERS.get(method, lambda scene, case: None)(self, case)
        if case.operation.definition.raw.get("security") == []:
            return None
        if method in ACCOUNT_CONSUMING:
            token = self.throwaway(method, lambda: register(self.stack)).token
        elif method in ADMIN_METHODS:
            token = self.admin
        else:
            token = self.parent.token
        # The documented form of each path says Bearer; the other form the Token scheme.
        scheme = "Token" if is_other_form(case) else "Bearer"
        return f"{scheme} {token}"

    def record(self, case: schemathesis.Case, status: int) -> None:
        method = method_of(case)
        self.operations.add(case.operation.label)
        self.statuses[status // 100 * 100] += 1
        if 200 <= status < 300 and case.method.lower() == case.operation.method.lower():
            self.answered_2xx[case.operation.label] += 1
            # Used up: the next call gets a fresh one.
            self.throwaways.pop(method, None)


def build_scene(stack: Stack) -> Scene:
    admin = stack.admin_token
    parent = register(stack)
    child = create_child(stack, parent.token)
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    spare_type = create_type(stack, admin)
    spare_batch = create_batch(stack, admin, spare_type["id"])
    lux_device = create_device(stack, admin, device_type["id"], batch["id"])
    succeeded(connect(stack, parent.token, lux_device, child["id"]))
    own_device = create_device(stack, admin, device_type["id"], batch["id"])
    own_binding = bind(stack, parent.token, own_device)
    second_device = create_device(stack, admin, device_type["id"], batch["id"])
    bind(stack, parent.token, second_device, is_primary=False)
    package = succeeded(upload_rest(stack, admin, device_type["id"], "2.0.0", firmware_bytes(256)))
    rollout = create_rollout(stack, package["id"])
    spare_package = succeeded(
        upload_rest(stack, admin, spare_type["id"], "1.0.0", firmware_bytes(128))
    )
    # A pending message, so that every subscription has one to deliver at once.
    succeeded(
        stack.request(
            "POST",
            "/api/device/messages/",
            parent.token,
            json={"type": "text", "message": {"content": "你好"}},
        )
    )
    return Scene(
        stack=stack,
        parent=parent,
        child=child,
        device_type=device_type,
        batch=batch,
        spare_type=spare_type,
        spare_batch=spare_batch,
        spare_device=create_device(stack, admin, spare_type["id"], spare_batch["id"]),
        lux_device=lux_device,
        own_device=own_device,
        own_binding=own_binding,
        second_device=second_device,
        package=package,
        rollout=rollout,
        spare_package=spare_package,
        admin_target=register(stack),
    )


Preparer = Callable[[Scene, schemathesis.Case], None]
PREPARERS: dict[str, Preparer] = {}


def prepares(*methods: str) -> Callable[[Preparer], Preparer]:
    def register_preparer(function: Preparer) -> Preparer:
        for method in methods:
            PREPARERS[method] = function
        return function

    return register_preparer


def is_positive(case: schemathesis.Case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def path(case: schemathesis.Case) -> dict:
    return case.path_parameters if isinstance(case.path_parameters, dict) else {}


def query(case: schemathesis.Case) -> dict:
    return case.query if isinstance(case.query, dict) else {}


def body(case: schemathesis.Case) -> dict:
    return case.body if isinstance(case.body, dict) else {}


# --- accounts and tokens ---


@prepares("AuthService.Register")
def _register(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "username", unique("user").lower())
    fill(body(case), "password", PASSWORD)


@prepares("AuthService.CreateToken")
def _create_token(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "username", scene.parent.username)
    fill(body(case), "password", PASSWORD)


@prepares("AuthService.RefreshToken")
def _refresh_token(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "refresh_token", scene.parent.refresh_token)


@prepares("AccountService.CreateChild", "AccountService.UpdateChild")
def _child_fields(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.child["id"])
    for key, value in CHILD_FIELDS.items():
        fill(body(case), key, value)


@prepares("AccountService.DeleteChild")
def _delete_child(scene: Scene, case: schemathesis.Case) -> None:
    child = scene.throwaway(
        "AccountService.DeleteChild", lambda: create_child(scene.stack, scene.parent.token)
    )
    fill_parameter(path(case), "id", child["id"])


@prepares("AccountService.ChangeMyPassword")
def _change_password(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "current_password", PASSWORD)
    fill(body(case), "new_password", "password-456")


@prepares("AccountService.SetAccountAdmin")
def _set_admin(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.admin_target.id)


# --- the catalog ---


@prepares("DeviceTypeService.CreateDeviceType")
def _create_type(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "name", "智能音箱")
    fill(body(case), "code", unique("T"))


@prepares("DeviceTypeService.GetDeviceType")
def _get_type(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.device_type["id"])


@prepares("DeviceTypeService.UpdateDeviceType")
def _update_type(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.spare_type["id"])
    fill(body(case), "name", "智能音箱")
    fill(body(case), "code", scene.spare_type["code"])  # a type's code never changes


@prepares("DeviceTypeService.DeleteDeviceType")
def _delete_type(scene: Scene, case: schemathesis.Case) -> None:
    device_type = scene.throwaway(
        "DeviceTypeService.DeleteDeviceType", lambda: create_type(scene.stack, scene.admin)
    )
    fill_parameter(path(case), "id", device_type["id"])


@prepares("DeviceBatchService.CreateDeviceBatch")
def _create_batch(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "device_type", scene.spare_type["id"])
    fill(body(case), "batch_number", unique("B"))
    fill(body(case), "production_date", "2023-01-01")
    fill(body(case), "quantity", 10)


@prepares("DeviceBatchService.GetDeviceBatch")
def _get_batch(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.batch["id"])


@prepares("DeviceBatchService.UpdateDeviceBatch")
def _update_batch(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.spare_batch["id"])
    fill(body(case), "device_type", scene.spare_type["id"])
    fill(body(case), "batch_number", scene.spare_batch["batch_number"])
    fill(body(case), "production_date", "2023-02-01")


@prepares("DeviceBatchService.DeleteDeviceBatch")
def _delete_batch(scene: Scene, case: schemathesis.Case) -> None:
    batch = scene.throwaway(
        "DeviceBatchService.DeleteDeviceBatch",
        lambda: create_batch(scene.stack, scene.admin, scene.spare_type["id"]),
    )
    fill_parameter(path(case), "id", batch["id"])


@prepares("DeviceService.ListDevices")
def _list_devices(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(query(case), "batch", scene.batch["id"])
    fill_parameter(query(case), "mac_address", scene.own_device["mac_address"])


@prepares("DeviceService.CreateDevice")
def _create_device(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "device_type", scene.spare_type["id"])
    fill(body(case), "batch", scene.spare_batch["id"])
    fill(body(case), "serial_number", scene.serial())
    fill(body(case), "mac_address", random_mac())


@prepares("DeviceService.BatchCreateDevices")
def _batch_create(scene: Scene, case: schemathesis.Case) -> None:
    request = body(case)
    # The document cannot say "a range or a list" (either is required, its descriptions
    # say): a valid request without either gets a range.
    if is_positive(case) and request and not {"start_serial", "devices"} & request.keys():
        request.update(start_serial="", count=0, mac_prefix="")
    fill(body(case), "device_type", scene.spare_type["id"])
    fill(body(case), "batch", scene.spare_batch["id"])
    fill(body(case), "start_serial", scene.serial())
    fill(body(case), "count", 3)
    fill(body(case), "mac_prefix", random_mac()[:8])
    devices = request.get("devices")
    for device in devices if isinstance(devices, list) else [devices]:
        fill(device, "serial_number", scene.serial())
        fill(device, "mac_address", random_mac())


@prepares("DeviceService.GetDevice")
def _get_device(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.own_device["id"])  # the parent's: bound to it


@prepares("DeviceService.UpdateDevice")
def _update_device(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.spare_device["id"])
    fill(body(case), "device_type", scene.spare_type["id"])
    fill(body(case), "batch", scene.spare_batch["id"])
    fill(body(case), "serial_number", scene.serial())
    fill(body(case), "mac_address", scene.spare_device["mac_address"])


@prepares("DeviceService.DeleteDevice")
def _delete_device(scene: Scene, case: schemathesis.Case) -> None:
    device = scene.throwaway("DeviceService.DeleteDevice", scene.new_device)
    fill_parameter(path(case), "id", device["id"])


# --- binding: the Lux device API and user-devices ---


@prepares("BindingService.GetChildDevice")
def _child_device(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(query(case), "real_user_id", scene.child["id"])


def _lux_device_query(scene: Scene, case: schemathesis.Case, device: dict) -> None:
    fill_parameter(query(case), "serial_code", device["device_code"])
    fill_parameter(query(case), "mac_id", device["mac_address"])
    fill_parameter(query(case), "unique_id", device["unique_id"])
    fill_parameter(query(case), "real_user_id", scene.child["id"])


@prepares("BindingService.ConnectDevice")
def _connect(scene: Scene, case: schemathesis.Case) -> None:
    device = scene.throwaway("BindingService.ConnectDevice", scene.new_device)
    _lux_device_query(scene, case, device)


@prepares("BindingService.DisconnectDevice")
def _disconnect(scene: Scene, case: schemathesis.Case) -> None:
    device = scene.throwaway("BindingService.DisconnectDevice", scene.connected_device)
    _lux_device_query(scene, case, device)


@prepares("BindingService.CheckDevice")
def _check_device(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(query(case), "unique_id", scene.lux_device["unique_id"])


@prepares("BindingService.UpdateDeviceAlias")
def _update_alias(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "device_id", scene.lux_device["id"])
    fill(body(case), "real_user_id", scene.child["id"])


@prepares("BindingService.BindUserDevice")
def _bind(scene: Scene, case: schemathesis.Case) -> None:
    device = scene.throwaway("BindingService.BindUserDevice", scene.new_device)
    fill(body(case), "mac_address", device["mac_address"])
    fill(body(case), "is_primary", False)  # the scene's own device stays the primary one


@prepares("BindingService.SetPrimaryUserDevice")
def _set_primary(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.own_binding["id"])


@prepares("BindingService.UnbindUserDevice")
def _unbind(scene: Scene, case: schemathesis.Case) -> None:
    binding = scene.throwaway("BindingService.UnbindUserDevice", scene.bound_device)
    fill_parameter(path(case), "id", binding["id"])


# --- usage logs, movement ---


@prepares("DevlogService.UploadDevlogs")
def _devlog(scene: Scene, case: schemathesis.Case) -> None:
    for entry in devlog_entries(case.body):
        fill(entry, "real_user_id", scene.child["id"])
        fill(entry, "device_id", scene.lux_device["id"])
        fill(entry, "unique_id", scene.lux_device["unique_id"])
        fill(entry.get("detail_data"), "treatment_date", "2025-02-21T15:48:49")


@prepares("MovementService.UploadMovement")
def _upload_movement(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "real_user_id", scene.child["id"])
    fill(body(case), "device_id", scene.lux_device["id"])


@prepares("MovementService.ListMovementSamples")
def _list_movement(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(query(case), "real_user_id", scene.child["id"])
    fill_parameter(query(case), "device_id", scene.lux_device["id"])


# --- messages and RTC ---


@prepares("MessagingService.SendMessage")
def _send_message(scene: Scene, case: schemathesis.Case) -> None:
    message_type = MESSAGE_TYPES[next(scene.counter) % len(MESSAGE_TYPES)]
    fill(body(case), "type", message_type)
    fill(body(case), "user_id", str(scene.parent.id))
    message = body(case).get("message")
    # Each type takes its own fields only (messaging.validate_payload), which the document
    # cannot say: a valid request gets them, its generated text kept where it has some.
    if is_positive(case) and isinstance(message, dict) and body(case)["type"] == message_type:
        body(case)["message"] = {
            key: message[key] if isinstance(message.get(key), str) and message[key] else value
            for key, value in MESSAGE_FIELDS[message_type].items()
        }


@prepares("MessagingService.SubscribeMessages")
def _subscribe(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(query(case), "after_id", "0")  # replays the pending message at once
    fill_parameter(query(case), "user_id", scene.parent.id)


@prepares("RtcService.GenerateRtcToken")
def _generate_rtc(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "expire_time", 3600)


@prepares("RtcService.GetRtcTokenByMac")
def _rtc_by_mac(scene: Scene, case: schemathesis.Case) -> None:
    # Tokens by MAC are throttled per MAC (429): each path form asks for its own device's.
    device = scene.second_device if is_other_form(case) else scene.own_device
    fill_parameter(query(case), "mac_address", device["mac_address"])
    fill_parameter(query(case), "expire_time", 3600)


@prepares("RtcService.IssueDeviceSecrets")
def _device_secrets(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "batch_id", scene.spare_batch["id"])
    fill(body(case), "device_ids", [scene.spare_device["id"]])


# --- firmware ---


@prepares("FirmwareService.UploadFirmwarePackage")
def _upload_package(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(query(case), "device_type", scene.spare_type["id"])
    fill_parameter(query(case), "version", f"3.{next(scene.counter)}.0")
    fill_parameter(query(case), "title", "Quieter fan")
    fill_parameter(query(case), "min_version", "")
    data = getattr(case.body, "data", case.body)  # schemathesis wraps bytes as Binary
    if isinstance(data, bytes):
        fill_parameter(query(case), "size_bytes", len(data))
        fill_parameter(query(case), "sha256", hashlib.sha256(data).hexdigest())


@prepares("FirmwareService.ListFirmwarePackages")
def _list_packages(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(query(case), "device_type", scene.device_type["id"])


@prepares("FirmwareService.GetFirmwarePackage", "FirmwareService.DownloadFirmwarePackage")
def _package(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.package["id"])


@prepares("FirmwareService.DeleteFirmwarePackage")
def _delete_package(scene: Scene, case: schemathesis.Case) -> None:
    package = scene.throwaway("FirmwareService.DeleteFirmwarePackage", scene.spare_package_upload)
    fill_parameter(path(case), "id", package["id"])


@prepares(
    "FirmwareService.GetInstalledFirmware",
    "FirmwareService.CheckFirmwareUpdate",
    "FirmwareService.ListDeviceFirmwareUpdates",
)
def _device_firmware(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "device_id", scene.own_device["id"])


@prepares("FirmwareService.ReportFirmware")
def _report_firmware(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "device_id", scene.own_device["id"])
    fill(body(case), "version", "1.0.0")
    fill(body(case), "package_id", scene.package["id"])


@prepares("FirmwareService.ReportFirmwareUpdateProgress")
def _report_progress(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "device_id", scene.own_device["id"])
    fill(body(case), "state", "downloading")
    fill(body(case), "update_id", 0)


@prepares("FirmwareService.CreateFirmwareRollout")
def _create_rollout(scene: Scene, case: schemathesis.Case) -> None:
    fill(body(case), "package_id", scene.spare_package["id"])
    fill(body(case), "group_percents", [10, 100])
    fill(body(case), "success_threshold_percent", 90)
    fill(body(case), "error_threshold_percent", 10)
    target = body(case).get("target")
    fill(target, "batch_ids", [scene.spare_batch["id"]])
    fill(target, "device_ids", [scene.spare_device["id"]])


@prepares("FirmwareService.GetFirmwareRollout")
def _rollout(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "id", scene.rollout["id"])


@prepares("FirmwareService.PauseFirmwareRollout")
def _pause_rollout(scene: Scene, case: schemathesis.Case) -> None:
    scene.rollout_in("running")  # else the pause is a 409 (documented, and tried anyway)
    fill_parameter(path(case), "id", scene.rollout["id"])


@prepares("FirmwareService.ResumeFirmwareRollout")
def _resume_rollout(scene: Scene, case: schemathesis.Case) -> None:
    scene.rollout_in("paused")
    fill_parameter(path(case), "id", scene.rollout["id"])


@prepares("FirmwareService.CancelFirmwareRollout")
def _cancel_rollout(scene: Scene, case: schemathesis.Case) -> None:
    rollout = scene.throwaway("FirmwareService.CancelFirmwareRollout", scene.new_rollout)
    fill_parameter(path(case), "id", rollout["id"])


@prepares("FirmwareService.ListFirmwareRolloutUpdates")
def _rollout_updates(scene: Scene, case: schemathesis.Case) -> None:
    fill_parameter(path(case), "rollout_id", scene.rollout["id"])
    fill_parameter(query(case), "group", 0)


# --- the run ---


def report(config: pytest.Config, line: str) -> None:
    """Writes ``line`` to the terminal, past pytest's output capture: the counts of a run
    (the issue's closing note quotes them)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{line}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scene(request, tmp_path_factory, alimtalk_provider, weather_provider) -> Iterator[Scene]:
    """A stack of this module's own per backend, with the scene built on it."""
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"conformance-{backend}")
    env = stack_env(
        tmp,
        backend_database(request, backend, tmp),
        alimtalk_provider.base_url,
        weather_provider.base_url,
    )
    stack = start_stack(backend, env, tmp / "serve.log", ADMIN_PASSWORD)
    try:
        started = time.monotonic()
        built = build_scene(stack)
        yield built
        statuses = ", ".join(f"{n} {s // 100}xx" for s, n in sorted(built.statuses.items()))
        report(
            request.config,
            f"schemathesis on {backend}: {len(built.operations)} operations, "
            f"{sum(built.statuses.values())} calls ({statuses}), "
            f"{len(built.answered_2xx)} operations answered 2xx, "
            f"{time.monotonic() - started:.0f} s",
        )
    finally:
        stack.stop()


@SCHEMA.parametrize()
def test_the_stack_answers_as_the_document_says(case: schemathesis.Case, scene: Scene):
    as_generated(case)
    authorization = scene.prepare(case)
    # Schemathesis judges the request as sent: reading ``meta`` re-validates what prepare
    # changed, so a negative case that the scene's values made valid counts as positive.
    assert case.meta is not None
    headers = {"Authorization": authorization} if authorization else {}
    streams = method_of(case) == "MessagingService.SubscribeMessages"
    response = case.call(
        base_url=scene.stack.rest_url,
        headers=headers,
        timeout=(REQUEST_TIMEOUT, STREAM_READ_SECONDS) if streams else REQUEST_TIMEOUT,
    )
    scene.record(case, response.status_code)
    case.validate_response(response, checks=CHECKS, headers=headers)


@pytest.mark.parametrize("request_body", [None, {}, {"is_admin": None}])
def test_setting_admin_rights_needs_the_flag(scene: Scene, request_body: dict | None):
    """A missing or null ``is_admin`` is refused (found by the run above): proto3 would read
    it as false, and take an admin's rights away."""
    path = f"/api/v1/accounts/{scene.admin_target.id}/admin"
    refused = scene.stack.request("PUT", path, scene.admin, json=request_body)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {"detail": "is_admin is required: true or false"}
    granted = scene.stack.request("PUT", f"{path}/", scene.admin, json={"is_admin": True})
    assert succeeded(granted)["is_admin"] is True
