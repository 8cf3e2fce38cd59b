"""Database connection, connection pool and the bridge from asyncio to peewee.

peewee is synchronous, so every unit of database work runs on a bounded thread pool
(``run_db``). Each thread keeps one pooled connection, so requests queue for a thread
instead of blocking the event loop. On PostgreSQL a quarter of the pool's connections
are instead asynchronous ones that the event loop drives itself (``read_on_loop``): the
hottest read (the home screen) runs there without the hop to a thread and back, the
larger part of its server time after gRPC's own. Either way PostgreSQL never sees more
than ``DEVICEHUB_DB_POOL_SIZE`` connections from one process.

Every raw SQL statement of the project (they live in ``storage/``) is written once, with
``%s`` placeholders and ``%%`` for a literal ``%`` (psycopg2's convention), and run
through ``execute`` or ``execute_many``, which adapt it to the open database.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import itertools
import logging
import re
import select
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlparse

import peewee
import psycopg2
import psycopg2.extensions
from opentelemetry import trace
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from devicehub import metrics

log = logging.getLogger(__name__)

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
        db = _PostgresqlDatabase(
            unquote(parsed.path.lstrip("/")),
            connection_factory=_PreparingConnection,
            max_connections=pool_size,
            stale_timeout=600,
            timeout=30,
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname,
            port=parsed.port,
            # An unreachable server fails a call in seconds (503), not after minutes.
            connect_timeout=5,
        )
    else:
        raise SystemExit(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")
    database.initialize(db)
    return db


class _CallStatements(threading.local):
    """What the current database call (``run_db``) has sent on this thread's connection:
    whether every statement so far only read, which decides if a call that failed on a
    dead connection may run again."""

    def __init__(self) -> None:
        self.only_reads = True


_call = _CallStatements()
# Prepared statements that only read (recorded by execute_prepared from their SQL).
_reading_prepared: set[str] = set()


def _reads_only(sql: str) -> bool:
    words = sql.lstrip().split(None, 2)
    if not words:
        return True
    verb = words[0].upper()
    if verb == "EXECUTE" and len(words) > 1:
        return words[1].split("(", 1)[0] in _reading_prepared
    return verb in ("SELECT", "BEGIN", "SHOW")


class _PostgresqlDatabase(PooledPostgresqlDatabase):
    """The pooled PostgreSQL database, noting which statements each call sends."""

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if _call.only_reads and not _reads_only(sql):
            _call.only_reads = False
        return super().execute_sql(sql, params)


class _PreparingConnection(psycopg2.extensions.connection):
    """A PostgreSQL connection that remembers the statements it has prepared."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


def execute_prepared(name: str, sql: str, params: Sequence[object]) -> Any:
    """Runs ``sql`` (``%s`` placeholders, PostgreSQL only) as the prepared statement ``name``.

    The statement is prepared once per connection, then only executed: a hot query is
    planned once, not per call (planning the home-screen join took several times longer
    than running it). Give each parameter a type the statement fixes (a column it is
    compared with, or a cast). Returns the cursor.
    """
    connection = database.connection()
    if _reads_only(sql):
        _reading_prepared.add(name)
    if name not in connection.prepared:
        database.execute_sql(_prepare_statement(name, sql))
        connection.prepared.add(name)
    return database.execute_sql(_execute_statement(name, params), params)


def _prepare_statement(name: str, sql: str) -> str:
    numbers = itertools.count(1)
    # %s becomes $1, $2, ...; a literal %% stays (the PREPARE is formatted like any
    # statement, which turns it back into %).
    text = re.sub(r"%%|%s", lambda m: m[0] if m[0] == "%%" else f"${next(numbers)}", sql)
    return f"PREPARE {name} AS {text}"


def _execute_statement(name: str, params: Sequence[object]) -> str:
    return f"EXECUTE {name} ({', '.join('%s' for _ in params)})"


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


@functools.lru_cache(maxsize=256)
def _sqlite_text(sql: str) -> str:
    """``sql`` in SQLite's placeholders: ``%s`` becomes ``?``, ``%%`` a literal ``%``."""
    return re.sub(r"%%|%s", lambda m: "%" if m[0] == "%%" else "?", sql)


def _driver_text(sql: str, db: peewee.Database) -> str:
    """The one place a statement's placeholders are adapted: psycopg2 takes ``%s`` as
    written, SQLite wants ``?``."""
    return sql if isinstance(db, peewee.PostgresqlDatabase) else _sqlite_text(sql)


