"""The device catalog: device types, production batches and the device registry.

Device types and batches can be read by every authenticated caller. Devices can be read
by admins, and by other callers only while bound to them: a device's code, MAC address
and unique_id together let anyone connect it (set-my-device), so they are not listed to
strangers. Writes need an admin. Every write is one transaction: a failed validation or
conflict leaves nothing behind.
"""

from __future__ import annotations

import uuid

import peewee

from devicehub import validation
from devicehub.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, PermissionDenied
from devicehub.pagination import Page, paginate
from devicehub.security import Caller
from devicehub.storage import movement_rows
from devicehub.storage.db import database
from devicehub.storage.errors import unique_violation
from devicehub.storage.models import (
    Binding,
    Device,
    DeviceBatch,
    DeviceType,
    Devlog,
    FirmwarePackage,
    utcnow,
)
from devicehub.v1 import error_pb2 as reasons

MAX_BATCH_CREATE = 1000
"""Most devices one ``batch_create`` call may register."""

MAX_SERIAL_LENGTH = 32


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied("Only admins may change the device catalog")


# The schema's unique rules a create or update can break (names as in storage/errors.py),
# each with its documented message and reason.
_TYPE_CODE_KEY = "device_type_code_key"
_BATCH_NUMBER_KEY = "device_batch_batch_number_key"
_DEVICE_CODE_KEY = "device_device_code_key"
_TYPE_SERIAL_KEY = "device_device_type_id_serial_number"
_MAC_ADDRESS_KEY = "device_mac_address_key"
_DEVICE_CODE_TAKEN = ("Device code already exists", reasons.ERROR_REASON_DEVICE_CODE_TAKEN)
_TAKEN_BY_CONSTRAINT = {
    _TYPE_CODE_KEY: (
        "Device type code already exists",
        reasons.ERROR_REASON_DEVICE_TYPE_CODE_TAKEN,
    ),
    _BATCH_NUMBER_KEY: ("Batch number already exists", reasons.ERROR_REASON_BATCH_NUMBER_TAKEN),
    _DEVICE_CODE_KEY: _DEVICE_CODE_TAKEN,
    # A device code is its type's code + its serial: a serial taken within the type is
    # that device code taken.
    _TYPE_SERIAL_KEY: _DEVICE_CODE_TAKEN,
    _MAC_ADDRESS_KEY: ("MAC address already exists", reasons.ERROR_REASON_MAC_ADDRESS_TAKEN),
}


def _taken(constraint: str, value: str = "") -> AlreadyExists:
    message, reason = _TAKEN_BY_CONSTRAINT[constraint]
    return AlreadyExists(f"{message}: {value}" if value else message, reason)


def _unique_violation(exc: peewee.IntegrityError) -> AlreadyExists:
    """Names the unique value a concurrent writer took between our check and our write;
    any other integrity error is raised as it is."""
    violation = unique_violation(exc)
    if violation is None or violation.constraint not in _TAKEN_BY_CONSTRAINT:
        raise exc
    return _taken(violation.constraint)


# --- device types -----------------------------------------------------------------


def _device_type_fields(name: str, code: str, description: str) -> dict:
    return {
        "name": validation.text("name", name, max_length=100),
        "code": validation.code("code", code, max_length=16),
        "description": validation.text("description", description, max_length=1000, required=False),
    }


def list_device_types(page_size: int = 0, page_token: str = "") -> Page[DeviceType]:
    return paginate(DeviceType.select(), DeviceType, page_size, page_token)


def get_device_type(type_id: int) -> DeviceType:
    device_type = DeviceType.get_or_none(DeviceType.id == type_id)
    if device_type is None:
        raise NotFound("Device type not found", reasons.ERROR_REASON_DEVICE_TYPE_NOT_FOUND)
    return device_type


