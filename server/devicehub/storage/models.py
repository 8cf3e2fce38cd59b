"""Storage: peewee models. Times are naive UTC datetimes.

The schema itself is created and changed only by the scripts in ``migrations/``; these
classes must describe the schema those scripts leave behind.
"""

from __future__ import annotations

import datetime as dt

import peewee

from devicehub.storage.db import database


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    id = peewee.AutoField()

    class Meta:
        database = database
        legacy_table_names = False


class Account(BaseModel):
    """A root account: someone who logs in (a parent, an operator, an admin)."""

    username = peewee.CharField(max_length=150, unique=True)
    password_hash = peewee.CharField(max_length=255)
    phone = peewee.CharField(max_length=32, default="")
    first_name = peewee.CharField(max_length=50, default="")
    last_name = peewee.CharField(max_length=50, default="")
    is_admin = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    # Every token carries it (claim ``ver``); bumping it revokes every token issued before.
    token_version = peewee.IntegerField(default=0)


class AccountRevocation(BaseModel):
    """A bump of an account's token version (``None``: the account was deleted), read by
    the other server processes to drop what they cached and close the account's streams."""

    account_id = peewee.IntegerField()  # no foreign key: outlives a deleted account
    token_version = peewee.IntegerField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)


class Child(BaseModel):
    """A child account (the Lux API's real user), owned by one root account."""

    root_user = peewee.ForeignKeyField(Account, backref="children", on_delete="CASCADE")
    root_user_id: int  # the raw foreign key column, set by peewee
    first_name = peewee.CharField(max_length=50)
    last_name = peewee.CharField(max_length=50)
    birthdate = peewee.DateField()
    gender = peewee.CharField(max_length=20)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


class DeviceType(BaseModel):
    name = peewee.CharField(max_length=100)
    code = peewee.CharField(max_length=16, unique=True)
    description = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


class DeviceBatch(BaseModel):
    device_type = peewee.ForeignKeyField(DeviceType, backref="batches", on_delete="RESTRICT")
    device_type_id: int
    batch_number = peewee.CharField(max_length=32, unique=True)
    production_date = peewee.DateField()
    quantity = peewee.IntegerField(default=0)
    description = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


class Device(BaseModel):
    """One physical device of the registry."""

    device_type = peewee.ForeignKeyField(DeviceType, backref="devices", on_delete="RESTRICT")
    batch = peewee.ForeignKeyField(DeviceBatch, backref="devices", on_delete="RESTRICT")
    device_type_id: int
    batch_id: int
    serial_number = peewee.CharField(max_length=32)
    device_code = peewee.CharField(max_length=48, unique=True)
    mac_address = peewee.CharField(max_length=17, unique=True)
    unique_id = peewee.CharField(max_length=36, unique=True)
    device_alias = peewee.CharField(max_length=100, default="")
    now_firmware_id = peewee.IntegerField(default=0)
    firmware_version = peewee.CharField(max_length=32, default="")
    is_active = peewee.BooleanField(default=False)
    activated_at = peewee.DateTimeField(null=True)
    last_log_file_id = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("device_type", "serial_number"), True),)


class Binding(BaseModel):
    """A device bound to an account, and optionally to one of its children (Lux)."""

    device = peewee.ForeignKeyField(Device, backref="binding", unique=True, on_delete="CASCADE")
    account = peewee.ForeignKeyField(Account, backref="bindings", on_delete="CASCADE")
    child = peewee.ForeignKeyField(Child, backref="bindings", null=True, on_delete="CASCADE")
    nickname = peewee.CharField(max_length=100, default="")
    is_primary = peewee.BooleanField(default=False)
    bound_at = peewee.DateTimeField(default=utcnow)
    device_id: int
    account_id: int
    child_id: int | None


class Devlog(BaseModel):
    """One usage session; ``is_temp`` marks the child's session in progress."""

    device = peewee.ForeignKeyField(Device, backref="devlogs", on_delete="RESTRICT")
    child = peewee.ForeignKeyField(Child, backref="devlogs", on_delete="CASCADE")
    log_file_id = peewee.IntegerField(null=True)
    treatment_date = peewee.DateTimeField()
    finish_flag = peewee.SmallIntegerField(null=True)
    last_intensity = peewee.IntegerField()
    treatment_time = peewee.IntegerField()
    movement = peewee.IntegerField(null=True)
    log_data = peewee.TextField(null=True)
    is_temp = peewee.BooleanField()
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    device_id: int
    child_id: int


class AlimtalkAttempt(BaseModel):
    """Every request to notify an account, and what came of it."""

    account = peewee.ForeignKeyField(Account, backref="alimtalk_attempts", on_delete="CASCADE")
    phone = peewee.CharField(max_length=32, default="")
    outcome = peewee.CharField(max_length=16)
    provider_request_id = peewee.CharField(max_length=100, default="")
    provider_response = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    finished_at = peewee.DateTimeField(null=True)
    account_id: int