def execute(
    sql: str,
    params: Sequence[object] = (),
    *,
    prepare_as: str | None = None,
    db: peewee.Database | None = None,
) -> Any:
    """Runs one statement (``%s`` placeholders) on ``db``, by default the open database,
    and returns the cursor.

    ``prepare_as`` names the prepared statement a hot statement runs as on PostgreSQL
    (``execute_prepared``, on the open database); SQLite runs it as a plain statement.
    """
    engine = database.obj if db is None else db
    if prepare_as is not None and isinstance(engine, peewee.PostgresqlDatabase):
        return execute_prepared(prepare_as, sql, params)
    return engine.execute_sql(_driver_text(sql, engine), params)


def execute_many(sql: str, rows: Iterable[Sequence[object]]) -> None:
    """Runs one statement (``%s`` placeholders) once per row of ``rows``, in one driver
    call on the open database (SQLite's bulk path: one prepared ``executemany``).

    A violated constraint raises ``peewee.IntegrityError`` (the driver's error as its
    ``orig``), as every other statement does.
    """
    _call.only_reads = False  # the driver call bypasses execute_sql, which would note it
    try:
        database.cursor().executemany(_driver_text(sql, database.obj), rows)
    except (sqlite3.IntegrityError, psycopg2.IntegrityError) as error:
        raise peewee.IntegrityError(error, *error.args) from error


def named_rows(cursor: Any) -> list[dict[str, Any]]:
    """The rest of ``cursor``'s rows, each a mapping from column name (or alias) to value."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def notify_at_commit(channel: str, payload: str) -> None:
    """Sends ``payload`` on ``channel`` to every LISTENing server process (``listener.py``)
    when the caller's transaction commits, never for one rolled back. PostgreSQL only:
    with SQLite there is one database file, which the other processes poll instead."""
    if is_postgres():
        execute("SELECT pg_notify(%s, %s)", (channel, payload))


def notify_many_at_commit(channel: str, payloads: Sequence[str]) -> None:
    """``notify_at_commit`` for many payloads, in one statement."""
    if is_postgres() and payloads:
        execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (channel, list(payloads)))


def start_executor(pool_size: int) -> None:
    """Starts the thread pool that runs database work, one thread per pooled connection,
    and on PostgreSQL the event loop's connections (``read_on_loop``), a quarter of
    ``pool_size`` taken from the threads' share."""
    global _executor, _loop_reads
    on_loop = pool_size // 4 if is_postgres() else 0
    _executor = ThreadPoolExecutor(max_workers=pool_size - on_loop, thread_name_prefix="db")
    _loop_reads = _LoopReads(on_loop, database.obj) if on_loop else None
    metrics.DB_POOL_CONNECTIONS.set(pool_size)


def stop_executor() -> None:
    """Waits for running database work to finish, then closes all pooled connections."""
    global _executor, _loop_reads
    if _executor is not None:
        _executor.shutdown(wait=True)
        _executor = None
        metrics.DB_POOL_CONNECTIONS.set(0)
    if _loop_reads is not None:
        _loop_reads.close()
        _loop_reads = None
    if database.obj is not None:
        database.close_all()