def create_device_type(caller: Caller, name: str, code: str, description: str = "") -> DeviceType:
    require_admin(caller)
    fields = _device_type_fields(name, code, description)
    with database.atomic():
        if DeviceType.select().where(DeviceType.code == fields["code"]).exists():
            raise _taken(_TYPE_CODE_KEY, fields["code"])
        try:
            return DeviceType.create(**fields)
        except peewee.IntegrityError as exc:
            raise _unique_violation(exc) from None


def update_device_type(
    caller: Caller, type_id: int, name: str, code: str, description: str = ""
) -> DeviceType:
    require_admin(caller)
    fields = _device_type_fields(name, code, description)
    with database.atomic():
        device_type = get_device_type(type_id)
        if fields["code"] != device_type.code:
            if DeviceType.select().where(DeviceType.code == fields["code"]).exists():
                raise _taken(_TYPE_CODE_KEY, fields["code"])
            if Device.select().where(Device.device_type == type_id).exists():
                raise Conflict(
                    "Device type code cannot change while devices of this type exist",
                    reasons.ERROR_REASON_DEVICE_TYPE_CODE_LOCKED,
                )
        for key, value in fields.items():
            setattr(device_type, key, value)
        device_type.updated_at = utcnow()
        try:
            device_type.save()
        except peewee.IntegrityError as exc:
            raise _unique_violation(exc) from None
        return device_type


def delete_device_type(caller: Caller, type_id: int) -> None:
    require_admin(caller)
    with database.atomic():
        device_type = get_device_type(type_id)
        in_use = (
            DeviceBatch.select().where(DeviceBatch.device_type == type_id).exists()
            or Device.select().where(Device.device_type == type_id).exists()
        )
        if in_use:
            raise Conflict(
                "Device type still has batches or devices",
                reasons.ERROR_REASON_DEVICE_TYPE_IN_USE,
            )
        if FirmwarePackage.select().where(FirmwarePackage.device_type == type_id).exists():
            raise Conflict(
                "Device type still has firmware packages",
                reasons.ERROR_REASON_DEVICE_TYPE_IN_USE,
            )
        device_type.delete_instance()


# --- device batches ---------------------------------------------------------------


def _batches() -> peewee.ModelSelect[DeviceBatch]:
    return DeviceBatch.select(DeviceBatch, DeviceType).join(DeviceType)


def _batch_fields(
    device_type_id: int, batch_number: str, production_date: str, quantity: int, description: str
) -> dict:
    if quantity < 0:
        raise InvalidArgument("quantity must not be negative")
    return {
        "device_type": validation.positive_id("device_type", device_type_id),
        "batch_number": validation.code("batch_number", batch_number, max_length=32),
        "production_date": validation.date("production_date", production_date),
        "quantity": quantity,
        "description": validation.text("description", description, max_length=1000, required=False),
    }


def list_device_batches(page_size: int = 0, page_token: str = "") -> Page[DeviceBatch]:
    return paginate(_batches(), DeviceBatch, page_size, page_token)


def get_device_batch(batch_id: int) -> DeviceBatch:
    batch = _batches().where(DeviceBatch.id == batch_id).first()
    if batch is None:
        raise NotFound("Device batch not found", reasons.ERROR_REASON_DEVICE_BATCH_NOT_FOUND)
    return batch


def create_device_batch(
    caller: Caller,
    device_type_id: int,
    batch_number: str,
    production_date: str,
    quantity: int = 0,
    description: str = "",
) -> DeviceBatch:
    require_admin(caller)
    fields = _batch_fields(device_type_id, batch_number, production_date, quantity, description)
    with database.atomic():
        get_device_type(device_type_id)
        if DeviceBatch.select().where(DeviceBatch.batch_number == fields["batch_number"]).exists():
            raise _taken(_BATCH_NUMBER_KEY, fields["batch_number"])
        try:
            batch = DeviceBatch.create(**fields)
        except peewee.IntegrityError as exc:
            raise _unique_violation(exc) from None
        return get_device_batch(batch.id)


