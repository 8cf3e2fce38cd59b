"""The home-screen read (storage/home_screen.py) on both databases, and on PostgreSQL its
run on the event loop's own connections (storage/db.py read_on_loop): the rows are the
same as on the pool, the thread pool is not used once a loop connection is open, and a
loop connection the server has dropped costs no call. No server: the database only."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator

import peewee
import pytest

from devicehub.storage import db as storage_db
from devicehub.storage.home_screen import HomeRow, home_screen
from devicehub.storage.migrate import apply_migrations
from devicehub.storage.models import Account, Binding, Child, Device, DeviceBatch, DeviceType

from stack_settings import backend_database

# A quarter of the pool runs on the loop: one connection.
POOL_SIZE = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[peewee.Database]:
    db = storage_db.open_database(
        backend_database(request, request.param, tmp_path), pool_size=POOL_SIZE
    )
    apply_migrations(db)
    storage_db.start_executor(POOL_SIZE)
    yield db
    storage_db.stop_executor()


@pytest.fixture
def pool_calls(monkeypatch) -> list[str]:
    """The names of the functions read_on_loop hands to the thread pool."""
    calls: list[str] = []
    run_db = storage_db.run_db

    async def counted(fn, *args, **kwargs):
        calls.append(fn.__name__)
        return await run_db(fn, *args, **kwargs)

    monkeypatch.setattr(storage_db, "run_db", counted)
    return calls


def _family() -> tuple[Account, Child, Child, Device]:
    """An account with two children: the first with a device, the second without."""
    parent = Account.create(username=f"parent-{uuid.uuid4().hex[:8]}", password_hash="x")
    first = Child.create(
        root_user=parent,
        first_name="Ann",
        last_name="Lee",
        birthdate=dt.date(2015, 1, 2),
        gender="F",
    )
    second = Child.create(
        root_user=parent,
        first_name="Bo",
        last_name="Lee",
        birthdate=dt.date(2017, 3, 4),
        gender="M",
    )
    lux = DeviceType.create(name="Lux", code=f"L{uuid.uuid4().hex[:6]}")
    batch = DeviceBatch.create(
        device_type=lux, batch_number="B1", production_date=dt.date(2025, 1, 1)
    )
    device = Device.create(
        device_type=lux,
        batch=batch,
        serial_number="0001",
        device_code=lux.code + "0001",
        mac_address="AA:00:00:00:00:01",
        unique_id=str(uuid.uuid4()),
        firmware_version="1.2.3",
        created_at=dt.datetime(2025, 1, 2, 3, 4, 5, 678000),
    )
    Binding.create(device=device, account=parent, child=first)
    return parent, first, second, device


def _expected(parent: Account, first: Child, second: Child, device: Device) -> list[HomeRow]:
    nothing = (None,) * 10
    return [
        HomeRow(
            parent.id,
            first.id,
            "Ann",
            "Lee",
            dt.date(2015, 1, 2),
            "F",
            device.id,
            device.device_type_id,
            device.now_firmware_id,
            "1.2.3",
            device.unique_id,
            device.device_code,
            device.device_alias,
            device.mac_address,
            dt.datetime(2025, 1, 2, 3, 4, 5, 678000),
            device.last_log_file_id,
        ),
        HomeRow(parent.id, second.id, "Bo", "Lee", dt.date(2017, 3, 4), "M", *nothing),
    ]


async def _read_on_the_loop(account_id: int, pool_calls: list[str]) -> list[HomeRow] | None:
    """The account's rows, read once a loop connection has opened (the first read opens
    one in the background and meanwhile runs on the pool)."""
    for _ in range(500):
        before = len(pool_calls)
        rows = await home_screen(account_id)
        if len(pool_calls) == before:
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError("no read ran on the event loop")


def test_the_rows_tell_children_devices_and_missing_accounts(database, pool_calls):
    family = _family()
    childless = Account.create(username="childless", password_hash="x")

    async def reads():
        return (
            await home_screen(family[0].id),
            await home_screen(childless.id),
            await home_screen(childless.id + 1000),
        )

    assert asyncio.run(reads()) == (_expected(*family), [], None)


def test_sqlite_reads_on_the_pool(database, pool_calls):
    if storage_db.is_postgres():
        pytest.skip("SQLite only")
    family = _family()
    assert asyncio.run(home_screen(family[0].id)) == _expected(*family)
    assert pool_calls == ["_fetch_all"]


def test_postgresql_reads_on_the_loop_as_on_the_pool(database, pool_calls):
    if not storage_db.is_postgres():
        pytest.skip("PostgreSQL only")
    family = _family()

    async def reads():
        on_pool = await home_screen(family[0].id)  # opens the loop connection meanwhile
        assert pool_calls == ["_fetch_all"]
        return on_pool, await _read_on_the_loop(family[0].id, pool_calls)

    on_pool, on_loop = asyncio.run(reads())
    assert on_pool == on_loop == _expected(*family)


def test_a_loop_connection_the_server_dropped_costs_no_call(database, pool_calls):
    if not storage_db.is_postgres():
        pytest.skip("PostgreSQL only")
    family = _family()

    async def reads():
        await _read_on_the_loop(family[0].id, pool_calls)
        # Every other connection of this database (the loop's; the pool's thread is
        # busy here, so it survives): what a database restart does to it.
        await storage_db.run_db(
            storage_db.execute,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        before = len(pool_calls)
        after_the_drop = await home_screen(family[0].id)
        assert pool_calls[before:] == ["_fetch_all"]  # ran again, on the pool
        return after_the_drop, await _read_on_the_loop(family[0].id, pool_calls)

    after_the_drop, on_a_new_loop_connection = asyncio.run(reads())
    assert after_the_drop == on_a_new_loop_connection == _expected(*family)
