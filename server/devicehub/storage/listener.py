"""One PostgreSQL LISTEN connection per server process, for every notification channel.

Senders run ``pg_notify`` inside their transaction (delivered at commit, never for a
rolled-back change); each server process keeps one dedicated connection that LISTENs on
every registered channel and hands each payload to the channel's handler on the event
loop. Two things use it: live message fan-out (``broker.py``) and token revocations
(``revocations.py``).

Rules:

- Notifications sent while no connection listens are lost, so after every reconnect each
  handler's ``connected(reconnect=True)`` re-reads from the database what it may have
  missed; it runs after LISTEN, so nothing committed from then on is missed either.
- A lost connection is replaced: quickly at first, backing off while the database stays
  unreachable, quickly again after a connection that was healthy for a while. Keepalives
  notice a silently dead peer; the connect timeout bounds each attempt.
- Watchers (``watch_state``) hear every change of state (the server's health follows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import psycopg2
import psycopg2.extensions

from devicehub import metrics

log = logging.getLogger(__name__)

RECONNECT_MIN_DELAY = 0.2
RECONNECT_MAX_DELAY = 2.0
HEALTHY_PERIOD = 10.0  # seconds connected after which a loss is not a failing database
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
START_TIMEOUT = 30.0


class ChannelHandler(Protocol):
    def notified(self, payload: str) -> None:
        """A notification on the channel (on the event loop)."""

    async def connected(self, reconnect: bool) -> None:
        """The connection LISTENs (again); after a reconnect, catch up on what was missed."""

    def disconnected(self) -> None:
        """The connection was lost: notifications may be missed until ``connected``."""


class NotificationListener:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._handlers: dict[str, ChannelHandler] = {}
        self._state_watchers: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._connected_at: float | None = None
        self.listening = asyncio.Event()

    def add_channel(self, channel: str, handler: ChannelHandler) -> None:
        if self._task is not None:
            raise RuntimeError("channels are added before the listener starts")
        if not channel.isidentifier():
            raise ValueError(f"not a channel name: {channel!r}")
        self._handlers[channel] = handler

    def watch_state(self, watcher: Callable[[bool], None]) -> None:
        """``watcher(listening)`` is called on the event loop whenever the connection
        starts or stops listening."""
        self._state_watchers.append(watcher)

    async def start(self) -> None:
        """Returns once the first connection LISTENs and every handler caught up."""
        self._task = asyncio.create_task(self._listen_forever(), name="notification-listener")
        await asyncio.wait_for(self.listening.wait(), START_TIMEOUT)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen_forever(self) -> None:
        delay = RECONNECT_MIN_DELAY
        reconnect = False
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._listen(reconnect)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("notification listener lost its connection (%s); reconnecting", error)
            healthy = (
                self._connected_at is not None
                and loop.time() - self._connected_at >= HEALTHY_PERIOD
            )
            for handler in self._handlers.values():
                handler.disconnected()
            self._set_listening(False)
            reconnect = True
            if healthy:
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
        for watcher in self._state_watchers:
            watcher(listening)

    async def _listen(self, reconnect: bool) -> None:
        loop = asyncio.get_running_loop()
        connection = await asyncio.to_thread(psycopg2.connect, self._dsn, **CONNECTION_OPTIONS)
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
                notify = connection.notifies.pop(0)
                handler = self._handlers.get(notify.channel)
                if handler is not None:
                    handler.notified(notify.payload)

        try:
            await asyncio.to_thread(_listen_on, connection, list(self._handlers))
            fd = connection.fileno()
            loop.add_reader(fd, readable)
            self._connected_at = loop.time()
            for handler in self._handlers.values():
                await handler.connected(reconnect)
            if reconnect:
                metrics.LISTENER_RECONNECTS.inc()
            self._set_listening(True)
            await broken
        finally:
            if fd is not None:
                loop.remove_reader(fd)
            with contextlib.suppress(Exception):
                connection.close()


def _listen_on(connection: Any, channels: list[str]) -> None:
    with connection.cursor() as cursor:
        for channel in channels:
            cursor.execute(f"LISTEN {channel}")
