"""Unique violations are named by constraint, the same on SQLite and PostgreSQL
(storage/errors.py), on the schema the migrations build. No server: the database only."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator

import peewee
import pytest

from devicehub import catalog
from devicehub.storage import errors as storage_errors
from devicehub.storage.db import open_database
from devicehub.storage.migrate import apply_migrations
from devicehub.storage.models import Account, Device, DeviceBatch, DeviceType

from stack_settings import backend_database

PG_UNIQUE_INDEXES = """
SELECT t.relname, i.relname FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE x.indisunique AND NOT x.indisprimary AND n.nspname = current_schema()
"""


def _migrated(url: str) -> peewee.Database:
    db = open_database(url, pool_size=1)
    apply_migrations(db)
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Iterator[peewee.Database]:
    database = _migrated(backend_database(request, request.param, tmp_path))
    yield database
    database.close_all()


def _violation(db: peewee.Database, write: Callable[[], object]) -> str | None:
    """The constraint ``write`` breaks, read inside the failed transaction as catalog does."""
    with db.atomic() as transaction:
        try:
            write()
        except peewee.IntegrityError as error:
            violation = storage_errors.unique_violation(error)
            transaction.rollback()
            return None if violation is None else violation.constraint
    raise AssertionError("the write succeeded")


def _device(device_type, batch, serial: str, mac: str, unique_id: str = "") -> Device:
    return Device.create(
        device_type=device_type,
        batch=batch,
        serial_number=serial,
        device_code=device_type.code + serial,
        mac_address=mac,
        unique_id=unique_id or str(uuid.uuid4()),
    )


def _throttle_hit(db: peewee.Database) -> None:
    db.execute_sql(
        "INSERT INTO throttle_window (scope, subject, window_ends, hits)"
        f" VALUES ({db.param}, {db.param}, 1, 1)",
        ("scope", "subject"),
    )


def test_each_unique_rule_is_named_by_its_constraint(db):
    today = dt.date(2025, 1, 1)
    lux = DeviceType.create(name="Lux", code="LUX")
    other = DeviceType.create(name="Other", code="LU")
    batch = DeviceBatch.create(device_type=lux, batch_number="B1", production_date=today)
    device = _device(lux, batch, "0001", "AA:00:00:00:00:01")
    Account.create(username="someone", password_hash="x")

    writes: dict[str, Callable[[], object]] = {
        "device_type_code_key": lambda: DeviceType.create(name="Again", code="LUX"),
        "device_batch_batch_number_key": lambda: DeviceBatch.create(
            device_type=lux, batch_number="B1", production_date=today
        ),
        "device_mac_address_key": lambda: _device(lux, batch, "0002", device.mac_address),
        "device_unique_id_key": lambda: _device(
            lux, batch, "0003", "AA:00:00:00:00:03", device.unique_id
        ),
        # "LU" + "X0001" is "LUX" + "0001": the same code from another type and serial.
        "device_device_code_key": lambda: _device(other, batch, "X0001", "AA:00:00:00:00:04"),
        "device_device_type_id_serial_number": lambda: Device.create(
            device_type=lux,
            batch=batch,
            serial_number="0001",
            device_code="unrelated",
            mac_address="AA:00:00:00:00:05",
            unique_id=str(uuid.uuid4()),
        ),
        "account_username_key": lambda: Account.create(username="someone", password_hash="x"),
        "throttle_window_pkey": lambda: [_throttle_hit(db) for _ in range(2)],
    }
    named = {constraint: _violation(db, write) for constraint, write in writes.items()}
    assert named == {constraint: constraint for constraint in writes}


def test_other_integrity_errors_are_no_unique_violation(db):
    lux = DeviceType.create(name="Lux", code="LUX")
    today = dt.date(2025, 1, 1)
    writes: dict[str, Callable[[], object]] = {
        "foreign key": lambda: DeviceBatch.create(
            device_type=10_000, batch_number="B2", production_date=today
        ),
        "check": lambda: DeviceBatch.create(
            device_type=lux, batch_number="B3", production_date=today, quantity=-1
        ),
        "not null": lambda: DeviceType.create(name=None, code="NULL"),
    }
    assert {rule: _violation(db, write) for rule, write in writes.items()} == dict.fromkeys(writes)


def test_sqlite_names_every_unique_rule_as_postgresql_does(request, tmp_path):
    """The names SQLite's schema lookup gives are the ones PostgreSQL created, for every
    unique rule of the schema; every name catalog maps is one of them."""
    sqlite = _migrated(backend_database(request, "sqlite", tmp_path))
    tables = [
        row[0] for row in sqlite.execute_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    from_sqlite = {
        (table, name)
        for table in tables
        for name in storage_errors._sqlite_unique_indexes(sqlite.database, table).values()
    }
    sqlite.close_all()
    postgres = _migrated(backend_database(request, "postgresql", tmp_path))
    from_postgres = set(postgres.execute_sql(PG_UNIQUE_INDEXES).fetchall())
    postgres.close_all()

    assert from_sqlite == from_postgres
    assert set(catalog._TAKEN_BY_CONSTRAINT) <= {name for _, name in from_postgres}
