"""Database connection, connection pool and the bridge from asyncio to peewee.

peewee is synchronous, so every unit of database work runs on a bounded thread pool
(``run_db``). The pool has as many threads as the database has pooled connections and
each thread keeps one, so requests queue for a thread instead of blocking the event
loop, and PostgreSQL never sees more than ``DEVICEHUB_DB_POOL_SIZE`` connections from
one process.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

database = peewee.DatabaseProxy()

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None


def open_database(url: str, pool_size: int = 8) -> peewee.Database:
    """Creates the pooled database for ``url`` and binds the models to it.

    ``sqlite:///path/to/file`` (the embedded default) or
    ``postgresql://user:password@host:port/dbname``.
    """
    parsed = urlparse(url)
    db: peewee.Database
    if parsed.scheme == "sqlite":
        path = Path(unquote(parsed.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        db = PooledSqliteDatabase(
            str(path),
            max_connections=pool_size,
            stale_timeout=600,
            timeout=30,
            # Writers take the write lock when the transaction begins, so two writers
            # queue on busy_timeout instead of deadlocking on a lock upgrade.
            lock_type="IMMEDIATE",
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": 10000,
                "synchronous": "normal",
            },
            check_same_thread=False,
        )
    elif parsed.scheme in ("postgres", "postgresql"):
        db = PooledPostgresqlDatabase(
            unquote(parsed.path.lstrip("/")),
            max_connections=pool_size,
            stale_timeout=600,
            timeout=30,
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname,
            port=parsed.port,
        )
    else:
        raise SystemExit(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")
    database.initialize(db)
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def start_executor(pool_size: int) -> None:
    """Starts the thread pool that runs database work; one thread per pooled connection."""
    global _executor
    _executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="db")


def stop_executor() -> None:
    """Waits for running database work to finish, then closes all pooled connections."""
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=True)
        _executor = None
    if database.obj is not None:
        database.close_all()


def _in_connection(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs ``fn`` on this database thread's connection.

    Each thread checks a pooled connection out on first use and keeps it: checking it
    out and back in per call took a process-wide lock twice per call, a third of the
    home screen's server time. Transactions are always explicit (``atomic``), so a
    kept connection is never left inside one. A connection that failed is discarded,
    and the next call opens a fresh one.
    """
    if database.is_closed():
        database.connect()
    try:
        return fn(*args, **kwargs)
    except (peewee.InterfaceError, peewee.OperationalError):
        if not database.in_transaction():
            database.obj.manual_close()
        raise


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs ``fn(*args, **kwargs)`` on the database thread pool with a pooled connection."""
    loop = asyncio.get_running_loop()
    call = functools.partial(_in_connection, fn, *args, **kwargs)
    context = contextvars.copy_context()
    return await loop.run_in_executor(_executor, context.run, call)
