"""Cloud-to-device messages: validation, durable storage, subscriptions, acknowledgement.

A message is committed to the ``message`` table (state ``queued``, an expiry) before
``send_message`` returns, then fanned out live by the broker. A subscription registers
with the broker FIRST, then reads the account's pending backlog from the database, so a
message committed in between is seen by one path or the other; ids already emitted are
skipped, so each message reaches a subscription once. Expired messages are never emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import peewee
from peewee import fn

from devicehub import binding, metrics, validation
from devicehub.broker import CHANNEL, CLOSED, RESYNC, REVOKED, MessageBroker, notify_payload
from devicehub.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from devicehub.integrations.weather import CityNotFound, WeatherClient, WeatherUnavailable
from devicehub.security import INVALID_TOKEN_MESSAGE, Caller
from devicehub.storage.db import database, notify_at_commit, run_db
from devicehub.storage.models import Account, Binding, Message, utcnow
from devicehub.v1 import error_pb2 as reasons

log = logging.getLogger(__name__)

PENDING_STATES = ("queued", "delivered")
MAX_FIELD_LENGTH = 2000
REPLAY_RETRY_DELAY = 1.0  # seconds between a stream's attempts to read its backlog
# Fields each message type takes, and the ones it requires.
FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("content",),
    "weather": ("city",),
    "sing": ("song", "artist"),
    "dance": ("dance", "style", "duration"),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "text": ("content",),
    "weather": ("city",),
    "sing": ("song",),
    "dance": ("dance",),
}
SENT_MESSAGES = {
    "text": "消息已发送",
    "weather": "天气信息已发送",
    "sing": "唱歌指令已发送",
    "dance": "跳舞指令已发送",
}


@dataclass(frozen=True)
class MessagePolicy:
    """The configurable limits of the message queues."""

    ttl: dt.timedelta
    queue_limit: int
    heartbeat: float


def as_dict(row: Message) -> dict[str, Any]:
    """The broker's (and NOTIFY's) representation of a stored message."""
    return event(
        row.id, row.account_id, row.type, json.loads(row.payload), row.created_at, row.expires_at
    )


def event(
    message_id: int,
    account_id: int,
    message_type: str,
    payload: dict[str, Any],
    created_at: dt.datetime,
    expires_at: dt.datetime,
) -> dict[str, Any]:
    """A stored message as the broker (and NOTIFY) carries it."""
    return {
        "id": message_id,
        "account_id": account_id,
        "type": message_type,
        "payload": payload,
        "created_at": created_at.isoformat(),
        "expires_at": expires_at.isoformat(),
    }


def validate_payload(message_type: str, payload: dict[str, str]) -> dict[str, str]:
    """The payload fields of ``message_type``, trimmed; InvalidArgument if malformed."""
    if message_type not in FIELDS:
        # Echoes at most a few characters: the message travels in a gRPC trailer, and a
        # long one (a 1 MB type) overflowed the edge's header limit (a 502).
        raise InvalidArgument(f"type must be one of {', '.join(FIELDS)}; got {message_type[:32]!r}")
    allowed = FIELDS[message_type]
    unexpected = sorted(set(payload) - set(allowed))
    if unexpected:
        raise InvalidArgument(
            f"message for type {message_type} takes only {', '.join(allowed)}; "
            f"unexpected {', '.join(unexpected)}"
        )
    cleaned = {key: value.strip() for key, value in payload.items()}
    for key in REQUIRED[message_type]:
        if not cleaned.get(key):
            raise InvalidArgument(f"message.{key} is required for type {message_type}")
    for key, value in cleaned.items():
        if len(value) > MAX_FIELD_LENGTH:
            raise InvalidArgument(f"message.{key} must be at most {MAX_FIELD_LENGTH} characters")
    return cleaned


def _recipient(caller: Caller, user_id: str) -> int:
    user_id = user_id.strip()
    if not user_id:
        return caller.account_id
    account_id = validation.ascii_number("user_id", user_id)
    if account_id != caller.account_id and not caller.is_admin:
        raise PermissionDenied("Only admins may send messages to another account")
    return account_id


def _store(
    sender: Caller,
    account_id: int,
    message_type: str,
    payload: dict[str, str],
    policy: MessagePolicy,
) -> dict[str, Any]:
    with database.atomic():
        binding.lock_account(account_id)  # serialises the queue-bound check per account
        if not Account.select().where(Account.id == account_id).exists():
            raise NotFound("Account not found", reasons.ERROR_REASON_ACCOUNT_NOT_FOUND)
        if not Binding.select().where(Binding.account == account_id).exists():
            raise Conflict(
                "The account has no bound device to send to", reasons.ERROR_REASON_NO_BOUND_DEVICE
            )
        now = utcnow()
        pending = (
            Message.select()
            .where(
                (Message.account == account_id)
                & Message.state.in_(PENDING_STATES)
                & (Message.expires_at > now)
            )
            .count()
        )
        if pending >= policy.queue_limit:
            metrics.MESSAGE_QUEUE_REFUSALS.inc()
            raise ResourceExhausted(
                f"Message queue is full ({policy.queue_limit} pending messages)",
                reasons.ERROR_REASON_QUEUE_FULL,
            )
        row = Message.create(
            account=account_id,
            sender=sender.account_id,
            type=message_type,
            payload=json.dumps(payload, ensure_ascii=False),
            created_at=now,
            expires_at=now + policy.ttl,
        )
        message = as_dict(row)
        notify_at_commit(CHANNEL, notify_payload(message))
        return message


async def send_message(
    caller: Caller,
    message_type: str,
    payload: dict[str, str],
    user_id: str,
    *,
    weather: WeatherClient,
    policy: MessagePolicy,
) -> dict[str, Any]:
    """Validates, (for ``weather``) looks the city up and stores a message."""
    payload = validate_payload(message_type, payload)
    account_id = _recipient(caller, user_id)
    if message_type == "weather":
        try:
            report = await weather.current(payload["city"])
        except CityNotFound:
            raise NotFound(
                f"Unknown city: {payload['city']}", reasons.ERROR_REASON_CITY_NOT_FOUND
            ) from None
        except WeatherUnavailable as error:
            raise Unavailable(
                f"Weather provider unavailable: {error}", reasons.ERROR_REASON_WEATHER_UNAVAILABLE
            ) from None
        payload = {
            "city": report.city,
            "weather": report.weather,
            "temperature": report.temperature,
            "humidity": report.humidity,
            "wind": report.wind,
        }
    # Subscribers get it from the broker (NOTIFY at commit, or the SQLite poll).
    message = await run_db(_store, caller, account_id, message_type, payload, policy)
    metrics.MESSAGES.labels("queued").inc()  # committed
    return message


def _pending_after(account_id: int, after_id: int) -> list[dict[str, Any]]:
    rows = (
        Message.select()
        .where(
            (Message.account == account_id)
            & (Message.id > after_id)
            & Message.state.in_(PENDING_STATES)
            & (Message.expires_at > utcnow())
        )
        .order_by(Message.id)
    )
    return [as_dict(row) for row in rows]


def _mark_delivered(ids: list[int]) -> None:
    # Counts the messages this UPDATE moved (committed: no transaction is open); one emitted
    # by several processes or streams moves once.
    delivered = (
        Message.update(state="delivered", delivered_at=utcnow())
        .where(Message.id.in_(ids) & (Message.state == "queued"))
        .execute()
    )
    metrics.MESSAGES.labels("delivered").inc(delivered)


class DeliveryRecorder:
    """Records that messages were emitted, in one UPDATE per interval for the process.

    Streams only note ids here and go on emitting: no stream waits for the database, and
    a message fanned out to many streams is marked once, not once per stream.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self._interval = interval
        self._pending: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def record(self, ids: list[int]) -> None:
        self._pending.update(ids)

    async def flush(self) -> None:
        if self._pending:
            ids, self._pending = sorted(self._pending), set()
            try:
                await run_db(_mark_delivered, ids)
            except Exception:
                self._pending.update(ids)  # recorded at the next flush instead
                raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("recording deliveries failed; retrying")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


