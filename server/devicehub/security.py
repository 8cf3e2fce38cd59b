"""Password hashing (Argon2id) and signed, expiring tokens (HS256 JWT)."""

from __future__ import annotations

import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Caller:
    """Who is calling, as proven by an access token."""

    account_id: int
    is_admin: bool


class TokenSigner:
    """Issues and checks access and refresh tokens with one secret."""

    ALGORITHM = "HS256"
    # Verified tokens are remembered until they expire: apps and devices send the same
    # token with every call, and checking its signature again is a tenth of a cheap call.
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
            caller = Caller(account_id=int(claims["sub"]), is_admin=bool(claims.get("adm")))
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