def update_device_batch(
    caller: Caller,
    batch_id: int,
    device_type_id: int,
    batch_number: str,
    production_date: str,
    quantity: int = 0,
    description: str = "",
) -> DeviceBatch:
    require_admin(caller)
    fields = _batch_fields(device_type_id, batch_number, production_date, quantity, description)
    with database.atomic():
        batch = get_device_batch(batch_id)
        get_device_type(device_type_id)
        if fields["batch_number"] != batch.batch_number and (
            DeviceBatch.select().where(DeviceBatch.batch_number == fields["batch_number"]).exists()
        ):
            raise _taken(_BATCH_NUMBER_KEY, fields["batch_number"])
        if device_type_id != batch.device_type_id and (
            Device.select().where(Device.batch == batch_id).exists()
        ):
            raise Conflict(
                "Batch has devices; its device type cannot change",
                reasons.ERROR_REASON_DEVICE_BATCH_IN_USE,
            )
        for key, value in fields.items():
            setattr(batch, key, value)
        batch.updated_at = utcnow()
        try:
            batch.save()
        except peewee.IntegrityError as exc:
            raise _unique_violation(exc) from None
        return get_device_batch(batch_id)


def delete_device_batch(caller: Caller, batch_id: int) -> None:
    require_admin(caller)
    with database.atomic():
        batch = get_device_batch(batch_id)
        if Device.select().where(Device.batch == batch_id).exists():
            raise Conflict("Batch still has devices", reasons.ERROR_REASON_DEVICE_BATCH_IN_USE)
        batch.delete_instance()


# --- devices ----------------------------------------------------------------------


def _devices() -> peewee.ModelSelect[Device]:
    return (
        Device.select(Device, DeviceType, DeviceBatch)
        .join(DeviceType)
        .switch(Device)
        .join(DeviceBatch)
    )


def _type_and_batch(device_type_id: int, batch_id: int) -> tuple[DeviceType, DeviceBatch]:
    """Both must exist and agree: a device's batch is of the device's type."""
    validation.positive_id("device_type", device_type_id)
    validation.positive_id("batch", batch_id)
    device_type = get_device_type(device_type_id)
    batch = get_device_batch(batch_id)
    if batch.device_type_id != device_type.id:
        raise InvalidArgument(
            "batch belongs to another device type", reasons.ERROR_REASON_BATCH_TYPE_MISMATCH
        )
    return device_type, batch


def _check_unique(device_code: str, mac_address: str, except_id: int | None = None) -> None:
    others = Device.select().where(Device.id != (except_id or 0))
    if others.where(Device.device_code == device_code).exists():
        raise _taken(_DEVICE_CODE_KEY, device_code)
    if others.where(Device.mac_address == mac_address).exists():
        raise _taken(_MAC_ADDRESS_KEY, mac_address)


def _visible_devices(caller: Caller | None) -> peewee.ModelSelect[Device]:
    query = _devices()
    if caller is not None and not caller.is_admin:
        bound = Binding.select(Binding.device).where(Binding.account == caller.account_id)
        query = query.where(Device.id.in_(bound))
    return query


def list_devices(
    caller: Caller,
    page_size: int = 0,
    page_token: str = "",
    *,
    batch_id: int = 0,
    mac_address: str = "",
) -> Page[Device]:
    """The devices ``caller`` may see, in id order; only those of batch ``batch_id`` and
    with ``mac_address`` where given (0 and "" mean any)."""
    query = _visible_devices(caller)
    if batch_id:
        query = query.where(Device.batch == batch_id)
    if mac_address:
        query = query.where(
            Device.mac_address == validation.mac_address("mac_address", mac_address)
        )
    return paginate(query, Device, page_size, page_token)


def get_device(device_id: int, caller: Caller | None = None) -> Device:
    """The device; for a non-admin ``caller``, only one bound to them (else 404)."""
    device = _visible_devices(caller).where(Device.id == device_id).first()
    if device is None:
        raise NotFound("Device not found", reasons.ERROR_REASON_DEVICE_NOT_FOUND)
    return device


