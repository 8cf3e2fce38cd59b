"""Volcano Engine RTC AccessTokens, version "001" (the public algorithm).

A token lets one user join one RTC room with a set of privileges. The server signs it with
the application's key (``app_key``), which never leaves the server; the RTC service checks
the signature with the same key. All integers are little-endian, strings are UTF-8 and every
length counts bytes::

    msg   = u32 nonce | u32 issued_at | u32 expire_at
          | u16 len(room_id) + room_id | u16 len(user_id) + user_id
          | u16 count | for each privilege sorted by key: u16 key + u32 expiry
    sig   = HMAC-SHA256(key = app_key, data = msg)
    token = "001" + app_id + base64std( u16 len(msg) + msg + u16 len(sig) + sig )

``expire_at`` 0 means the token as a whole never expires; likewise a privilege expiry of 0
means that privilege never expires. ``app_id`` travels in clear text in front of the payload
and is NOT covered by the signature, so a verifier must compare it with its own app id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

VERSION = "001"
APP_ID_LENGTH = 24
NONCE_MIN = 1
NONCE_MAX = 99_999_999

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_SIGNATURE_LENGTH = hashlib.sha256().digest_size


class Privilege(IntEnum):
    """Privilege keys of the token's privilege map."""

    PUBLISH_STREAM = 0
    PUBLISH_AUDIO_STREAM = 1
    PUBLISH_VIDEO_STREAM = 2
    PUBLISH_DATA_STREAM = 3
    SUBSCRIBE_STREAM = 4


class InvalidToken(ValueError):
    """The token is malformed, was not signed with the given key, or has expired."""


class ExpiredToken(InvalidToken):
    """The token is well-formed and correctly signed, but its ``expire_at`` has passed."""


@dataclass(frozen=True)
class AccessToken:
    """The fields of a token; ``privileges`` maps a privilege key to its expiry (0 = none)."""

    app_id: str
    room_id: str
    user_id: str
    issued_at: int
    expire_at: int
    nonce: int
    privileges: dict[int, int]


def _check_uint(name: str, value: int, maximum: int, minimum: int = 0) -> int:
    # bool is an int subclass; True as a timestamp is certainly a caller bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in {minimum}..{maximum}, got {value}")
    return int(value)


def _encode_text(name: str, value: str, *, max_bytes: int = _U16_MAX) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:  # e.g. lone surrogates
        raise ValueError(f"{name} is not encodable as UTF-8") from exc
    if len(encoded) > max_bytes:
        raise ValueError(f"{name} must be at most {max_bytes} UTF-8 bytes, got {len(encoded)}")
    return encoded


def _key_bytes(app_key: str) -> bytes:
    # An empty key would "sign" with a value anyone can reproduce: a configuration error.
    return _encode_text("app_key", app_key, max_bytes=2**31)


def _pack_bytes(data: bytes) -> bytes:
    return struct.pack("<H", len(data)) + data


