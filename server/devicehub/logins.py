"""Logins: password checks off the database threads, and throttling of failed logins.

Rules:

- Registrations (``SignupPolicy``) count per client address, every attempt: each creates
  an account and costs a password hash, and no token is needed to ask.
- Only FAILED logins count, in fixed windows of ``window`` seconds (throttle.py), shared by
  every server process: per client address (any username), per username (any address),
  and per (username, address) pair.
- An address with ``per_address`` failures in the window gets 429 + ``Retry-After`` for
  every login until the window ends (credential stuffing from one address).
- A username with ``per_username`` failures in the window gets 429 only from addresses
  that have failed for it in that window: a distributed guesser is stopped after the
  username's budget plus one failure per address, while the owner, logging in from an
  address that did not fail, still gets in (a lockout cannot be forced on them).
- Each attempt is counted as failed (three upserts) before its password is checked, and
  taken back when it succeeds: concurrent attempts cannot all pass the check before the
  first failure is recorded. A throttled attempt is refused before its password is
  hashed, so it costs no hashing (it still counts: the window it is refused in).
  The message for a wrong username or password stays "Incorrect username or password",
  and an unknown username costs the same hash as a wrong password.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from devicehub import throttle
from devicehub.errors import Unauthenticated
from devicehub.security import verify_password_bounded
from devicehub.storage.db import run_db
from devicehub.storage.models import Account
from devicehub.throttle import Limit, Throttled
from devicehub.v1 import error_pb2

INCORRECT = "Incorrect username or password"
TOO_MANY = "Too many failed logins; try again later"
TOO_MANY_REGISTRATIONS = "Too many registrations from this address; try again later"


@dataclass(frozen=True)
class LoginPolicy:
    window: int = 600
    per_address: int = 20
    per_username: int = 10

    @property
    def address(self) -> Limit:
        return Limit("login-address", self.per_address, self.window)

    @property
    def username(self) -> Limit:
        return Limit("login-username", self.per_username, self.window)

    @property
    def pair(self) -> Limit:  # whether this address failed for this username: hits unused
        return Limit("login-pair", 0, self.window)


@dataclass(frozen=True)
class SignupPolicy:
    window: int = 3600
    per_address: int = 20

    @property
    def address(self) -> Limit:
        return Limit("register-address", self.per_address, self.window)


def count_registration(policy: SignupPolicy, address: str) -> None:
    """Counts a registration attempt of ``address``; raises Throttled over the limit."""
    now = time.time()
    window = policy.address.hit(address, now)
    if policy.address.over(window):
        raise Throttled(TOO_MANY_REGISTRATIONS, window.retry_after(now))


def _pair(username: str, address: str) -> str:
    return f"{username} {address}"


def _subjects(policy: LoginPolicy, username: str, address: str) -> list[tuple[str, str]]:
    return [
        (policy.address.scope, address),
        (policy.username.scope, username),
        (policy.pair.scope, _pair(username, address)),
    ]


def _count_attempt(policy: LoginPolicy, username: str, address: str) -> Account | None:
    """Counts the attempt as failed before its password is checked (so that concurrent
    attempts cannot all pass the check); raises Throttled if it is over a limit, else
    returns the account, if any."""
    now = time.time()
    by_address = policy.address.hit(address, now)
    by_username = policy.username.hit(username, now)
    by_pair = policy.pair.hit(_pair(username, address), now)
    if policy.address.over(by_address):
        raise Throttled(TOO_MANY, by_address.retry_after(now))
    # This address failed for this username before (hits > 1 counts this attempt too).
    if policy.username.over(by_username) and by_pair.hits > 1:
        raise Throttled(TOO_MANY, by_username.retry_after(now))
    return Account.get_or_none(Account.username == username)


def _succeeded(policy: LoginPolicy, username: str, address: str) -> None:
    throttle.undo(_subjects(policy, username, address))


async def authenticate(policy: LoginPolicy, username: str, password: str, address: str) -> Account:
    """The account for a correct username and password from ``address``."""
    username = username.strip()
    account = await run_db(_count_attempt, policy, username, address)
    if not await verify_password_bounded(account.password_hash if account else None, password):
        raise Unauthenticated(INCORRECT, error_pb2.ERROR_REASON_INVALID_CREDENTIALS)
    assert account is not None
    await run_db(_succeeded, policy, username, address)
    return account
