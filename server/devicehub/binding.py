"""Binding devices to people: the Lux device API and the user-devices API, one table.

A device is bound to at most one account (``binding.device_id`` is unique). Lux
bindings also name one of the account's children. Each account has at most one
primary binding; the first one bound is primary, and when the primary is unbound the
oldest remaining binding takes over. Binding marks the device active (and sets
``activated_at`` the first time); unbinding deactivates it and keeps its history.
Every change takes the account's row lock (PostgreSQL) BEFORE it reads any binding, so
concurrent requests for one account apply one after another and each decides on fresh
state. Races between accounts (two people binding one device) end at the unique index
on ``binding.device_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

import peewee

from devicehub import validation
from devicehub.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from devicehub.security import Caller
from devicehub.storage import row_locks
from devicehub.storage.db import database
from devicehub.storage.home_screen import HomeRow, home_screen
from devicehub.storage.models import Binding, Child, Device, DeviceType, utcnow
from devicehub.v1 import error_pb2 as reasons

NOT_AUTHORIZED_USER = "Not authorized user"
NOT_FOUND_DEVICE = "Not Found Device"
NOT_FOUND_USER = "Not Found User"
ALREADY_CONNECTED = "Already Connected Device"
NOT_CONNECTED = "Not Connected Device"
CONNECTION_CONFIRMED = "Connection Confirmed"
DEVICE_REGISTERABLE = "Device Registerable"


def not_authorized_user() -> PermissionDenied:
    # REST answers this reason 401, as the Lux API documents (api/errors.py).
    return PermissionDenied(NOT_AUTHORIZED_USER, reasons.ERROR_REASON_NOT_AUTHORIZED_USER)


def not_found_device() -> NotFound:
    return NotFound(NOT_FOUND_DEVICE, reasons.ERROR_REASON_DEVICE_NOT_FOUND)


def not_connected() -> Conflict:
    return Conflict(NOT_CONNECTED, reasons.ERROR_REASON_DEVICE_NOT_BOUND)


def already_connected() -> Conflict:
    return Conflict(ALREADY_CONNECTED, reasons.ERROR_REASON_DEVICE_ALREADY_BOUND)


def own_child(caller: Caller, child_id: int, *, missing_is_404: bool = False) -> Child:
    """The caller's child ``child_id``.

    Anyone else's child is 401 ``Not authorized user``. A child id that does not exist
    at all is ``Not Found User`` (404) where the Lux API documents it, else the same 401.
    """
    child = Child.get_or_none(Child.id == child_id)
    if child is None and missing_is_404:
        raise NotFound(NOT_FOUND_USER, reasons.ERROR_REASON_USER_NOT_FOUND)
    if child is None or child.root_user_id != caller.account_id:
        raise not_authorized_user()
    return child


def lock_account(account_id: int) -> None:
    """Serialises binding changes of one account: taken before any binding is read."""
    row_locks.lock_account(account_id)


def _devices() -> peewee.ModelSelect[Device]:
    return Device.select(Device, DeviceType).join(DeviceType)


def binding_of(device_id: int) -> Binding | None:
    return Binding.get_or_none(Binding.device == device_id)


@dataclass(frozen=True)
class BoundDevice:
    """A device with its binding (None when unbound)."""

    device: Device
    binding: Binding | None

    @property
    def child_id(self) -> int:
        return (self.binding.child_id or 0) if self.binding else 0


def _bind(
    account_id: int, device: Device, child_id: int | None, nickname: str, primary: bool
) -> Binding:
    """Creates the binding; raises Conflict if the device is already bound.

    The caller holds the account lock."""
    if binding_of(device.id) is not None:
        raise already_connected()
    has_primary = (
        Binding.select()
        .where((Binding.account == account_id) & (Binding.is_primary == True))  # noqa: E712
        .exists()
    )
    if primary and has_primary:
        Binding.update(is_primary=False).where(Binding.account == account_id).execute()
    try:
        binding = Binding.create(
            device=device.id,
            account=account_id,
            child=child_id,
            nickname=nickname,
            is_primary=primary or not has_primary,
        )
    except peewee.IntegrityError:  # a concurrent bind of the same device won
        raise already_connected() from None
    now = utcnow()
    Device.update(
        is_active=True,
        activated_at=peewee.fn.COALESCE(Device.activated_at, now),
        updated_at=now,
    ).where(Device.id == device.id).execute()
    return binding


def _unbind(binding: Binding) -> None:
    """Deletes the binding, read after the account lock was taken (its ``is_primary``
    decides the succession)."""
    binding.delete_instance()
    Device.update(is_active=False, updated_at=utcnow()).where(
        Device.id == binding.device_id
    ).execute()
    if binding.is_primary:
        successor = (
            Binding.select()
            .where(Binding.account == binding.account_id)
            .order_by(Binding.id)
            .first()
        )
        if successor is not None:
            successor.is_primary = True
            successor.save()


# --- Lux device API ---------------------------------------------------------------


def get_child_device(caller: Caller, child_id: int) -> BoundDevice:
    own_child(caller, child_id)
    row = (
        _devices()
        .join_from(Device, Binding)
        .where(Binding.child == child_id)
        .order_by(Binding.bound_at.desc(), Binding.id.desc())
        .first()
    )
    if row is None:
        raise NotFound("Device not found", reasons.ERROR_REASON_DEVICE_NOT_FOUND)
    return BoundDevice(row, binding_of(row.id))


async def list_child_devices(caller: Caller) -> list[HomeRow]:
    """One row per (child, bound device) of the caller; a child without a device gets one
    row with its device fields None. (A coroutine: its one read runs on the event loop
    when it can, ``storage/home_screen.py``.)"""
    rows = await home_screen(caller.account_id)
    if rows is None:
        raise Unauthenticated("User is None", reasons.ERROR_REASON_ACCOUNT_NOT_FOUND)
    return rows


def _device_by_identifiers(serial_code: str, mac_id: str, unique_id: str) -> Device:
    try:
        mac = validation.mac_address("mac_id", mac_id)
    except InvalidArgument:  # not a MAC address: it cannot name a registered device
        raise not_found_device() from None
    device = (
        _devices()
        .where(
            (Device.device_code == serial_code.strip())
            & (Device.mac_address == mac)
            & (Device.unique_id == unique_id.strip())
        )
        .first()
    )
    if device is None:
        raise not_found_device()
    return device


def connect_device(
    caller: Caller, serial_code: str, mac_id: str, unique_id: str, child_id: int
) -> None:
    """Binds the device to the child; connecting it to the same child again is a no-op."""
    with database.atomic():
        lock_account(caller.account_id)
        own_child(caller, child_id)
        device = _device_by_identifiers(serial_code, mac_id, unique_id)
        existing = binding_of(device.id)
        if existing is not None:
            if existing.child_id == child_id:
                return
            raise already_connected()
        _bind(caller.account_id, device, child_id, nickname="", primary=False)


def disconnect_device(caller: Caller, unique_id: str, child_id: int) -> None:
    with database.atomic():
        lock_account(caller.account_id)
        own_child(caller, child_id)
        device = Device.get_or_none(Device.unique_id == unique_id.strip())
        binding = binding_of(device.id) if device is not None else None
        if binding is None or binding.child_id != child_id:
            raise not_found_device()
        _unbind(binding)


def check_device(caller: Caller, unique_id: str) -> tuple[str, BoundDevice]:
    """``Connection Confirmed`` (the caller's), ``Device Registerable`` (free), or 409."""
    device = _devices().where(Device.unique_id == unique_id.strip()).first()
    if device is None:
        raise not_found_device()
    binding = binding_of(device.id)
    if binding is None:
        return DEVICE_REGISTERABLE, BoundDevice(device, None)
    if binding.account_id != caller.account_id:
        raise already_connected()
    return CONNECTION_CONFIRMED, BoundDevice(device, binding)


def bound_to_child(device_id: int, child_id: int) -> Device:
    """The device, which must exist (404) and be bound to the child (409)."""
    device = _devices().where(Device.id == device_id).first()
    if device is None:
        raise not_found_device()
    binding = binding_of(device_id)
    if binding is None or binding.child_id != child_id:
        raise not_connected()
    return device


def update_device_alias(caller: Caller, device_id: int, child_id: int, alias: str) -> BoundDevice:
    alias = validation.text("device_alias", alias, max_length=100, required=False)
    with database.atomic():
        own_child(caller, child_id)
        device = bound_to_child(device_id, child_id)
        device.device_alias = alias
        device.updated_at = utcnow()
        device.save()
        return BoundDevice(device, binding_of(device_id))


# --- device-interaction API (/api/device/user-devices) ----------------------------


def _bindings() -> peewee.ModelSelect[Binding]:
    return Binding.select(Binding, Device, DeviceType).join(Device).join(DeviceType)


def list_user_devices(caller: Caller) -> list[Binding]:
    return list(_bindings().where(Binding.account == caller.account_id).order_by(Binding.id))


def _own_binding(caller: Caller, binding_id: int) -> Binding:
    binding = (
        _bindings()
        .where((Binding.id == binding_id) & (Binding.account == caller.account_id))
        .first()
    )
    if binding is None:
        raise NotFound("Bound device not found", reasons.ERROR_REASON_BINDING_NOT_FOUND)
    return binding


def bind_user_device(caller: Caller, mac_address: str, nickname: str, is_primary: bool) -> Binding:
    mac = validation.mac_address("mac_address", mac_address)
    nickname = validation.text("nickname", nickname, max_length=100, required=False)
    with database.atomic():
        lock_account(caller.account_id)
        device = Device.get_or_none(Device.mac_address == mac)
        if device is None:
            raise NotFound("Device not found", reasons.ERROR_REASON_DEVICE_NOT_FOUND)
        try:
            binding = _bind(caller.account_id, device, None, nickname, is_primary)
        except Conflict:  # same condition, in this API's words
            raise Conflict(
                "Device is already bound", reasons.ERROR_REASON_DEVICE_ALREADY_BOUND
            ) from None
        return _own_binding(caller, binding.id)


def set_primary(caller: Caller, binding_id: int) -> Binding:
    with database.atomic():
        lock_account(caller.account_id)
        binding = _own_binding(caller, binding_id)
        Binding.update(is_primary=False).where(
            (Binding.account == caller.account_id) & (Binding.id != binding_id)
        ).execute()
        Binding.update(is_primary=True).where(Binding.id == binding_id).execute()
        return _own_binding(caller, binding.id)


def unbind_user_device(caller: Caller, binding_id: int) -> None:
    with database.atomic():
        lock_account(caller.account_id)
        _unbind(_own_binding(caller, binding_id))


def unbind_child_devices(child: Child) -> None:
    """Unbinds every device of a child that is being deleted (inside the caller's
    transaction)."""
    lock_account(child.root_user_id)
    for binding in Binding.select().where(Binding.child == child.id):
        _unbind(binding)