def _sign(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def build_token(
    app_id: str,
    app_key: str,
    room_id: str,
    user_id: str,
    *,
    issued_at: int,
    expire_at: int,
    nonce: int,
    privileges: Mapping[int, int],
) -> str:
    """Serialize and sign a token; the same inputs always give the same token.

    Raises ValueError if any field does not fit the layout (see the module docstring).
    """
    if not isinstance(app_id, str) or len(app_id) != APP_ID_LENGTH:
        raise ValueError(f"app_id must be exactly {APP_ID_LENGTH} characters")
    key = _key_bytes(app_key)
    room = _encode_text("room_id", room_id)
    user = _encode_text("user_id", user_id)
    issued_at = _check_uint("issued_at", issued_at, _U32_MAX)
    expire_at = _check_uint("expire_at", expire_at, _U32_MAX)
    nonce = _check_uint("nonce", nonce, NONCE_MAX, NONCE_MIN)
    # 65536 distinct uint16 keys are possible, but the count itself is a uint16.
    if len(privileges) > _U16_MAX:
        raise ValueError(f"at most {_U16_MAX} privileges fit in a token")
    entries = sorted(
        (
            _check_uint("privilege key", k, _U16_MAX),
            _check_uint(f"expiry of privilege {k}", v, _U32_MAX),
        )
        for k, v in privileges.items()
    )

    msg = b"".join(
        [
            struct.pack("<III", nonce, issued_at, expire_at),
            _pack_bytes(room),
            _pack_bytes(user),
            struct.pack("<H", len(entries)),
            *(struct.pack("<HI", k, v) for k, v in entries),
        ]
    )
    # Each id fits on its own, but both together can overflow the message's uint16 length.
    if len(msg) > _U16_MAX:
        raise ValueError(f"room_id and user_id together are too long ({len(msg)}-byte message)")
    body = _pack_bytes(msg) + _pack_bytes(_sign(key, msg))
    return VERSION + app_id + base64.b64encode(body).decode("ascii")


def publish_and_subscribe(expire_at: int) -> dict[int, int]:
    """The privileges this service grants: publish (with audio, video, data) and subscribe.

    PublishStream already implies the audio/video/data privileges, but the public reference
    implementations add those keys explicitly whenever PublishStream is added, so do we.
    """
    expire_at = _check_uint("expire_at", expire_at, _U32_MAX)
    return {
        int(privilege): expire_at
        for privilege in (
            Privilege.PUBLISH_STREAM,
            Privilege.PUBLISH_AUDIO_STREAM,
            Privilege.PUBLISH_VIDEO_STREAM,
            Privilege.PUBLISH_DATA_STREAM,
            Privilege.SUBSCRIBE_STREAM,
        )
    }


def new_token(
    app_id: str,
    app_key: str,
    room_id: str,
    user_id: str,
    ttl_seconds: int,
    *,
    now: int | None = None,
    nonce: int | None = None,
) -> tuple[str, AccessToken]:
    """Issue a publish-and-subscribe token valid for ``ttl_seconds`` from ``now``."""
    # ttl 0 would give a token that is expired on arrival.
    ttl_seconds = _check_uint("ttl_seconds", ttl_seconds, _U32_MAX, 1)
    issued_at = int(time.time()) if now is None else now
    if nonce is None:
        nonce = secrets.randbelow(NONCE_MAX) + NONCE_MIN
    fields = AccessToken(
        app_id=app_id,
        room_id=room_id,
        user_id=user_id,
        issued_at=issued_at,
        expire_at=issued_at + ttl_seconds,
        nonce=nonce,
        privileges=publish_and_subscribe(issued_at + ttl_seconds),
    )
    token = build_token(
        app_id,
        app_key,
        room_id,
        user_id,
        issued_at=fields.issued_at,
        expire_at=fields.expire_at,
        nonce=fields.nonce,
        privileges=fields.privileges,
    )
    return token, fields


class _Reader:
    """Consumes little-endian fields from a buffer; any overrun is an InvalidToken."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise InvalidToken(f"{self._what} is truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u16(self) -> int:
        value: int = struct.unpack("<H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("<I", self.take(4))[0]
        return value

    def text(self, name: str) -> str:
        try:
            return self.take(self.u16()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidToken(f"{name} is not valid UTF-8") from exc

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise InvalidToken(f"{self._what} has {len(self._data) - self._pos} trailing bytes")


def parse_token(token: str) -> tuple[AccessToken, bytes, bytes]:
    """Split a token into its fields, the signed message and the signature.

    Checks the structure only (not the signature or expiry; see verify_token). It is strict:
    only the canonical encoding that build_token produces is accepted, so a token string and
    its contents correspond one to one.
    """
    if not isinstance(token, str) or not token.startswith(VERSION):
        raise InvalidToken(f'token does not start with version "{VERSION}"')
    prefix = len(VERSION) + APP_ID_LENGTH
    if len(token) <= prefix:
        raise InvalidToken("token is too short")
    app_id, payload = token[len(VERSION) : prefix], token[prefix:]
    try:
        body = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
        raise InvalidToken("token payload is not valid base64") from exc
    # b64decode ignores non-zero padding bits, so several strings decode to the same bytes.
    if base64.b64encode(body).decode("ascii") != payload:
        raise InvalidToken("token payload is not canonical base64")

    outer = _Reader(body, "token payload")
    msg = outer.take(outer.u16())
    signature = outer.take(outer.u16())
    outer.finish()
    if len(signature) != _SIGNATURE_LENGTH:
        raise InvalidToken(f"signature must be {_SIGNATURE_LENGTH} bytes, got {len(signature)}")

    reader = _Reader(msg, "token message")
    nonce = reader.u32()
    issued_at = reader.u32()
    expire_at = reader.u32()
    room_id = reader.text("room_id")
    user_id = reader.text("user_id")
    privileges: dict[int, int] = {}
    previous = -1
    for _ in range(reader.u16()):
        key = reader.u16()
        # build_token writes keys strictly ascending; duplicates would silently collapse here.
        if key <= previous:
            raise InvalidToken("privilege keys are not in strictly ascending order")
        privileges[key] = reader.u32()
        previous = key
    reader.finish()

    fields = AccessToken(
        app_id=app_id,
        room_id=room_id,
        user_id=user_id,
        issued_at=issued_at,
        expire_at=expire_at,
        nonce=nonce,
        privileges=privileges,
    )
    return fields, msg, signature


def verify_token(token: str, app_key: str, *, now: int | None = None) -> AccessToken:
    """Parse a token, check its signature against ``app_key`` and its overall expiry.

    Raises InvalidToken (ExpiredToken once ``now >= expire_at``, unless expire_at is 0).
    The app_id is not signed: callers must compare the result's app_id with their own.
    """
    key = _key_bytes(app_key)
    fields, msg, signature = parse_token(token)
    if not hmac.compare_digest(_sign(key, msg), signature):
        raise InvalidToken("signature mismatch")
    if now is None:
        now = int(time.time())
    if fields.expire_at and now >= fields.expire_at:
        raise ExpiredToken("token has expired")
    return fields
