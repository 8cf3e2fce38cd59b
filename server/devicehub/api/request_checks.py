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
