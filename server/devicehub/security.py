"""Password hashing (Argon2id) and signed, expiring tokens (HS256 JWT).

Hashing a password takes about a core for a fifth of a second (Argon2 runs its lanes in
threads). Servers hash only through ``hash_password_bounded`` / ``verify_password_bounded``:
on a small executor of their own (``DEVICEHUB_PASSWORD_HASH_CONCURRENCY`` threads per
process, started by ``start_password_hashing``), never on the database threads, and at a
lower CPU priority, so a flood of logins queues for the hashers instead of holding database
threads and every core, and unrelated calls keep their latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from devicehub.errors import Unauthenticated
from devicehub.v1 import error_pb2

INVALID_TOKEN_MESSAGE = "Could not validate credentials"
EXPIRED_TOKEN_MESSAGE = "Token is expired"

_hasher = PasswordHasher()
# Verified against when the username is unknown, so that a wrong username costs as much
# time as a wrong password and does not reveal which accounts exist.
_DUMMY_HASH = _hasher.hash("devicehub-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


# Hashing threads run under SCHED_IDLE (Linux, per thread; Argon2's lane threads inherit
# it): any other runnable thread (event loops, database threads, Envoy, PostgreSQL)
# preempts them at once, so hashing uses only CPU time nothing else wants. Elsewhere, the
# lowest nice level.
HASHING_NICENESS = 19
_hashing: ThreadPoolExecutor | None = None


def _lower_priority() -> None:
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        # Not Linux, or not permitted: the lowest nice level, else normal priority.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, thread, HASHING_NICENESS)


def start_password_hashing(concurrency: int) -> None:
    """Starts the executor that computes every password hash of this process."""
    global _hashing
    _hashing = ThreadPoolExecutor(
        max_workers=max(1, concurrency), thread_name_prefix="hash", initializer=_lower_priority
    )


def stop_password_hashing() -> None:
    global _hashing
    if _hashing is not None:
        _hashing.shutdown(wait=True)
        _hashing = None


async def _on_hashing_executor(fn, *args):
    if _hashing is None:
        raise RuntimeError("start_password_hashing() was not called")
    return await asyncio.get_running_loop().run_in_executor(_hashing, fn, *args)


async def hash_password_bounded(password: str) -> str:
    """``hash_password`` on the bounded hashing executor."""
    result: str = await _on_hashing_executor(hash_password, password)
    return result


async def verify_password_bounded(password_hash: str | None, password: str) -> bool:
    """``verify_password`` on the bounded hashing executor."""
    result: bool = await _on_hashing_executor(verify_password, password_hash, password)
    return result


@dataclass(frozen=True)
class Caller:
    """Who is calling, as proven by an access token."""

    account_id: int
    is_admin: bool
    # The account's token version when the token was issued (claim ``ver``; tokens from
    # before versions existed have none and count as 0). A token whose version is not the
    # account's current one was revoked (revocations.TokenVersions checks it).
    token_version: int = 0


class TokenVersionCheck(Protocol):
    """Refuses a token of an old version: one revoked since (``revocations.TokenVersions``)."""

    async def check(self, caller: Caller) -> None: ...


class TokenSigner:
    """Issues and checks access and refresh tokens with one secret."""

    ALGORITHM = "HS256"
    # Verified tokens are remembered until they expire: apps and devices send the same
    # token with every call, and checking its signature again is a tenth of a cheap call.
    # (Whether a token was revoked since is TokenVersionCheck's question, asked per call.)
    VERIFIED_CACHE_SIZE = 10_000

    def __init__(self, secret: str, access_ttl: int, refresh_ttl: int) -> None:
        self._secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._verified: dict[tuple[str, str], tuple[Caller, float]] = {}

    def _issue(self, caller: Caller, kind: str, ttl: int) -> str:
        now = int(time.time())
        claims = {
            "sub": str(caller.account_id),
            "adm": caller.is_admin,
            "typ": kind,
            "ver": caller.token_version,
            "iat": now,
            "exp": now + ttl,
        }
        return jwt.encode(claims, self._secret, algorithm=self.ALGORITHM)

    def issue_access(self, caller: Caller) -> str:
        return self._issue(caller, "access", self.access_ttl)

    def issue_refresh(self, caller: Caller) -> str:
        return self._issue(caller, "refresh", self.refresh_ttl)

    def verify(self, token: str, kind: str = "access") -> Caller:
        """Returns the caller a token speaks for; raises Unauthenticated otherwise."""
        known = self._verified.get((token, kind))
        if known is not None and known[1] > time.time():
            return known[0]
        caller, expires = self._decode(token, kind)
        if len(self._verified) >= self.VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[(token, kind)] = (caller, expires)
        return caller

    def _decode(self, token: str, kind: str) -> tuple[Caller, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self.ALGORITHM],
                options={"require": ["exp", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                EXPIRED_TOKEN_MESSAGE, error_pb2.ERROR_REASON_TOKEN_EXPIRED
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated(INVALID_TOKEN_MESSAGE) from None
        if claims.get("typ") != kind:
            raise Unauthenticated(INVALID_TOKEN_MESSAGE)
        try:
            version = claims.get("ver", 0)
            if not isinstance(version, int) or isinstance(version, bool):
                raise TypeError("ver must be an integer")
            caller = Caller(
                account_id=int(claims["sub"]),
                is_admin=bool(claims.get("adm")),
                token_version=version,
            )
            return caller, float(claims["exp"])
        except (TypeError, ValueError):
            raise Unauthenticated(INVALID_TOKEN_MESSAGE) from None


def token_from_authorization(header: str | None) -> str:
    """Extracts the token of ``Bearer <token>`` or ``Token <token>``."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "token") or not token:
        raise Unauthenticated(INVALID_TOKEN_MESSAGE)
    return token
