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


def test_every_model_describes_its_migrated_table(database_url):
    """The peewee models (storage/models.py) and the tables the migrations leave behind
    agree column for column, the firmware tables of 0007 included."""
    import peewee

    from devicehub.storage import models

    database = db.open_database(database_url, pool_size=1)
    try:
        apply_migrations(database)
        with database.connection_context():
            tables = set(database.get_tables())
            assert {
                "firmware_package",
                "firmware_chunk",
                "firmware_rollout",
                "firmware_rollout_group",
                "firmware_update",
                "firmware_update_event",
            } <= tables
            described = [
                model
                for model in vars(models).values()
                if isinstance(model, type)
                and issubclass(model, models.BaseModel)
                and model is not models.BaseModel
            ]
            assert len(described) >= 15
            for model in described:
                table = model._meta.table_name
                assert table in tables, table
                columns = {column.name for column in database.get_columns(table)}
                fields = {
                    field.column_name
                    for field in model._meta.sorted_fields
                    if not isinstance(field, peewee.CompositeKey)
                }
                assert fields == columns, table
    finally:
        database.close_all()