def create_device(
    caller: Caller, device_type_id: int, batch_id: int, serial_number: str, mac_address: str
) -> Device:
    require_admin(caller)
    serial = validation.code("serial_number", serial_number, max_length=MAX_SERIAL_LENGTH)
    mac = validation.mac_address("mac_address", mac_address)
    with database.atomic():
        device_type, batch = _type_and_batch(device_type_id, batch_id)
        device_code = device_type.code + serial
        _check_unique(device_code, mac)
        try:
            device = Device.create(
                device_type=device_type,
                batch=batch,
                serial_number=serial,
                device_code=device_code,
                mac_address=mac,
                unique_id=str(uuid.uuid4()),
            )
        except peewee.IntegrityError as exc:
            raise _unique_violation(exc) from None
        return get_device(device.id)


def update_device(
    caller: Caller,
    device_id: int,
    device_type_id: int,
    batch_id: int,
    serial_number: str,
    mac_address: str,
) -> Device:
    require_admin(caller)
    serial = validation.code("serial_number", serial_number, max_length=MAX_SERIAL_LENGTH)
    mac = validation.mac_address("mac_address", mac_address)
    with database.atomic():
        device = get_device(device_id)
        device_type, batch = _type_and_batch(device_type_id, batch_id)
        device_code = device_type.code + serial
        _check_unique(device_code, mac, except_id=device_id)
        device.device_type = device_type
        device.batch = batch
        device.serial_number = serial
        device.device_code = device_code
        device.mac_address = mac
        device.updated_at = utcnow()
        try:
            device.save()
        except peewee.IntegrityError as exc:
            raise _unique_violation(exc) from None
        return get_device(device_id)


def delete_device(caller: Caller, device_id: int) -> None:
    """Deletes a device (and its binding); one with usage history is kept (409)."""
    require_admin(caller)
    with database.atomic():
        device = get_device(device_id)
        has_logs = Devlog.select().where(Devlog.device == device_id).exists()
        if has_logs or movement_rows.device_has_samples(device_id):
            raise Conflict(
                "Device has usage logs or movement samples",
                reasons.ERROR_REASON_DEVICE_HAS_HISTORY,
            )
        device.delete_instance()


def consecutive_serials(start_serial: str, count: int) -> list[str]:
    """``count`` consecutive serial numbers from ``start_serial``, each of its width (leading
    zeros kept); refuses a start that is not ASCII digits or a run that outgrows the width."""
    start_serial = start_serial.strip()
    if not start_serial.isdigit() or not start_serial.isascii():
        raise InvalidArgument("start_serial must be digits only, e.g. 00001")
    if len(start_serial) > MAX_SERIAL_LENGTH:
        raise InvalidArgument(f"start_serial must be at most {MAX_SERIAL_LENGTH} digits")
    width = len(start_serial)
    last = int(start_serial) + count - 1
    if len(str(last)) > width:
        raise InvalidArgument(f"{count} serial numbers from {start_serial} exceed {width} digits")
    return [str(int(start_serial) + i).zfill(width) for i in range(count)]


def mac_for_serial(prefix: list[int], serial: int) -> str:
    """The MAC address of the device numbered ``serial``: the ``prefix`` octets, then the
    serial in hex (big-endian) in the octets left; OverflowError if it does not fit."""
    free_octets = 6 - len(prefix)
    suffix = serial.to_bytes(free_octets, "big")
    return ":".join(f"{octet:02X}" for octet in [*prefix, *suffix])


