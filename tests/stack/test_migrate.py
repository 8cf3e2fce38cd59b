"""Migrations: the same scripts on SQLite and PostgreSQL; applying twice is a no-op."""

from __future__ import annotations

import subprocess

import pytest

import devicehub.storage.db as db
from devicehub.storage.migrate import MIGRATIONS_DIR, apply_migrations
from devicehub.testing.stack import DEVICEHUB, unique

TABLES = {"account", "child", "device_type", "device_batch", "device", "schema_migration"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    return request.getfixturevalue("pg_cluster").create_database(unique("mig").lower())


def test_cli_applies_once_then_is_a_no_op(database_url, tmp_path):
    env = {
        "DEVICEHUB_DATABASE_URL": database_url,
        "DEVICEHUB_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    first = subprocess.run(
        [DEVICEHUB, "migrate"], env=env, capture_output=True, text=True, check=True
    )
    names = sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert first.stdout.strip() == f"applied: {', '.join(names)}"
    second = subprocess.run(
        [DEVICEHUB, "migrate"], env=env, capture_output=True, text=True, check=True
    )
    assert second.stdout.strip() == "database is up to date"


def test_schema_has_every_table_and_constraint(database_url):
    database = db.open_database(database_url, pool_size=1)
    try:
        apply_migrations(database)
        assert apply_migrations(database) == []
        with database.connection_context():
            assert set(database.get_tables()) >= TABLES
            unique_columns = {
                tuple(index.columns) for index in database.get_indexes("device") if index.unique
            }
            assert {
                ("device_code",),
                ("mac_address",),
                ("unique_id",),
                ("device_type_id", "serial_number"),
            } <= (unique_columns)
            foreign = {(fk.column, fk.dest_table) for fk in database.get_foreign_keys("device")}
            assert foreign == {("device_type_id", "device_type"), ("batch_id", "device_batch")}
    finally:
        database.close_all()
