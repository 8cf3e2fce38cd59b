"""Conversion from storage rows to API messages (one function per resource)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from devicehub import firmware, rollouts
from devicehub.binding import BoundDevice, HomeRow
from devicehub.storage import models
from devicehub.v1 import (
    account_pb2,
    binding_pb2,
    device_batch_pb2,
    device_pb2,
    device_type_pb2,
    firmware_pb2,
)

_EPOCH = dt.datetime(1970, 1, 1)


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A naive-UTC datetime as a Timestamp (arithmetic, not ``FromDatetime``: the home
    screen converts several per call and protobuf does it in pure Python)."""
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def rfc3339(value: dt.datetime) -> str:
    """A naive-UTC datetime as ``Timestamp.ToJsonString`` prints it: ``...Z``, with 0, 3
    or 6 fraction digits."""
    text = value.isoformat(timespec="seconds")
    micros = value.microsecond
    if micros:
        text += f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"
    return text + "Z"


_NULL_TIME = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)  # copied where it is set


def nullable_time(value: dt.datetime | None) -> struct_pb2.Value:
    """RFC 3339 (``...Z``) string, or JSON null for ``None``."""
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    return struct_pb2.Value(string_value=rfc3339(value))


def account(row: models.Account) -> account_pb2.Account:
    return account_pb2.Account(
        id=row.id,
        username=row.username,
        phone=row.phone,
        first_name=row.first_name,
        last_name=row.last_name,
        is_admin=row.is_admin,
        created_at=timestamp(row.created_at),
    )


def child(row: models.Child) -> account_pb2.Child:
    return account_pb2.Child(
        id=row.id,
        root_user_id=row.root_user_id,
        first_name=row.first_name,
        last_name=row.last_name,
        birthdate=row.birthdate.isoformat(),
        gender=row.gender,
        created_at=timestamp(row.created_at),
    )


def device_type(row: models.DeviceType) -> device_type_pb2.DeviceType:
    return device_type_pb2.DeviceType(
        id=row.id,
        name=row.name,
        code=row.code,
        description=row.description,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def device_batch(row: models.DeviceBatch) -> device_batch_pb2.DeviceBatch:
    """Expects ``row.device_type`` joined in the query."""
    return device_batch_pb2.DeviceBatch(
        id=row.id,
        device_type=row.device_type_id,
        device_type_name=row.device_type.name,
        batch_number=row.batch_number,
        production_date=row.production_date.isoformat(),
        quantity=row.quantity,
        description=row.description,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def device(row: models.Device) -> device_pb2.Device:
    """Expects ``row.device_type`` and ``row.batch`` joined in the query."""
    return device_pb2.Device(
        id=row.id,
        device_type=row.device_type_id,
        device_type_name=row.device_type.name,
        batch=row.batch_id,
        batch_number=row.batch.batch_number,
        serial_number=row.serial_number,
        device_code=row.device_code,
        mac_address=row.mac_address,
        is_active=row.is_active,
        activated_at=nullable_time(row.activated_at),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        unique_id=row.unique_id,
    )


def lux_device(bound: BoundDevice) -> binding_pb2.LuxDevice:
    row = bound.device
    return binding_pb2.LuxDevice(
        id=row.id,
        real_user_id=bound.child_id,
        project_id=row.device_type_id,
        hardware_id=row.device_type_id,
        now_firmware_id=row.now_firmware_id,
        unique_id=row.unique_id,
        serial_code=row.device_code,
        device_alias=row.device_alias,
        mac_id=row.mac_address,
        created_at=timestamp(row.created_at),
        last_log_file_id=row.last_log_file_id,
    )


def child_device_rows(
    rows: list[HomeRow], into: RepeatedCompositeFieldContainer[binding_pb2.ChildDeviceRow]
) -> None:
    """Home-screen rows, added to the repeated field ``into`` (built in place: a message
    built first would be copied in); the device fields stay at zero values without a
    device."""
    add = into.add
    for row in rows:
        if row.device_id is None:
            add(
                real_user_id=row.child_id,
                root_user_id=row.root_user_id,
                first_name=row.first_name,
                last_name=row.last_name,
                birthdate=row.birthdate.isoformat(),
                gender=row.gender,
                created_at=_NULL_TIME,
            )
            continue
        add(
            id=row.device_id,
            real_user_id=row.child_id,
            project_id=row.device_type_id,
            hardware_id=row.device_type_id,
            now_firmware_id=row.now_firmware_id,
            firmware_version=row.firmware_version,
            unique_id=row.unique_id,
            serial_code=row.device_code,
            device_alias=row.device_alias,
            mac_id=row.mac_address,
            created_at=nullable_time(row.created_at),
            last_log_file_id=row.last_log_file_id,
            root_user_id=row.root_user_id,
            first_name=row.first_name,
            last_name=row.last_name,
            birthdate=row.birthdate.isoformat(),
            gender=row.gender,
        )


def user_device(row: models.Binding) -> binding_pb2.UserDevice:
    """Expects ``row.device`` and its ``device_type`` joined in the query."""
    return binding_pb2.UserDevice(
        id=row.id,
        user=row.account_id,
        device=row.device_id,
        device_code=row.device.device_code,
        device_type=row.device.device_type.name,
        nickname=row.nickname,
        is_primary=row.is_primary,
        bound_at=timestamp(row.bound_at),
    )


def firmware_package(row: models.FirmwarePackage) -> firmware_pb2.FirmwarePackage:
    return firmware_pb2.FirmwarePackage(
        id=row.id,
        device_type=row.device_type_id,
        device_type_name=row.device_type.name,
        version=row.version,
        title=row.title,
        release_notes=row.release_notes,
        min_version=row.min_version,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        download_path=firmware.download_path(row.id),
        created_at=timestamp(row.created_at),
    )


def firmware_counts(counts: dict[str, int]) -> firmware_pb2.FirmwareUpdateCounts:
    return firmware_pb2.FirmwareUpdateCounts(**counts)


def firmware_rollout(view: rollouts.RolloutView) -> firmware_pb2.FirmwareRollout:
    row = view.rollout
    target = view.target
    return firmware_pb2.FirmwareRollout(
        id=row.id,
        package_id=row.package_id,
        version=view.version,
        state=row.state,
        target=firmware_pb2.FirmwareRolloutTarget(
            batch_ids=target["batch_ids"], device_ids=target["device_ids"]
        ),
        group_percents=view.group_percents,
        success_threshold_percent=row.success_threshold,
        error_threshold_percent=row.error_threshold,
        device_count=row.device_count,
        groups=[
            firmware_pb2.FirmwareRolloutGroup(
                index=group.group.position,
                percent=group.group.percent,
                state=group.group.state,
                device_count=group.group.device_count,
                counts=firmware_counts(group.counts),
                started_at=None
                if group.group.started_at is None
                else timestamp(group.group.started_at),
            )
            for group in view.groups
        ],
        counts=firmware_counts(view.counts),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def firmware_update(view: rollouts.UpdateView) -> firmware_pb2.FirmwareUpdate:
    row = view.update
    return firmware_pb2.FirmwareUpdate(
        id=row.id,
        rollout_id=row.rollout_id,
        device_id=row.device_id,
        package_id=view.package_id,
        version=view.version,
        group=row.group_position,
        state=row.state,
        reason=row.reason,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        history=[
            firmware_pb2.FirmwareUpdateEvent(
                state=event.state, reason=event.reason, time=timestamp(event.created_at)
            )
            for event in view.history
        ],
    )
