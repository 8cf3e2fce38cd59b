"""Field validation shared by the domain modules. Every failure is an InvalidArgument
whose message names the field, so a client can tell what to fix."""

from __future__ import annotations

import datetime as dt
import re

from devicehub.errors import InvalidArgument

_CODE = re.compile(r"^[A-Za-z0-9_-]+$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
_MAC_PREFIX = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){0,4}$")


def text(field: str, value: str, *, max_length: int, required: bool = True) -> str:
    """A trimmed string of at most ``max_length`` characters, non-empty if ``required``."""
    value = value.strip()
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
