"""Schema migrations: the numbered scripts in ``migrations/``, applied in order, once each.

A migration is a Python file ``NNNN_name.py`` with ``upgrade(db)``. Each one runs in its
own transaction (or, with ``IN_STEPS = True``, in transactions of its own that it can
resume) and is recorded in ``schema_migration``; applying again is a no-op. On
PostgreSQL an advisory lock serialises concurrent migrators (several server processes
starting at once).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import peewee

from devicehub.resources import MIGRATIONS_DIR
from devicehub.storage.db import execute
from devicehub.storage.models import utcnow

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.py$")
_ADVISORY_LOCK_KEY = 0x6465766963  # "devic"

# Column types that differ between the two databases; everything else in the
# migrations is plain SQL both accept.
_DIALECT = {
    "sqlite": {
        "PK": "INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT",
        "BIGPK": "INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT",
        "BLOB": "BLOB",
    },
    "postgresql": {"PK": "SERIAL PRIMARY KEY", "BIGPK": "BIGSERIAL PRIMARY KEY", "BLOB": "BYTEA"},
}


def _dialect(db: peewee.Database) -> str:
    return "postgresql" if isinstance(db, peewee.PostgresqlDatabase) else "sqlite"


def run_script(db: peewee.Database, script: str) -> None:
    """Executes ``;``-separated SQL statements, filling in ``{PK}``-style dialect types."""
    for statement in script.format(**_DIALECT[_dialect(db)]).split(";"):
        if statement.strip():
            db.execute_sql(statement)


def _pending(directory: Path) -> list[Path]:
    scripts = sorted(p for p in directory.glob("*.py") if _NAME.match(p.name))
    numbers = [p.name[:4] for p in scripts]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number in {directory}")
    return scripts


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"devicehub_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_migrations(db: peewee.Database, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Applies every migration not yet recorded; returns the names applied now."""
    applied_now: list[str] = []
    with db.connection_context():
        db.execute_sql(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            " name VARCHAR(255) NOT NULL PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
        )
        for path in _pending(directory):
            name = path.stem
            module = _load(path)
            if getattr(module, "IN_STEPS", False):
                applied = _apply_in_steps(db, name, module)
            else:
                applied = _apply_in_one_transaction(db, name, module)
            if applied:
                log.info("applied migration %s", name)
                applied_now.append(name)
    return applied_now


def _done(db: peewee.Database, name: str) -> bool:
    found = execute("SELECT 1 FROM schema_migration WHERE name = %s", (name,), db=db)
    return found.fetchone() is not None


def _record(db: peewee.Database, name: str) -> None:
    execute(
        "INSERT INTO schema_migration (name, applied_at) VALUES (%s, %s)",
        (name, utcnow()),
        db=db,
    )


def _apply_in_one_transaction(db: peewee.Database, name: str, module) -> bool:
    with db.atomic():
        if _dialect(db) == "postgresql":
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        if _done(db, name):
            return False
        module.upgrade(db)
        _record(db, name)
    return True


def _apply_in_steps(db: peewee.Database, name: str, module) -> bool:
    """A migration with ``IN_STEPS = True`` commits as it goes (``upgrade`` opens its own
    transactions), so that converting a large table neither holds one transaction for
    hours nor starts over when interrupted: it must resume from what it finds. On
    PostgreSQL the session's advisory lock serialises migrators meanwhile."""
    postgres = _dialect(db) == "postgresql"
    if postgres:
        db.execute_sql("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
    try:
        if _done(db, name):
            return False
        module.upgrade(db)
        with db.atomic():
            _record(db, name)
        return True
    finally:
        if postgres:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
