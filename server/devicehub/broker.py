"""Live fan-out of committed messages to the subscriptions of this process.

On SQLite every server process polls the table for messages stored after the last it
saw (SQLite commits one writer at a time, so ids commit in order and live messages reach
every subscriber in id order). On PostgreSQL the sender's transaction runs ``pg_notify``
on ``CHANNEL`` (delivered at commit, never for a rolled-back message) and the process's
``NotificationListener`` (listener.py) hands each notification to the broker. Either way
each process dispatches to its own subscribers, the sender's process included.

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

log = logging.getLogger(__name__)

CHANNEL = "devicehub_message"
# Longest NOTIFY payload PostgreSQL accepts is 8000 bytes; larger messages are announced
# by id and read from the database by each listener.
MAX_NOTIFY_BYTES = 7900
MAX_QUEUED_PER_SUBSCRIPTION = 1000
POLL_INTERVAL = 0.05  # seconds between polls of the message table (SQLite)


class _Resync:
    def __repr__(self) -> str:
        return "RESYNC"


RESYNC = _Resync()


class _Closed:
    def __repr__(self) -> str:
        return "CLOSED"


# Offered to every subscription when the server shuts down: streams end normally.
CLOSED = _Closed()


class _Revoked:
    def __repr__(self) -> str:
        return "REVOKED"


# Offered to the subscriptions opened with a revoked token (close_account): the stream
# ends as unauthenticated.
REVOKED = _Revoked()


@dataclass(eq=False)
class Subscription:
    account_id: int
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    # Whose token opened it (an admin may read another account's messages), and that
    # token's version: close_account ends it when the token is revoked.
    caller_id: int | None = None
    token_version: int = 0

    def offer(self, item: Any) -> None:
        if (
            item is not CLOSED
            and item is not REVOKED
            and self.queue.qsize() >= MAX_QUEUED_PER_SUBSCRIPTION
        ):
            # A slow reader: drop what is queued and let it re-read from the database.
            while not self.queue.empty():
                self.queue.get_nowait()
            item = RESYNC
        self.queue.put_nowait(item)


def notify_payload(message: dict[str, Any]) -> str:
    """The NOTIFY payload for a stored message (JSON; by reference when too large)."""
    full = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    if len(full.encode()) <= MAX_NOTIFY_BYTES:
        return full
    return json.dumps({"id": message["id"], "account_id": message["account_id"], "ref": True})


class MessageBroker:
    """Routes messages to live subscriptions by account id.

    Polls the message table when given ``poll`` and ``newest_id`` (SQLite); otherwise it
    is the ``CHANNEL`` handler of the process's notification listener (PostgreSQL).
    """

    def __init__(
        self,
        fetch: Callable[[int], Any] | None = None,
        poll: Callable[[int], Any] | None = None,
        newest_id: Callable[[], Any] | None = None,
    ) -> None:
        self._subscriptions: dict[int, set[Subscription]] = defaultdict(set)
        if (poll is None) != (newest_id is None):
            raise ValueError("a polling broker needs both poll and newest_id")
        self._fetch = fetch  # async: message id -> message dict (for by-reference notifies)
        self._poll = poll  # async: id -> pending messages stored after it, in id order
        self._newest_id = newest_id  # async: the id polling starts after
        self._poller: asyncio.Task[None] | None = None
        self._fetching: set[asyncio.Future[None]] = set()
        self._closed = False

    def subscribe(
        self, account_id: int, caller_id: int | None = None, token_version: int = 0
    ) -> Subscription:
        subscription = Subscription(account_id, caller_id=caller_id, token_version=token_version)
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

    def close_account(self, account_id: int, token_version: int | None) -> None:
        """Ends the subscriptions opened with the account's tokens older than
        ``token_version`` (revoked); ``None``: the account was deleted, so every
        subscription opened by it or reading its messages ends."""
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                revoked = subscription.caller_id == account_id and (
                    token_version is None or subscription.token_version < token_version
                )
                if revoked or (token_version is None and subscription.account_id == account_id):
                    subscription.offer(REVOKED)

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
        if self._poll is not None and self._newest_id is not None:  # SQLite
            last_id = await self._newest_id()
            poll = self._poll
            self._poller = asyncio.create_task(
                self._poll_forever(poll, last_id), name="message-poll"
            )

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

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

    # The notification listener's handler interface (listener.ChannelHandler).

    async def connected(self, reconnect: bool) -> None:
        if reconnect:  # messages may have been sent while nothing listened
            self.resync_all()

    def disconnected(self) -> None:
        pass  # every subscription re-reads its backlog once the listener is back

    def notified(self, payload: str) -> None:
        self._on_notify(payload)

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
