"""Storage errors: what a failed write broke, in the schema's own names, free of transport.

A unique violation is recognised by the name of the constraint or unique index it broke,
never by the wording of the driver's message, so a domain module can map names it knows
(``catalog._TAKEN_BY_CONSTRAINT``) to its documented messages.

The names are PostgreSQL's, on both databases: a unique index created by name
(``CREATE UNIQUE INDEX device_device_type_id_serial_number ...``) has that name on both;
a column's unnamed ``UNIQUE`` is named by PostgreSQL ``<table>_<columns>_key`` (e.g.
``device_mac_address_key``) and a primary key ``<table>_pkey``.

- PostgreSQL reports the name itself (psycopg2's ``diag.constraint_name``).
- SQLite reports no name, only the table and columns (``UNIQUE constraint failed:
  device.mac_address``). The name is looked up in the schema instead (``PRAGMA
  index_list`` / ``index_info``, read once per table and database file; migrations run
  before a server serves): an index created by name keeps it; the automatic index of an
  unnamed ``UNIQUE`` gets PostgreSQL's generated name. Two unique indexes of one table
  over the same columns cannot be told apart there and give no name, nor would a named
  table constraint (``CONSTRAINT x UNIQUE``), whose name SQLite drops: name a unique
  rule with ``CREATE UNIQUE INDEX``. Generated names longer than PostgreSQL's 63-byte
  identifier limit (which it shortens) are not reproduced; none of the schema's come near.
"""

from __future__ import annotations

import functools
import sqlite3

import psycopg2.errors

from devicehub.storage.db import database

_SQLITE_UNIQUE = "SQLITE_CONSTRAINT_UNIQUE"
_SQLITE_PRIMARY_KEY = "SQLITE_CONSTRAINT_PRIMARYKEY"
_SQLITE_REPORT = "constraint failed: "


class StorageError(Exception):
    """Base class of the failures storage reports in its own terms."""


class UniqueViolation(StorageError):
    """A write collided with an existing value of the unique rule named ``constraint``."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


def unique_violation(error: Exception) -> UniqueViolation | None:
    """The unique violation ``error`` (peewee's ``IntegrityError`` or the driver's own)
    reports, or None for any other error (a foreign key, NOT NULL or CHECK violation) and
    for a unique rule whose name cannot be known."""
    cause = getattr(error, "orig", None) or error  # peewee keeps the driver's error there
    if isinstance(cause, psycopg2.errors.UniqueViolation):
        name = cause.diag.constraint_name
    elif isinstance(cause, sqlite3.IntegrityError):
        name = _sqlite_constraint(cause)
    else:
        name = None
    return UniqueViolation(name) if name else None


def _sqlite_constraint(error: sqlite3.IntegrityError) -> str | None:
    """The name of the unique rule SQLite reports broken by table and columns
    (``device.device_type_id, device.serial_number``) or, for an index over expressions,
    by name (``index 'name'``)."""
    kind = error.sqlite_errorname
    if kind not in (_SQLITE_UNIQUE, _SQLITE_PRIMARY_KEY):
        return None
    target = str(error).partition(_SQLITE_REPORT)[2]
    if target.startswith("index '") and target.endswith("'"):
        return target.removeprefix("index '").removesuffix("'")
    qualified = [part.strip().partition(".") for part in target.split(",")]
    tables = {table for table, _, _ in qualified}
    columns = tuple(column for _, _, column in qualified)
    if len(tables) != 1 or not all(columns):
        return None
    table = tables.pop()
    if kind == _SQLITE_PRIMARY_KEY:
        return f"{table}_pkey"
    return _sqlite_unique_indexes(str(database.database), table).get(columns)


@functools.cache
def _sqlite_unique_indexes(database_file: str, table: str) -> dict[tuple[str, ...], str | None]:
    """Columns -> name of each unique index of ``table`` other than its primary key; None
    where two share the same columns."""
    names: dict[tuple[str, ...], str | None] = {}
    for _, index, unique, origin, _ in database.execute_sql(
        f"PRAGMA index_list({_quoted(table)})"
    ).fetchall():
        if not unique or origin == "pk":
            continue
        info = database.execute_sql(f"PRAGMA index_info({_quoted(index)})").fetchall()
        columns = tuple(column for _, _, column in info)
        name = f"{table}_{'_'.join(columns)}_key" if origin == "u" else index
        names[columns] = None if columns in names else name
    return names


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
