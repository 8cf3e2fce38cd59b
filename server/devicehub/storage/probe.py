"""The readiness probe's query: can this process's pooled connections reach the database?

Run through ``run_db`` like any call, so it uses (and, when the database restarted,
replaces) a pooled connection exactly as a request would. PostgreSQL answers ``SELECT 1``
from the server; SQLite reads the schema from the database file, so a file that became
unreadable fails the probe too.
"""

from __future__ import annotations

from devicehub.storage.db import execute, is_postgres


def check_database() -> None:
    """Raises (``peewee.OperationalError``/``InterfaceError``) unless the database answers."""
    if is_postgres():
        execute("SELECT 1").fetchone()
    else:
        execute("SELECT count(*) FROM sqlite_master").fetchone()
