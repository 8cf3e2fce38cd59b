"""Field validation shared by the domain modules. Every failure is an InvalidArgument
whose message names the field, so a client can tell what to fix.

No text field may contain a NUL character: PostgreSQL cannot store one in text, and no
documented value has one, so it is refused on both databases alike. The same rule holds
for every request as it is parsed (``devicehub.api.request_checks``).

Numbers written as text (ids in a query string or a JSON string) are ASCII digits only:
``str.isdigit`` also accepts ``²`` and other digits ``int`` refuses. They must fit the
column they are compared with, or the database driver fails on them.
"""

from __future__ import annotations

import datetime as dt
import re

from devicehub.errors import InvalidArgument

_CODE = re.compile(r"^[A-Za-z0-9_-]+$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
_MAC_PREFIX = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){0,4}$")
_ASCII_DIGITS = re.compile(r"[0-9]+")
NUL = "\x00"
INT32_MAX = 2**31 - 1
"""Largest id of an ``INTEGER`` key (accounts, devices, children, ...)."""
INT64_MAX = 2**63 - 1
"""Largest id of a ``BIGINT`` key (messages) and largest stored integer on SQLite."""


def no_nul(field: str, value: str) -> str:
    if NUL in value:
        raise InvalidArgument(f"{field} must not contain NUL characters")
    return value


def ascii_number(field: str, value: str, *, maximum: int = INT32_MAX) -> int:
    """A non-negative integer written in ASCII digits (after trimming), at most ``maximum``."""
    value = value.strip()
    # The length check first: int() of thousands of digits is slow (and refused).
    if len(value) > 20 or not _ASCII_DIGITS.fullmatch(value) or int(value) > maximum:
        raise InvalidArgument(f"{field} must be a number written 0-9, at most {maximum}")
    return int(value)


def text(field: str, value: str, *, max_length: int, required: bool = True) -> str:
    """A trimmed string of at most ``max_length`` characters, non-empty if ``required``."""
    value = no_nul(field, value).strip()
    if required and not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > max_length:
        raise InvalidArgument(f"{field} must be at most {max_length} characters")
    return value


def code(field: str, value: str, *, max_length: int) -> str:
    """An identifier-like code: letters, digits, ``_`` and ``-``."""
    value = text(field, value, max_length=max_length)
    if not _CODE.match(value):
        raise InvalidArgument(f"{field} may contain only letters, digits, '_' and '-'")
    return value


def date(field: str, value: str) -> dt.date:
    """A calendar date written ``YYYY-MM-DD`` (and nothing else ISO 8601 allows)."""
    value = text(field, value, max_length=10)
    try:
        if _DATE.match(value):
            return dt.date.fromisoformat(value)
    except ValueError:
        pass
    raise InvalidArgument(f"{field} must be a date written YYYY-MM-DD")


def positive_id(field: str, value: int) -> int:
    if value <= 0:
        raise InvalidArgument(f"{field} is required and must be a positive id")
    return value


def mac_address(field: str, value: str) -> str:
    """Six hex octets separated by ``:`` or ``-``; returned upper case with ``:``."""
    value = value.strip()
    if not _MAC.match(value):
        raise InvalidArgument(f"{field} must be six hex octets like 00:11:22:33:44:55")
    return value.replace("-", ":").upper()


def mac_prefix(field: str, value: str) -> list[int]:
    """One to five hex octets; returned as octet values."""
    value = value.strip()
    if not _MAC_PREFIX.match(value):
        raise InvalidArgument(f"{field} must be one to five hex octets like 00:11:22")
    return [int(octet, 16) for octet in re.split("[:-]", value)]
