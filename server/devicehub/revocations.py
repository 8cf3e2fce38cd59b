"""Token revocation: which tokens stopped being valid, known to every server process.

Rules. Every token carries its account's ``token_version`` (claim ``ver``; none: 0).
Deleting an account, changing its password and changing its admin flag bump the version
(deletion removes it) in the same transaction that records an ``account_revocation`` row
(``record``) and, on PostgreSQL, sends ``pg_notify`` on ``REVOCATION_CHANNEL`` (delivered
at commit). Every server process holds the revocations of the last token lifetime in
``TokenVersions``: a token is current unless its account was revoked to a newer version,
so every authenticated call costs a dict lookup, no query. The process that made a
revocation applies it at once, every other one when the notification arrives (its
``NotificationListener``, listener.py) or its poll of ``account_revocation`` sees it
(SQLite, every ``REVOCATION_POLL_INTERVAL`` seconds); each also closes the account's open
message streams. While a process cannot hear revocations (LISTEN connection lost, poll
failing) it reads the account's version per call; after reconnecting it replays the
revocations recorded meanwhile. As a backstop every process re-reads all of them every
``RECONCILE_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import peewee

from devicehub.errors import Unauthenticated
from devicehub.security import INVALID_TOKEN_MESSAGE, Caller
from devicehub.storage.db import notify_at_commit, run_db
from devicehub.storage.models import Account, AccountRevocation, utcnow

log = logging.getLogger(__name__)

REVOCATION_CHANNEL = "devicehub_account"
REVOCATION_POLL_INTERVAL = 0.2  # seconds between polls of account_revocation (SQLite)
# Backstop: every process re-reads all recorded revocations this often, should it have
# missed one it was told of (a bug; none is known).
RECONCILE_INTERVAL = 60.0
# A revocation matters only while a token issued before it can still be unexpired: rows
# are kept for the longest token lifetime plus a margin (clock differences), and at least
# MIN_RETENTION, so that lowering the lifetime settings does not forget revocations that
# tokens issued under the longer lifetime still need.
RETENTION_MARGIN = dt.timedelta(hours=1)
MIN_RETENTION = dt.timedelta(days=30)
# After a lost LISTEN connection, revocations recorded from this long before the loss
# are replayed (applying one twice is harmless; missing one is not).
REPLAY_MARGIN = dt.timedelta(seconds=60)
# Revoked-to version of a deleted account: above any version a token can carry.
_DELETED = 2**62


@dataclass(frozen=True)
class Revocation:
    """Every token of ``account_id`` older than ``token_version`` is revoked; ``None``:
    the account was deleted, so all of them are."""

    account_id: int
    token_version: int | None
    id: int = 0  # the account_revocation row

    @property
    def revoked_to(self) -> int:
        return _DELETED if self.token_version is None else self.token_version


def record(account_id: int, token_version: int | None, retention: dt.timedelta) -> Revocation:
    """Records a revocation inside the caller's transaction; on PostgreSQL every server
    process is told when it commits. Rows older than ``retention`` go."""
    now = utcnow()
    row = AccountRevocation.create(
        account_id=account_id, token_version=token_version, created_at=now
    )
    AccountRevocation.delete().where(AccountRevocation.created_at < now - retention).execute()
    payload = json.dumps({"id": row.id, "account_id": account_id, "token_version": token_version})
    notify_at_commit(REVOCATION_CHANNEL, payload)
    return Revocation(account_id, token_version, row.id)


def current_token_version(account_id: int) -> int | None:
    """The account's token version; ``None`` if it does not exist (any more)."""
    return Account.select(Account.token_version).where(Account.id == account_id).scalar()


def _as_revocation(row: AccountRevocation) -> Revocation:
    return Revocation(row.account_id, row.token_version, row.id)


def revocations_after(last_id: int) -> list[Revocation]:
    """Revocations recorded after row ``last_id``, in order (SQLite commits them in id
    order, one writer at a time)."""
    rows = AccountRevocation.select().where(AccountRevocation.id > last_id)
    return [_as_revocation(row) for row in rows.order_by(AccountRevocation.id)]


def revocations_since(since: dt.datetime) -> list[Revocation]:
    rows = AccountRevocation.select().where(AccountRevocation.created_at >= since)
    return [_as_revocation(row) for row in rows.order_by(AccountRevocation.id)]


def newest_revocation_id() -> int:
    return AccountRevocation.select(peewee.fn.MAX(AccountRevocation.id)).scalar() or 0


