"""Volcano Engine RTC AccessToken "001": pure unit tests of the token codec (no server stack)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import struct
import time
from collections.abc import Mapping

import pytest

from devicehub.integrations import volcano_token as rtc

APP_ID = "0123456789abcdef01234567"
APP_KEY = "app-key-for-tests"
ISSUED_AT = 1_700_000_000
EXPIRE_AT = 1_700_086_400

VECTORS: dict[str, dict] = {
    "ascii": {
        "room_id": "room-1",
        "user_id": "user-1",
        "issued_at": ISSUED_AT,
        "expire_at": EXPIRE_AT,
        "nonce": 12345,
        "privileges": {0: EXPIRE_AT, 4: EXPIRE_AT},
    },
    "non-ascii, no expiry": {
        "room_id": "房间",
        "user_id": "用户",
        "issued_at": ISSUED_AT,
        "expire_at": 0,
        "nonce": 99_999_999,
        "privileges": {0: 0, 1: 0, 2: 0, 3: 0, 4: 0},
    },
}

# Computed once and pasted: any change to the wire format or the signing breaks these.
GOLDEN = {
    "ascii": (
        "0010123456789abcdef01234567"
        "KgA5MAAAAPFTZYBCVWUGAHJvb20tMQYAdXNlci0xAgAAAIBCVWUEAIBCVWUgAB6PR2lfI3n2sGpen59nPVTP"
        "VK3fdv6ymWk3umx7Lshz"
    ),
    "non-ascii, no expiry": (
        "0010123456789abcdef01234567"
        "PAD/4PUFAPFTZQAAAAAGAOaIv+mXtAYA55So5oi3BQAAAAAAAAABAAAAAAACAAAAAAADAAAAAAAEAAAAAAAg"
        "AKIYG89cg9e32gtVZ9rFR6g8cqeAwbF2W+XsuDKTtGsF"
    ),
}


def independent_token(
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
    """The published layout, written out by hand without any devicehub code."""
    room = room_id.encode("utf-8")
    user = user_id.encode("utf-8")
    msg = struct.pack("<I", nonce) + struct.pack("<I", issued_at) + struct.pack("<I", expire_at)
    msg += struct.pack("<H", len(room)) + room
    msg += struct.pack("<H", len(user)) + user
    msg += struct.pack("<H", len(privileges))
    for key in sorted(privileges):
        msg += struct.pack("<H", key) + struct.pack("<I", privileges[key])
    sig = hmac.new(app_key.encode("utf-8"), msg, hashlib.sha256).digest()
    body = struct.pack("<H", len(msg)) + msg + struct.pack("<H", len(sig)) + sig
    return "001" + app_id + base64.b64encode(body).decode("ascii")


def build(**overrides) -> str:
    fields = {"app_id": APP_ID, "app_key": APP_KEY, **VECTORS["ascii"], **overrides}
    return rtc.build_token(
        fields.pop("app_id"),
        fields.pop("app_key"),
        fields.pop("room_id"),
        fields.pop("user_id"),
        **fields,
    )


def split(token: str) -> tuple[str, bytearray]:
    """(prefix "001" + app_id, decoded payload) of a token."""
    return token[:27], bytearray(base64.b64decode(token[27:]))


def join(prefix: str, body: bytes | bytearray) -> str:
    return prefix + base64.b64encode(bytes(body)).decode("ascii")


# 1. Deterministic vectors


@pytest.mark.parametrize("name", VECTORS)
def test_build_matches_independent_encoding(name: str) -> None:
    vector = VECTORS[name]
    expected = independent_token(APP_ID, APP_KEY, **vector)
    assert rtc.build_token(APP_ID, APP_KEY, **vector) == expected
    assert expected == GOLDEN[name]


@pytest.mark.parametrize("name", VECTORS)
def test_golden_vectors(name: str) -> None:
    assert rtc.build_token(APP_ID, APP_KEY, **VECTORS[name]) == GOLDEN[name]


def test_build_is_deterministic_and_sorts_privileges() -> None:
    forward = build(privileges={0: 5, 4: 6, 2: 7})
    assert build(privileges={4: 6, 2: 7, 0: 5}) == forward
    assert build(privileges={2: 7, 0: 5, 4: 6}) == forward


def test_publish_and_subscribe_grants_publish_parts_and_subscribe() -> None:
    assert rtc.publish_and_subscribe(EXPIRE_AT) == {k: EXPIRE_AT for k in (0, 1, 2, 3, 4)}
    assert [int(p) for p in rtc.Privilege] == [0, 1, 2, 3, 4]
    assert rtc.VERSION == "001"


# 2. Round trip


@pytest.mark.parametrize("name", VECTORS)
def test_parse_round_trip(name: str) -> None:
    vector = VECTORS[name]
    fields, msg, sig = rtc.parse_token(rtc.build_token(APP_ID, APP_KEY, **vector))
    assert fields == rtc.AccessToken(app_id=APP_ID, **vector)
    assert sig == hmac.new(APP_KEY.encode(), msg, hashlib.sha256).digest()
    assert len(sig) == 32


@pytest.mark.parametrize("name", VECTORS)
def test_verify_accepts_before_expiry(name: str) -> None:
    vector = VECTORS[name]
    token = rtc.build_token(APP_ID, APP_KEY, **vector)
    for now in (0, ISSUED_AT, EXPIRE_AT - 1):
        assert rtc.verify_token(token, APP_KEY, now=now) == rtc.AccessToken(app_id=APP_ID, **vector)


def test_verify_defaults_to_current_time() -> None:
    assert rtc.verify_token(build(expire_at=0xFFFF_FFFF), APP_KEY).room_id == "room-1"
    with pytest.raises(rtc.ExpiredToken):
        rtc.verify_token(build(expire_at=1), APP_KEY)


# 3. Rejections


def test_wrong_app_key_is_rejected() -> None:
    with pytest.raises(rtc.InvalidToken, match="signature mismatch"):
        rtc.verify_token(build(), "another-app-key", now=ISSUED_AT)


def test_any_flipped_signature_byte_is_rejected() -> None:
    token = build()
    prefix, body = split(token)
    msg_len = struct.unpack_from("<H", body)[0]
    sig_start = 2 + msg_len + 2
    assert len(body) - sig_start == 32
    for index in range(sig_start, len(body)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(body)
            tampered[index] ^= mask
            with pytest.raises(rtc.InvalidToken, match="signature mismatch"):
                rtc.verify_token(join(prefix, tampered), APP_KEY, now=ISSUED_AT)


def test_any_flipped_message_byte_is_rejected() -> None:
    undetected: list[tuple[str, int, int]] = []
    for name, vector in VECTORS.items():
        prefix, body = split(rtc.build_token(APP_ID, APP_KEY, **vector))
        msg_len = struct.unpack_from("<H", body)[0]
        # The length prefixes around msg and sig too: every byte of the payload is guarded.
        for index in range(2 + msg_len + 2):
            for mask in (0x01, 0x80, 0xFF):
                tampered = bytearray(body)
                tampered[index] ^= mask
                try:
                    rtc.verify_token(join(prefix, tampered), APP_KEY, now=ISSUED_AT)
                except rtc.InvalidToken:
                    continue
                undetected.append((name, index, mask))
    assert undetected == []


@pytest.mark.parametrize("version", ["", "1", "00", "000", "002", "101", "01", "v01", "0001"])
def test_wrong_version_prefix_is_rejected(version: str) -> None:
    token = version + build()[3:]
    with pytest.raises(rtc.InvalidToken, match="version"):
        rtc.parse_token(token)
    with pytest.raises(rtc.InvalidToken):
        rtc.verify_token(token, APP_KEY, now=ISSUED_AT)


def test_truncated_token_is_rejected() -> None:
    token = build()
    for cut in range(1, len(token)):
        with pytest.raises(rtc.InvalidToken):
            rtc.verify_token(token[:cut], APP_KEY, now=ISSUED_AT)


def test_truncated_or_extended_payload_is_rejected() -> None:
    prefix, body = split(build())
    # Still valid base64, but the byte layout is cut short or has bytes left over.
    for end in range(len(body)):
        with pytest.raises(rtc.InvalidToken):
            rtc.parse_token(join(prefix, body[:end]))
    with pytest.raises(rtc.InvalidToken, match="trailing"):
        rtc.parse_token(join(prefix, body + b"\x00"))


def test_trailing_bytes_inside_signed_message_are_rejected() -> None:
    """Even a correctly signed message must not carry bytes after the privileges."""
    prefix, body = split(build())
    msg_len = struct.unpack_from("<H", body)[0]
    msg = bytes(body[2 : 2 + msg_len]) + b"\x00"
    sig = hmac.new(APP_KEY.encode(), msg, hashlib.sha256).digest()
    payload = struct.pack("<H", len(msg)) + msg + struct.pack("<H", len(sig)) + sig
    with pytest.raises(rtc.InvalidToken, match="trailing"):
        rtc.verify_token(join(prefix, payload), APP_KEY, now=ISSUED_AT)


def test_bad_signature_length_is_rejected() -> None:
    prefix, body = split(build())
    msg_len = struct.unpack_from("<H", body)[0]
    msg = bytes(body[2 : 2 + msg_len])
    short_sig = hmac.new(APP_KEY.encode(), msg, hashlib.sha256).digest()[:31]
    payload = struct.pack("<H", len(msg)) + msg + struct.pack("<H", 31) + short_sig
    with pytest.raises(rtc.InvalidToken, match="32 bytes"):
        rtc.parse_token(join(prefix, payload))


def test_unsorted_or_duplicate_privileges_are_rejected() -> None:
    room, user = b"room-1", b"user-1"
    head = struct.pack("<III", 12345, ISSUED_AT, EXPIRE_AT)
    head += struct.pack("<H", len(room)) + room + struct.pack("<H", len(user)) + user
    for keys in ([4, 0], [0, 0]):
        msg = head + struct.pack("<H", len(keys))
        msg += b"".join(struct.pack("<HI", key, EXPIRE_AT) for key in keys)
        sig = hmac.new(APP_KEY.encode(), msg, hashlib.sha256).digest()
        payload = struct.pack("<H", len(msg)) + msg + struct.pack("<H", len(sig)) + sig
        with pytest.raises(rtc.InvalidToken, match="ascending"):
            rtc.verify_token(join("001" + APP_ID, payload), APP_KEY, now=ISSUED_AT)


@pytest.mark.parametrize(
    "payload",
    ["!!!!", "KgA5MAAAAPFTZYBC*", "KgA", "KgA5 MAA", "Kg==A5MA", "ÄÖÜ=", "KgA5MAAAAPFTZYBCVWU\n"],
)
def test_garbage_base64_is_rejected(payload: str) -> None:
    with pytest.raises(rtc.InvalidToken, match="base64"):
        rtc.parse_token("001" + APP_ID + payload)


def test_non_canonical_base64_is_rejected() -> None:
    token = build()
    # The last character before "=" padding / end carries unused low bits; setting them
    # decodes to the same bytes, so only the canonical spelling may be accepted.
    prefix, body = split(token)
    encoded = base64.b64encode(bytes(body[:-1])).decode("ascii")
    assert encoded.endswith("=")
    last = encoded.rstrip("=")[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sloppy = alphabet[alphabet.index(last) + 1]
    variant = encoded.rstrip("=")[:-1] + sloppy + "=" * encoded.count("=")
    assert base64.b64decode(variant) == bytes(body[:-1])
    with pytest.raises(rtc.InvalidToken, match="canonical"):
        rtc.parse_token(prefix + variant)


def test_expired_token_is_rejected() -> None:
    token = build()
    for now in (EXPIRE_AT, EXPIRE_AT + 1, 0xFFFF_FFFF):
        with pytest.raises(rtc.ExpiredToken):
            rtc.verify_token(token, APP_KEY, now=now)
    assert issubclass(rtc.ExpiredToken, rtc.InvalidToken)
    assert issubclass(rtc.InvalidToken, ValueError)


def test_signature_is_checked_before_expiry() -> None:
    """A forged token must say "invalid", not leak that its (unsigned) expiry has passed."""
    with pytest.raises(rtc.InvalidToken, match="signature mismatch"):
        rtc.verify_token(build(), "another-app-key", now=EXPIRE_AT + 1)


def test_zero_expire_at_never_expires() -> None:
    token = build(expire_at=0)
    for now in (ISSUED_AT, 0xFFFF_FFFF, 10**12):
        assert rtc.verify_token(token, APP_KEY, now=now).expire_at == 0


# 4. Validation


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"app_id": APP_ID[:23]}, "app_id"),
        ({"app_id": APP_ID + "8"}, "app_id"),
        ({"app_id": ""}, "app_id"),
        ({"app_key": ""}, "app_key"),
        ({"room_id": ""}, "room_id"),
        ({"user_id": ""}, "user_id"),
        ({"room_id": "x" * 65536}, "room_id"),
        ({"user_id": "房" * 21846}, "user_id"),  # 65538 UTF-8 bytes
        ({"room_id": "\ud800"}, "room_id"),
        ({"room_id": "r" * 40000, "user_id": "u" * 40000}, "too long"),
        ({"nonce": 0}, "nonce"),
        ({"nonce": 100_000_000}, "nonce"),
        ({"nonce": -1}, "nonce"),
        ({"issued_at": -1}, "issued_at"),
        ({"issued_at": 2**32}, "issued_at"),
        ({"expire_at": -1}, "expire_at"),
        ({"expire_at": 2**32}, "expire_at"),
        ({"issued_at": True}, "issued_at"),
        ({"privileges": {-1: 0}}, "privilege key"),
        ({"privileges": {65536: 0}}, "privilege key"),
        ({"privileges": {0: -1}}, "privilege 0"),
        ({"privileges": {4: 2**32}}, "privilege 4"),
    ],
)
def test_invalid_inputs_raise_value_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_limits_are_inclusive() -> None:
    # The whole message length is a uint16 as well: 12 (nonce, times) + 2 + room + 2 + 1
    # (user "u") + 2 (count) + 2 * 6 (privileges) = room + 31 bytes.
    with pytest.raises(ValueError, match="too long"):
        build(room_id="r" * 65505, user_id="u", privileges={0xFFFF: 0, 0: 0})
    token = build(
        room_id="r" * 65504,
        user_id="u",
        nonce=1,
        issued_at=0,
        expire_at=0xFFFF_FFFF,
        privileges={0xFFFF: 0xFFFF_FFFF, 0: 0},
    )
    fields, _, _ = rtc.parse_token(token)
    assert len(fields.room_id) == 65504
    assert fields.privileges == {0: 0, 0xFFFF: 0xFFFF_FFFF}
    assert build(nonce=99_999_999, privileges={}) != build(nonce=1, privileges={})


# 5. new_token


def test_new_token_fields() -> None:
    token, fields = rtc.new_token(APP_ID, APP_KEY, "room-1", "user-1", 3600, now=ISSUED_AT)
    assert fields.issued_at == ISSUED_AT
    assert fields.expire_at == ISSUED_AT + 3600
    assert fields.privileges == {k: ISSUED_AT + 3600 for k in (0, 1, 2, 3, 4)}
    assert 1 <= fields.nonce <= 99_999_999
    assert (fields.app_id, fields.room_id, fields.user_id) == (APP_ID, "room-1", "user-1")
    assert rtc.verify_token(token, APP_KEY, now=ISSUED_AT + 3599) == fields
    with pytest.raises(rtc.ExpiredToken):
        rtc.verify_token(token, APP_KEY, now=ISSUED_AT + 3600)


def test_new_token_uses_random_nonces() -> None:
    # Same inputs and the same now: only the random nonce tells the two tokens apart
    # (a collision has probability 1e-8).
    first_token, first = rtc.new_token(APP_ID, APP_KEY, "r", "u", 60, now=ISSUED_AT)
    second_token, second = rtc.new_token(APP_ID, APP_KEY, "r", "u", 60, now=ISSUED_AT)
    assert first.nonce != second.nonce
    assert first_token != second_token
    assert dataclasses.replace(first, nonce=second.nonce) == second


def test_new_token_with_fixed_nonce_matches_build_token() -> None:
    token, fields = rtc.new_token(
        APP_ID, APP_KEY, "room-1", "user-1", 86400, now=ISSUED_AT, nonce=7
    )
    expected = independent_token(
        APP_ID,
        APP_KEY,
        "room-1",
        "user-1",
        issued_at=ISSUED_AT,
        expire_at=ISSUED_AT + 86400,
        nonce=7,
        privileges=dict.fromkeys(range(5), ISSUED_AT + 86400),
    )
    assert token == expected
    assert fields.nonce == 7


def test_new_token_defaults_to_current_time() -> None:
    before = int(time.time())
    _, fields = rtc.new_token(APP_ID, APP_KEY, "r", "u", 60)
    assert before <= fields.issued_at <= int(time.time())
    assert fields.expire_at == fields.issued_at + 60


@pytest.mark.parametrize("ttl", [0, -1])
def test_new_token_rejects_non_positive_ttl(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        rtc.new_token(APP_ID, APP_KEY, "r", "u", ttl, now=ISSUED_AT)
