"""Rules every request obeys, applied as gRPC parses it: the transport half of validation.

- No text field contains a NUL character: PostgreSQL cannot store one in text, and no
  documented value has one, so it is refused on both databases alike.
- A request the protobuf parser rejects (a string field that is not valid UTF-8, which
  the REST transcoder passes through from a query string) is a 400, not grpc's UNKNOWN.

``checked_deserializer`` applies them as each request is parsed;
``interceptors.InputInterceptor`` answers 400 before a servicer sees a refused one. The
field rules of single values (``devicehub.validation``) stay with the domain.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from devicehub.errors import InvalidArgument
from devicehub.validation import NUL


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


@cache
def _text_fields(descriptor: Descriptor) -> tuple[tuple[FieldDescriptor, ...], ...]:
    """The fields of a message type to look into for NUL: its string fields, then its
    message fields that can hold text (a plan per type, so a walk over 1,000 entries
    does not sort through every set field of each)."""
    strings = tuple(f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING)
    messages = tuple(
        f for f in descriptor.fields if f.message_type is not None and _holds_text(f.message_type)
    )
    return strings, messages


def _nul_path(message: Message) -> list[str] | None:
    """The path (innermost last) of the first string field, at any depth, map keys
    included, that holds NUL; None if none does. The path is built only when found."""
    strings, messages = _text_fields(message.DESCRIPTOR)
    for field in strings:
        value = getattr(message, field.name)
        if any(NUL in item for item in value) if field.is_repeated else NUL in value:
            return [field.name]
    for field in messages:
        name = field.name
        if field.message_type.GetOptions().map_entry:
            for key, item in getattr(message, name).items():
                if isinstance(key, str) and NUL in key:
                    return [name]
                if isinstance(item, str):
                    if NUL in item:
                        return [f"{name}[{key!r}]"]
                elif isinstance(item, Message) and (found := _nul_path(item)):
                    return [name, *found]
        elif field.is_repeated:
            for index, item in enumerate(getattr(message, name)):
                if found := _nul_path(item):
                    return [f"{name}[{index}]", *found]
        elif message.HasField(name) and (found := _nul_path(getattr(message, name))):
            return [name, *found]
    return None


def _nul_field(message: Message) -> str | None:
    """The dotted path of the first string field holding NUL (e.g. ``log_arrays[3].unique_id``)."""
    found = _nul_path(message)
    return ".".join(found) if found else None


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