def _serial_range(start_serial: str, count: int, mac_prefix: str) -> list[tuple[str, str]]:
    """(serial, MAC) of ``count`` devices with consecutive serials from ``start_serial``
    (its width kept), each MAC ``mac_prefix`` followed by the serial number in hex."""
    if count > MAX_BATCH_CREATE:
        raise InvalidArgument(
            f"count must be at most {MAX_BATCH_CREATE}", reasons.ERROR_REASON_BATCH_TOO_LARGE
        )
    if count < 1:
        raise InvalidArgument("count must be at least 1")
    serials = consecutive_serials(start_serial, count)
    prefix = validation.mac_prefix("mac_prefix", mac_prefix)
    capacity = 1 << (8 * (6 - len(prefix)))
    if int(serials[-1]) >= capacity:
        raise InvalidArgument(
            f"serial {serials[-1]} does not fit in the {6 - len(prefix)} MAC octets "
            "after mac_prefix; use a shorter prefix"
        )
    return [(serial, mac_for_serial(prefix, int(serial))) for serial in serials]


def _listed_devices(devices: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(serial, MAC) of an explicit list, each validated as CreateDevice does; a serial or
    MAC address given twice is refused (the whole list would conflict with itself)."""
    if len(devices) > MAX_BATCH_CREATE:
        raise InvalidArgument(
            f"devices must be at most {MAX_BATCH_CREATE}", reasons.ERROR_REASON_BATCH_TOO_LARGE
        )
    entries = [
        (
            validation.code(f"devices[{i}].serial_number", serial, max_length=MAX_SERIAL_LENGTH),
            validation.mac_address(f"devices[{i}].mac_address", mac),
        )
        for i, (serial, mac) in enumerate(devices)
    ]
    for position, name in ((0, "serial_number"), (1, "mac_address")):
        seen: set[str] = set()
        for entry in entries:
            if entry[position] in seen:
                raise InvalidArgument(f"devices lists {name} {entry[position]} twice")
            seen.add(entry[position])
    return entries


def batch_create_devices(
    caller: Caller,
    device_type_id: int,
    batch_id: int,
    start_serial: str,
    count: int,
    mac_prefix: str,
    devices: list[tuple[str, str]] | None = None,
) -> list[int]:
    """Registers up to 1000 devices of one batch; returns their ids in the given order.

    Either ``count`` devices with consecutive serials from ``start_serial`` (its width
    kept), each MAC address ``mac_prefix`` followed by the serial number in hex (derived,
    unique and reproducible), or ``devices``, an explicit list of (serial, MAC address).
    All or nothing: any collision with an existing device code or MAC address fails the
    whole call.
    """
    require_admin(caller)
    if devices:
        if start_serial or count or mac_prefix:
            raise InvalidArgument(
                "give either devices or start_serial, count and mac_prefix, not both"
            )
        entries = _listed_devices(devices)
    else:
        entries = _serial_range(start_serial, count, mac_prefix)
    with database.atomic():
        device_type, batch = _type_and_batch(device_type_id, batch_id)
        now = utcnow()
        rows = [
            {
                "device_type": device_type.id,
                "batch": batch.id,
                "serial_number": serial,
                "device_code": device_type.code + serial,
                "mac_address": mac,
                "unique_id": str(uuid.uuid4()),
                "created_at": now,
                "updated_at": now,
            }
            for serial, mac in entries
        ]
        codes = [device_type.code + serial for serial, _ in entries]
        macs = [mac for _, mac in entries]
        taken_code = Device.select(Device.device_code).where(Device.device_code.in_(codes))
        if row := taken_code.order_by(Device.device_code).first():
            raise _taken(_DEVICE_CODE_KEY, row.device_code)
        taken_mac = Device.select(Device.mac_address).where(Device.mac_address.in_(macs))
        if row := taken_mac.order_by(Device.mac_address).first():
            raise _taken(_MAC_ADDRESS_KEY, row.mac_address)
        try:
            for start in range(0, len(rows), 200):
                Device.insert_many(rows[start : start + 200]).execute()
        except peewee.IntegrityError as exc:
            raise _unique_violation(exc) from None
        created = Device.select(Device.id, Device.device_code).where(Device.device_code.in_(codes))
        ids = {device.device_code: device.id for device in created}
        return [ids[code] for code in codes]