class TokenVersions:
    """What this process knows of revoked tokens (see the module docstring).

    It holds, per account revoked within ``retention`` (at least the longest token
    lifetime), the version tokens must have at least (deleted: none is enough): a token is
    current iff its version is not below that. Any token whose account has no revocation
    that recent was issued at the account's current version or has expired, so a call
    costs one dict lookup and never a query, whichever account it is for. Used from the
    event loop only. ``on_revoked`` is told of each revocation this process learns of (to
    close the account's streams); it may hear one more than once.
    """

    def __init__(
        self,
        notified: bool,
        token_lifetime: float,
        on_revoked: Callable[[Revocation], None] | None = None,
    ) -> None:
        # notified: the process's notification listener (PostgreSQL) hands revocations
        # to this object (it is the REVOCATION_CHANNEL handler); else it polls (SQLite).
        self._notified = notified
        self._on_revoked = on_revoked
        self.retention = max(dt.timedelta(seconds=token_lifetime), MIN_RETENTION)
        self.retention += RETENTION_MARGIN
        self._revoked_to: dict[int, int] = {}
        self._applied = 0  # revocations applied so far
        # Whether this process hears revocations right now; the map is trusted only then.
        self._live = False
        self._tasks: list[asyncio.Task[None]] = []
        self._lost_at: dt.datetime | None = None

    async def check(self, caller: Caller) -> None:
        """Raises Unauthenticated unless the caller's token is of the account's current
        version (a deleted account has none)."""
        if self._live:
            if caller.token_version < self._revoked_to.get(caller.account_id, 0):
                raise Unauthenticated(INVALID_TOKEN_MESSAGE)
        elif await run_db(current_token_version, caller.account_id) != caller.token_version:
            raise Unauthenticated(INVALID_TOKEN_MESSAGE)

    def revoked(self, revocation: Revocation) -> None:
        """Applies a committed revocation and tells ``on_revoked``."""
        known = self._revoked_to.get(revocation.account_id, 0)
        self._revoked_to[revocation.account_id] = max(known, revocation.revoked_to)
        self._applied += 1
        if self._on_revoked is not None:
            self._on_revoked(revocation)

    async def _load(self, since: dt.datetime) -> list[Revocation]:
        """Applies every revocation recorded since ``since``; returns them."""
        revocations = await run_db(revocations_since, since)
        for revocation in revocations:
            if revocation.revoked_to > self._revoked_to.get(revocation.account_id, 0):
                self.revoked(revocation)
        return revocations

    async def start(self) -> None:
        if not self._notified:
            last_id = await run_db(newest_revocation_id)
            await self._load(utcnow() - self.retention)
            self._live = True
            self._tasks.append(asyncio.create_task(self._poll_forever(last_id), name="revocations"))
        self._tasks.append(asyncio.create_task(self._reconcile_forever(), name="reconcile"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            applied = self._applied
            try:
                revocations = await run_db(revocations_since, utcnow() - self.retention)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("re-reading token revocations failed (%s); retrying later", error)
                continue
            heard_meanwhile = self._applied != applied
            current: dict[int, int] = {}
            for revocation in revocations:
                previous = current.get(revocation.account_id, 0)
                current[revocation.account_id] = max(previous, revocation.revoked_to)
                if revocation.revoked_to > self._revoked_to.get(revocation.account_id, 0):
                    log.warning("revocation of account %d was missed", revocation.account_id)
                    self.revoked(revocation)
            if not heard_meanwhile:  # else the next round drops what aged out
                self._revoked_to = current

    async def _poll_forever(self, last_id: int) -> None:
        while True:
            await asyncio.sleep(REVOCATION_POLL_INTERVAL)
            try:
                revocations = await run_db(revocations_after, last_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._live:
                    log.warning("polling for token revocations failed (%s); retrying", error)
                self._live = False
                continue
            self._live = True  # polling by id, so nothing was missed while it failed
            for revocation in revocations:
                self.revoked(revocation)
                last_id = revocation.id

    # The notification listener's handler interface (listener.ChannelHandler).

    async def connected(self, reconnect: bool) -> None:
        # Listening now, so nothing committed from here on is missed: read what was
        # recorded before (at start: within the retention; after a lost connection:
        # since shortly before the loss).
        if self._lost_at is None:
            await self._load(utcnow() - self.retention)
        else:
            await self._load(self._lost_at - REPLAY_MARGIN)
        self._lost_at = None
        self._live = True

    def disconnected(self) -> None:
        if self._live:
            self._lost_at = utcnow()
        self._live = False

    def notified(self, payload: str) -> None:
        self._on_notify(payload)

    def _on_notify(self, payload: str) -> None:
        try:
            event = json.loads(payload)
            revocation = Revocation(
                int(event["account_id"]),
                None if event["token_version"] is None else int(event["token_version"]),
                int(event["id"]),
            )
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed revocation notification %r", payload[:200])
            return
        self.revoked(revocation)