def _in_connection(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs ``fn`` on this database thread's connection.

    Each thread checks a pooled connection out on first use and keeps it: checking it
    out and back in per call took a process-wide lock twice per call, a third of the
    home screen's server time. Transactions are always explicit (``atomic``), so a
    kept connection is never left inside one.

    A kept connection can die while it waits (the database restarted): one that the
    server has hung up is found before use and replaced, and a call that still fails
    because its connection broke runs once more on a fresh one if everything it had sent
    only read (a write is never repeated: it may have committed). Any other failure
    discards the connection, and the next call opens a fresh one.
    """
    if database.is_closed():
        database.connect()
    elif _server_hung_up():
        database.obj.manual_close()
        database.connect()
    _call.only_reads = True
    try:
        return fn(*args, **kwargs)
    except (peewee.InterfaceError, peewee.OperationalError):
        if database.in_transaction():
            raise
        retry = _call.only_reads and _connection_broken()
        database.obj.manual_close()
        if not retry:
            raise
    database.connect()
    return fn(*args, **kwargs)


def _server_hung_up() -> bool:
    """Whether this thread's idle PostgreSQL connection was closed by the server.

    An idle connection has nothing to read: a readable socket holds the server's
    goodbye (``terminating connection``) or end of file. One ``select`` with no wait.
    """
    if not is_postgres():
        return False
    connection = database.connection()
    if connection.closed:
        return True
    readable, _, _ = select.select([connection.fileno()], [], [], 0)
    return bool(readable)


def _connection_broken() -> bool:
    return is_postgres() and bool(database.connection().closed)


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs ``fn(*args, **kwargs)`` on the database thread pool with a pooled connection.

    The caller's context (contextvars) goes with it to the thread. With tracing on
    (``trace_work``) and inside a traced call (a recording span is current), the work gets
    a child span named after ``fn``; without tracing, or for background work outside any
    call (the polls, the readiness probe), no span is made.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(_in_connection, fn, *args, **kwargs)
    if _trace_work and trace.get_current_span().is_recording():
        call = functools.partial(_traced, _work_name(fn), call)
    context = contextvars.copy_context()
    if _executor is None:  # no server started the pool (commands, tests): loop threads
        return await loop.run_in_executor(None, context.run, _measured, call, False)
    # Waiting from here until a pool thread takes it (``_measured``), or until it is
    # cancelled before one did (``_never_ran``): the gauge counts calls queued for the pool.
    metrics.DB_CALLS_WAITING.inc()
    try:
        future = _executor.submit(context.run, _measured, call, True)
    except BaseException:  # the pool is shut down
        metrics.DB_CALLS_WAITING.dec()
        raise
    future.add_done_callback(_never_ran)
    return await asyncio.wrap_future(future, loop=loop)


async def read_on_loop(name: str, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    """The rows of ``sql``, one statement that only reads (``%s`` placeholders, typed as
    ``execute_prepared`` wants them), run as the prepared statement ``name``: on the event
    loop when one of its connections is free, else on the pool (``run_db``, SQLite
    always), which then also answers any failure of the database, as for every call.
    """
    reads = _loop_reads
    if reads is not None:
        rows = await reads.fetch(name, sql, params)
        if rows is not None:
            return rows
    return await run_db(_fetch_all, name, sql, params)


def _fetch_all(name: str, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = execute(sql, params, prepare_as=name).fetchall()
    return rows


# An unreachable server fails the opening of a loop connection within seconds, as it does
# a pooled one (libpq leaves timeouts of an asynchronous connect to the caller); the
# keepalives notice a silently dead peer under a read.
_LOOP_CONNECT_TIMEOUT = 5.0
_LOOP_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# After an opening failed, the reads stay on the pool this long before the next attempt.
_LOOP_REOPEN_DELAY = 1.0


class _LoopReads:
    """PostgreSQL connections in psycopg2's asynchronous mode, driven by the event loop.

    The loop never waits on the database: the sockets are non-blocking and the loop's
    readers and writers resume a read when its answer has arrived, so a slow database
    makes the calls that use it wait, never the loop. A connection is opened on a thread
    (looking up the host's address blocks) and only then polled on the loop. A read takes
    a free connection or gets None (none free, none open yet, the database failing), and
    its caller runs it on the pool instead: the pool, not this, handles a database that
    is down or restarting. A read that fails on its connection also gets None (it only
    reads, so it may run again); one cancelled under way leaves its connection closed,
    since the statement is still running on it. Connections are in autocommit mode, so
    a read is never left inside a transaction.
    """

    def __init__(self, size: int, db: peewee.Database) -> None:
        self._size = size
        self._connect = functools.partial(
            psycopg2.connect, database=db.database, async_=True, **db.connect_params
        )
        self._free: list[Any] = []
        self._open = 0  # connections open or being opened
        self._reopen_at = 0.0
        self._opening: set[asyncio.Task[None]] = set()
        self._closed = False

    async def fetch(
        self, name: str, sql: str, params: Sequence[object]
    ) -> list[tuple[Any, ...]] | None:
        if not self._free:
            self._open_one()
            return None
        connection = self._free.pop()
        metrics.DB_CONNECTIONS_IN_USE.inc()
        try:
            if _trace_work and trace.get_current_span().is_recording():
                with _tracer.start_as_current_span(
                    name, kind=trace.SpanKind.CLIENT, attributes={"db.system": "postgresql"}
                ):
                    rows = await _read(connection, name, sql, params)
            else:
                rows = await _read(connection, name, sql, params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            metrics.DB_ERRORS.labels(type(error).__name__).inc()
            self._discard(connection)
            return None
        except BaseException:
            self._discard(connection)
            raise
        finally:
            metrics.DB_CONNECTIONS_IN_USE.dec()
        if self._closed:
            connection.close()
        else:
            self._free.append(connection)
        return rows

    def _open_one(self) -> None:
        loop = asyncio.get_running_loop()
        if self._closed or self._open >= self._size or loop.time() < self._reopen_at:
            return
        self._open += 1
        task = loop.create_task(self._opened(), name="loop-read-connection")
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _opened(self) -> None:
        loop = asyncio.get_running_loop()
        connection = None
        try:
            connection = await asyncio.to_thread(self._connect, **_LOOP_KEEPALIVES)
            async with asyncio.timeout(_LOOP_CONNECT_TIMEOUT):
                await _polled(connection)
        except (psycopg2.Error, OSError, TimeoutError) as error:
            log.debug("no event-loop database connection (%s); reads use the pool", error)
            if connection is not None:
                connection.close()
            self._open -= 1
            self._reopen_at = loop.time() + _LOOP_REOPEN_DELAY
            return
        if self._closed:
            connection.close()
        else:
            self._free.append(connection)

    def _discard(self, connection: Any) -> None:
        with contextlib.suppress(psycopg2.Error):
            connection.close()
        self._open -= 1

    def close(self) -> None:
        """Closes the free connections; one in use closes when its read ends."""
        self._closed = True
        for connection in self._free:
            with contextlib.suppress(psycopg2.Error):
                connection.close()
        self._free.clear()


_loop_reads: _LoopReads | None = None


async def _read(
    connection: Any, name: str, sql: str, params: Sequence[object]
) -> list[tuple[Any, ...]]:
    cursor = connection.cursor()
    if name not in connection.prepared:
        if not _reads_only(sql):
            raise ValueError(f"{name}: only a read runs on the event loop")
        cursor.execute(_prepare_statement(name, sql))
        await _polled(connection)
        connection.prepared.add(name)
    cursor.execute(_execute_statement(name, params), params)
    await _polled(connection)
    rows: list[tuple[Any, ...]] = cursor.fetchall()
    return rows


async def _polled(connection: Any) -> None:
    """Polls the asynchronous ``connection`` until its operation is done, waiting on
    the loop for its socket in between."""
    loop = asyncio.get_running_loop()
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        fd = connection.fileno()
        ready: asyncio.Future[None] = loop.create_future()

        def wake(ready: asyncio.Future[None] = ready) -> None:
            if not ready.done():  # the socket may be ready again before the read resumes
                ready.set_result(None)

        if state == psycopg2.extensions.POLL_READ:
            loop.add_reader(fd, wake)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
        else:  # POLL_WRITE
            loop.add_writer(fd, wake)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


# What ``run_db`` catches to count a failed call (a driver error not wrapped by peewee,
# e.g. from ``execute_many``, counts too).
_DATABASE_ERRORS = (peewee.DatabaseError, peewee.InterfaceError, psycopg2.Error, sqlite3.Error)


def _measured(call: Callable[[], T], queued: bool) -> T:
    """Runs ``call`` on a pool thread, counted as in use; a database error is counted."""
    if queued:
        metrics.DB_CALLS_WAITING.dec()
    metrics.DB_CONNECTIONS_IN_USE.inc()
    try:
        return call()
    except _DATABASE_ERRORS as error:
        metrics.DB_ERRORS.labels(type(error).__name__).inc()
        raise
    finally:
        metrics.DB_CONNECTIONS_IN_USE.dec()


def _never_ran(future: Future[Any]) -> None:
    # Only a call that never started can be cancelled: it left the queue here.
    if future.cancelled():
        metrics.DB_CALLS_WAITING.dec()


_tracer = trace.get_tracer(__name__)
# Off: run_db does not even look for a current span (half a microsecond per call).
_trace_work = False


def trace_work(enabled: bool) -> None:
    """Whether database work inside traced calls gets spans (``runtime/tracing.py``)."""
    global _trace_work
    _trace_work = enabled


def _traced(name: str, call: Callable[[], T]) -> T:
    """Runs ``call`` (on a database thread) inside a client span ``name``."""
    system = "postgresql" if is_postgres() else "sqlite"
    with _tracer.start_as_current_span(
        name, kind=trace.SpanKind.CLIENT, attributes={"db.system": system}
    ):
        return call()


def _work_name(fn: Callable[..., Any]) -> str:
    """``accounts.get_account``: the module (without the package) and name of ``fn``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module.removeprefix('devicehub.')}.{name}" if module else name


def array_literal(values: Iterable[int | dt.datetime | None]) -> str:
    """A PostgreSQL array literal (``{1,2,NULL}``) of integers or naive datetimes.

    Bulk statements pass one array per column; psycopg2 adapts a Python list element by
    element (about 1 µs each: 1.4 ms for a 1,000-sample movement upload), while the text
    forms of these types never need quoting, so one ``join`` builds the same array.
    Cast the parameter in SQL (``%s::integer[]``).
    """
    return "{" + ",".join("NULL" if v is None else _array_text(v) for v in values) + "}"


def _array_text(value: int | dt.datetime) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            raise ValueError("array_literal takes naive (UTC) datetimes")
        return value.isoformat()
    return str(int(value))
