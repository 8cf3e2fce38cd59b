"""Live fan-out of committed messages to the subscriptions of this process.

On SQLite every server process polls the table for messages stored after the last it
saw (SQLite commits one writer at a time, so ids commit in order and live messages reach
every subscriber in id order). On PostgreSQL the sender's transaction runs ``pg_notify``
(delivered at commit, never for a rolled-back message) and every server process LISTENs
on one dedicated connection. Either way each process dispatches to its own subscribers,
the sender's process included.

Nothing is lost when fan-out falls behind or breaks: a subscription whose queue overflows,
and every subscription when the LISTEN connection drops, receives ``RESYNC`` and re-reads
its backlog from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions

log = logging.getLogger(__name__)

CHANNEL = "devicehub_message"
# Longest NOTIFY payload PostgreSQL accepts is 8000 bytes; larger messages are announced
# by id and read from the database by each listener.
MAX_NOTIFY_BYTES = 7900
MAX_QUEUED_PER_SUBSCRIPTION = 1000
POLL_INTERVAL = 0.05  # seconds between polls of the message table (SQLite)
# Reconnecting the LISTEN connection: quickly at first, backing off while the database
# stays unreachable, and quickly again after a connection that was healthy this long.
RECONNECT_MIN_DELAY = 0.2
RECONNECT_MAX_DELAY = 2.0
HEALTHY_PERIOD = 10.0
# A LISTEN connection only reads, so a silently dead peer (no FIN, e.g. a host that went
# away) is noticed by TCP keepalives; the connect timeout bounds each reconnect attempt.
LISTEN_CONNECTION_OPTIONS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class _Resync:
    def __repr__(self) -> str:
        return "RESYNC"


RESYNC = _Resync()


class _Closed:
    def __repr__(self) -> str:
        return "CLOSED"


# Offered to every subscription when the server shuts down: streams end normally.
CLOSED = _Closed()


@dataclass(eq=False)
class Subscription:
    account_id: int
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def offer(self, item: Any) -> None:
        if item is not CLOSED and self.queue.qsize() >= MAX_QUEUED_PER_SUBSCRIPTION:
            # A slow reader: drop what is queued and let it re-read from the database.
            while not self.queue.empty():
                self.queue.get_nowait()
            item = RESYNC
        self.queue.put_nowait(item)


def _start_listening(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {CHANNEL}")


def notify_payload(message: dict[str, Any]) -> str:
    """The NOTIFY payload for a stored message (JSON; by reference when too large)."""
    full = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    if len(full.encode()) <= MAX_NOTIFY_BYTES:
        return full
    return json.dumps({"id": message["id"], "account_id": message["account_id"], "ref": True})


class MessageBroker:
    """Routes messages to live subscriptions by account id."""

    def __init__(
        self,
        postgres_dsn: str | None = None,
        fetch: Callable[[int], Any] | None = None,
        poll: Callable[[int], Any] | None = None,
        newest_id: Callable[[], Any] | None = None,
        on_listening_changed: Callable[[bool], None] | None = None,
    ) -> None:
        self._subscriptions: dict[int, set[Subscription]] = defaultdict(set)
        if (postgres_dsn is None) == (poll is None) or (poll is None) != (newest_id is None):
            raise ValueError("a broker either LISTENs (PostgreSQL) or polls (SQLite)")
        self._postgres_dsn = postgres_dsn
        self._fetch = fetch  # async: message id -> message dict (for by-reference notifies)
        self._poll = poll  # async: id -> pending messages stored after it, in id order
        self._newest_id = newest_id  # async: the id polling starts after
        self._listener: asyncio.Task[None] | None = None
        self._fetching: set[asyncio.Future[None]] = set()
        self._closed = False
        # Called with False when the LISTEN connection is lost and True when it is back:
        # while it is down no live message reaches this process (health says so).
        self._on_listening_changed = on_listening_changed
        self._connected_at: float | None = None
        self.listening = asyncio.Event()

    def subscribe(self, account_id: int) -> Subscription:
        subscription = Subscription(account_id)
        if self._closed:
            subscription.offer(CLOSED)
        self._subscriptions[account_id].add(subscription)
        return subscription

    def close_subscriptions(self) -> None:
        """Ends every live subscription (and any started later): the server is stopping."""
        self._closed = True
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.offer(CLOSED)

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscriptions.get(subscription.account_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[subscription.account_id]

    def dispatch(self, message: dict[str, Any]) -> None:
        """Offers a committed message to the subscriptions of its account."""
        for subscription in self._subscriptions.get(message["account_id"], ()):
            subscription.offer(message)

    def resync_all(self) -> None:
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.offer(RESYNC)

    async def start(self) -> None:
        if self._postgres_dsn is not None:
            self._listener = asyncio.create_task(self._listen_forever(), name="message-listener")
            await asyncio.wait_for(self.listening.wait(), 30)
        elif self._poll is not None and self._newest_id is not None:  # SQLite
            last_id = await self._newest_id()
            poll = self._poll
            self._listener = asyncio.create_task(
                self._poll_forever(poll, last_id), name="message-poll"
            )

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _poll_forever(self, poll: Callable[[int], Any], last_id: int) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                messages = await poll(last_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("polling for messages failed; retrying")
                continue
            for message in messages:
                self.dispatch(message)
                last_id = message["id"]

    async def _listen_forever(self) -> None:
        delay = RECONNECT_MIN_DELAY
        first = True
        while True:
            try:
                await self._listen(resync=not first)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("message listener lost its connection (%s); reconnecting", error)
            connected_at = self._connected_at
            first = False
            self._set_listening(False)
            # A connection that stayed up for a while was healthy: reconnect quickly again.
            # Only a connection that keeps failing backs off (a database that is down).
            loop = asyncio.get_running_loop()
            if connected_at is not None and loop.time() - connected_at >= HEALTHY_PERIOD:
                delay = RECONNECT_MIN_DELAY
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    def _set_listening(self, listening: bool) -> None:
        if listening == self.listening.is_set():
            return
        if listening:
            self.listening.set()
        else:
            self._connected_at = None
            self.listening.clear()
        if self._on_listening_changed is not None:
            self._on_listening_changed(listening)

    async def _listen(self, resync: bool) -> None:
        loop = asyncio.get_running_loop()
        assert self._postgres_dsn is not None
        connection = await asyncio.to_thread(
            psycopg2.connect, self._postgres_dsn, **LISTEN_CONNECTION_OPTIONS
        )
        connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        broken: asyncio.Future[None] = loop.create_future()
        # The socket's number, taken while the connection is healthy: once it has failed,
        # ``fileno()`` raises, and a reader left registered on the number would be handed
        # the next connection's socket, which then is never watched.
        fd: int | None = None

        def readable() -> None:
            try:
                connection.poll()
            except Exception as error:  # connection lost
                if not broken.done():
                    broken.set_exception(error)
                return
            while connection.notifies:
                self._on_notify(connection.notifies.pop(0).payload)

        try:
            await asyncio.to_thread(_start_listening, connection)
            fd = connection.fileno()
            loop.add_reader(fd, readable)
            self._connected_at = loop.time()
            self._set_listening(True)
            if resync:  # messages may have been sent while we were not listening
                self.resync_all()
            await broken
        finally:
            if fd is not None:
                loop.remove_reader(fd)
            with contextlib.suppress(Exception):
                connection.close()

    def _on_notify(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("ignoring malformed notification %r", payload[:200])
            return
        if message.get("ref") and self._fetch is not None:
            task = asyncio.ensure_future(self._dispatch_fetched(message["id"]))
            self._fetching.add(task)
            task.add_done_callback(self._fetching.discard)
        else:
            self.dispatch(message)

    async def _dispatch_fetched(self, message_id: int) -> None:
        assert self._fetch is not None
        message = await self._fetch(message_id)
        if message is not None:
            self.dispatch(message)