def messages_after(after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Pending messages stored after ``after_id``, in id order (for polling brokers)."""
    rows = (
        Message.select()
        .where((Message.id > after_id) & Message.state.in_(PENDING_STATES))
        .order_by(Message.id)
        .limit(limit)
    )
    return [as_dict(row) for row in rows]


def newest_message_id() -> int:
    return Message.select(fn.MAX(Message.id)).scalar() or 0


def fetch_message(message_id: int) -> dict[str, Any] | None:
    row = Message.get_or_none(Message.id == message_id)
    return as_dict(row) if row is not None else None


@dataclass(frozen=True)
class HeartbeatEvent:
    time: dt.datetime


def subscriber_account(caller: Caller, user_id: int) -> int:
    """Whose messages a subscription reads: the caller's, or (admins) anyone's."""
    if user_id in (0, caller.account_id):
        return caller.account_id
    if not caller.is_admin:
        raise PermissionDenied("A subscription may only read the caller's own messages")
    return user_id


class _RecentIds:
    """The ids a subscription emitted lately: enough to skip the overlap between its
    database replay and its live queue, bounded for streams that live for months.

    An account has at most ``queue_limit`` pending messages, so remembering a few times
    that many covers every emitted message a replay can read again, at a few kB per
    stream (thousands of streams are held per process)."""

    def __init__(self, capacity: int) -> None:
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def add(self, message_id: int) -> None:
        self._ids[message_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


async def subscribe(
    account_id: int,
    after_id: int,
    *,
    broker: MessageBroker,
    policy: MessagePolicy,
    deliveries: DeliveryRecorder,
    caller: Caller | None = None,
) -> AsyncIterator[dict[str, Any] | HeartbeatEvent]:
    """The account's pending messages after ``after_id``, then live ones and heartbeats.

    A replay (at the start, and after the broker signals RESYNC) reads every pending
    message after ``after_id`` (at most the queue bound) and skips the ones already
    emitted, so a message committed out of id order is not missed. When ``caller``'s
    token is revoked (or the account deleted) the stream raises Unauthenticated.
    """
    subscription = broker.subscribe(
        account_id,
        caller_id=None if caller is None else caller.account_id,
        token_version=0 if caller is None else caller.token_version,
    )
    emitted = _RecentIds(capacity=max(4 * policy.queue_limit, 256))
    try:
        replay = True
        while True:
            if replay:
                replay = False
                try:
                    pending = await run_db(_pending_after, account_id, after_id)
                except (peewee.OperationalError, peewee.InterfaceError):
                    # The database is restarting: the stream stays open (heartbeats go
                    # on) and reads its backlog again shortly, so nothing sent meanwhile
                    # is missed and no device has to reconnect.
                    log.warning("stream replay failed (database unavailable); retrying")
                    await asyncio.sleep(REPLAY_RETRY_DELAY)
                    replay = True
                    continue
                backlog = [m for m in pending if m["id"] not in emitted]
                # Recorded before each yield: a stream closed by the client ends at a yield.
                # (Delivered-but-unacked messages are replayed, so nothing is lost.)
                for message in backlog:
                    emitted.add(message["id"])
                    deliveries.record([message["id"]])
                    yield message
                continue
            try:
                item = await asyncio.wait_for(subscription.queue.get(), policy.heartbeat)
            except TimeoutError:
                yield HeartbeatEvent(utcnow())
                continue
            if item is CLOSED:
                return
            if item is REVOKED:
                raise Unauthenticated(INVALID_TOKEN_MESSAGE)
            if item is RESYNC:
                replay = True
                continue
            if item["id"] in emitted or item["id"] <= after_id:
                continue
            if dt.datetime.fromisoformat(item["expires_at"]) <= utcnow():
                continue
            emitted.add(item["id"])
            deliveries.record([item["id"]])
            yield item
    finally:
        broker.unsubscribe(subscription)


def ack_messages(caller: Caller, ids: list[int]) -> int:
    """Marks the caller's pending messages acknowledged; returns how many changed."""
    if not ids:
        raise InvalidArgument("ids must name at least one message")
    acked = (
        Message.update(state="acked", acked_at=utcnow())
        .where(
            (Message.account == caller.account_id)
            & Message.id.in_(ids)
            & Message.state.in_(PENDING_STATES)
        )
        .execute()
    )
    metrics.MESSAGES.labels("acked").inc(acked)
    return acked


def expire_messages() -> int:
    """Marks pending messages past their expiry as expired; returns how many."""
    expired = (
        Message.update(state="expired")
        .where(Message.state.in_(PENDING_STATES) & (Message.expires_at <= utcnow()))
        .execute()
    )
    metrics.MESSAGES.labels("expired").inc(expired)
    return expired