class Message(BaseModel):
    """A cloud-to-device message for one account's devices."""

    account = peewee.ForeignKeyField(Account, backref="messages", on_delete="CASCADE")
    sender = peewee.ForeignKeyField(Account, null=True, on_delete="SET NULL")
    type = peewee.CharField(max_length=16)
    payload = peewee.TextField()  # JSON object of the MessagePayload fields
    state = peewee.CharField(max_length=16, default="queued")
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    delivered_at = peewee.DateTimeField(null=True)
    acked_at = peewee.DateTimeField(null=True)
    account_id: int


class DeviceCredential(BaseModel):
    """That a device secret was issued, and which generation (rtc_grants.py derives the
    secret itself from the server key; only its SHA-256 is stored)."""

    device = peewee.ForeignKeyField(
        Device, primary_key=True, backref="credential", on_delete="CASCADE"
    )
    generation = peewee.IntegerField()
    secret_sha256 = peewee.CharField(max_length=64)
    issued_at = peewee.DateTimeField(default=utcnow)
    issued_by = peewee.ForeignKeyField(Account, null=True, on_delete="SET NULL")
    device_id: int
    issued_by_id: int | None


class FirmwarePackage(BaseModel):
    """A firmware binary of one device type; its bytes are in ``FirmwareChunk`` rows."""

    device_type = peewee.ForeignKeyField(DeviceType, on_delete="RESTRICT")
    device_type_id: int
    version = peewee.CharField(max_length=64)
    title = peewee.CharField(max_length=200)
    release_notes = peewee.TextField(default="")
    min_version = peewee.CharField(max_length=64, default="")
    size_bytes = peewee.IntegerField()
    sha256 = peewee.CharField(max_length=64)
    chunk_size = peewee.IntegerField()
    created_at = peewee.DateTimeField(default=utcnow)
    created_by = peewee.ForeignKeyField(Account, null=True, on_delete="SET NULL")

    class Meta:
        indexes = ((("device_type", "version"), True),)


class FirmwareChunk(BaseModel):
    """Bytes ``seq * chunk_size`` onwards of a package (every chunk but the last is full)."""

    package = peewee.ForeignKeyField(FirmwarePackage, on_delete="CASCADE")
    package_id: int
    seq = peewee.IntegerField()
    data = peewee.BlobField()

    class Meta:
        primary_key = peewee.CompositeKey("package", "seq")


class FirmwareRollout(BaseModel):
    """A staged rollout of one package; ``target`` and ``group_percents`` are JSON."""

    package = peewee.ForeignKeyField(FirmwarePackage, on_delete="RESTRICT")
    package_id: int
    state = peewee.CharField(max_length=24)
    target = peewee.TextField()
    group_percents = peewee.TextField()
    success_threshold = peewee.IntegerField()
    error_threshold = peewee.IntegerField()
    device_count = peewee.IntegerField()
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    created_by = peewee.ForeignKeyField(Account, null=True, on_delete="SET NULL")


class FirmwareRolloutGroup(BaseModel):
    rollout = peewee.ForeignKeyField(FirmwareRollout, on_delete="CASCADE")
    rollout_id: int
    position = peewee.IntegerField()
    percent = peewee.IntegerField()
    device_count = peewee.IntegerField()
    state = peewee.CharField(max_length=16)
    started_at = peewee.DateTimeField(null=True)
    # What the thresholds are judged by, kept current by the reports that end an update
    # (O(1) each) and recounted from the updates by the scheduler's turns.
    skipped_count = peewee.IntegerField(default=0)
    canceled_count = peewee.IntegerField(default=0)
    updated_count = peewee.IntegerField(default=0)
    failed_count = peewee.IntegerField(default=0)


class FirmwareUpdate(BaseModel):
    """One device in one rollout, and how far it got."""

    rollout = peewee.ForeignKeyField(FirmwareRollout, on_delete="CASCADE")
    rollout_id: int
    device = peewee.ForeignKeyField(Device, on_delete="CASCADE")
    device_id: int
    group_position = peewee.IntegerField()
    state = peewee.CharField(max_length=16)
    reason = peewee.CharField(max_length=500, default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    notified_at = peewee.DateTimeField(null=True)


class FirmwareUpdateEvent(BaseModel):
    """A state an update entered, and when: the device's update history."""

    # Not ``update``: that name is the model's UPDATE query.
    firmware_update = peewee.ForeignKeyField(
        FirmwareUpdate, column_name="update_id", on_delete="CASCADE"
    )
    update_id: int  # the raw foreign key column
    state = peewee.CharField(max_length=16)
    reason = peewee.CharField(max_length=500, default="")
    created_at = peewee.DateTimeField(default=utcnow)
