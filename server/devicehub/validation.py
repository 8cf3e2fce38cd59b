"""Field validation shared by the domain modules. Every failure is an InvalidArgument
whose message names the field, so a client can tell what to fix.

Rules that hold for every request, whatever the endpoint (``checked_deserializer``
applies them as each request is parsed, ``interceptors.InputInterceptor`` answers 400
before a servicer sees a refused one):

- No text field contains a NUL character: PostgreSQL cannot store one in text, and no
  documented value has one, so it is refused on both databases alike.
- A request the protobuf parser rejects (a string field that is not valid UTF-8, which
  the REST transcoder passes through from a query string) is a 400, not grpc's UNKNOWN.

Numbers written as text (ids in a query string or a JSON string) are ASCII digits only:
``str.isdigit`` also accepts ``²`` and other digits ``int`` refuses. They must fit the
column they are compared with, or the database driver fails on them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

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


@cache
def _holds_text(descriptor: Descriptor) -> bool:
    """Whether messages of this type can carry a string at any depth (repeated numeric
    messages, e.g. 10,000 movement samples, are then skipped without a look)."""
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        for field in current.fields:
            if field.type == FieldDescriptor.TYPE_STRING:
                return True
            if field.message_type is not None:
                pending.append(field.message_type)
    return False


def _nul_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field (at any depth, map keys included) holding NUL."""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else (value,)
            if any(NUL in item for item in values):
                return name
        elif field.message_type is not None and _holds_text(field.message_type):
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if isinstance(key, str) and NUL in key:
                        return name
                    if isinstance(item, str):
                        if NUL in item:
                            return f"{name}[{key!r}]"
                    elif isinstance(item, Message) and (found := _nul_field(item, f"{name}.")):
                        return found
            elif field.is_repeated:
                for index, item in enumerate(value):
                    if found := _nul_field(item, f"{name}[{index}]."):
                        return found
            elif found := _nul_field(value, f"{name}."):
                return found
    return None


class Rejected:
    """Stands for a request refused while it was parsed; ``check_request`` raises it."""

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def checked_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserialize`` that applies the rules every request obeys (module docstring).

    A refused request becomes ``Rejected`` rather than an exception: grpc would answer a
    deserializer's exception with its own UNKNOWN status (HTTP 500 at the edge), before
    any interceptor could map it.
    """

    def parse(raw: bytes) -> Any:
        try:
            message = deserialize(raw)
        except DecodeError as error:
            if "UTF-8" in str(error):
                return Rejected(InvalidArgument("Request text must be valid UTF-8"))
            return Rejected(InvalidArgument("Request is not a valid protobuf message"))
        # A NUL character is encoded as a zero byte: without one (a scan in C), no text
        # holds it, and most requests skip the walk over their fields.
        if b"\x00" in raw and (field := _nul_field(message)):
            return Rejected(InvalidArgument(f"{field} must not contain NUL characters"))
        return message

    return parse


def check_request(request: object) -> None:
    """Raises the error of a request ``checked_deserializer`` refused."""
    if isinstance(request, Rejected):
        raise request.error


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
