"""The descriptor set as the document reads it: every message, enum and service by full
name, and the leading comment of each element (the set is built with source info)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2

# Field numbers of the descriptor messages, as source-info paths name them
# (google/protobuf/descriptor.proto).
_FILE_MESSAGES, _FILE_ENUMS, _FILE_SERVICES = 4, 5, 6
_MESSAGE_FIELDS, _MESSAGE_NESTED, _MESSAGE_ENUMS = 2, 3, 4
_ENUM_VALUES = 2
_SERVICE_METHODS = 2


@dataclass
class ProtoIndex:
    """Messages and enums by full name (``devicehub.v1.Device``, nested ones as
    ``devicehub.v1.Outer.Inner``), the services of the API's package in file order, and
    comments keyed by the full name of a message, field (``<message>.<field>``), enum, enum
    value (``<enum>.<VALUE>``), service or method (``<service>.<Method>``)."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = field(default_factory=list)
    comments: dict[str, str] = field(default_factory=dict)

    def comment(self, name: str) -> str:
        return self.comments.get(name, "")


def type_name(field_type_name: str) -> str:
    """A field's ``type_name`` (``.devicehub.v1.Device``) as a key of the index."""
    return field_type_name.removeprefix(".")


def clean_comment(comment: str) -> str:
    """A proto comment as Markdown: the one space after ``//`` removed, paragraphs kept."""
    lines = (line.removeprefix(" ").rstrip() for line in comment.splitlines())
    return "\n".join(lines).strip()


def load(descriptor_set: bytes, package: str) -> ProtoIndex:
    """Indexes every file of ``descriptor_set``; only ``package``'s services are kept."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
    index = ProtoIndex()
    for file in files:
        comments = {
            tuple(location.path): clean_comment(location.leading_comments)
            for location in file.source_code_info.location
            if location.leading_comments
        }
        for path, name in _elements(file, index, package):
            if path in comments:
                index.comments[name] = comments[path]
    return index


def _elements(
    file: descriptor_pb2.FileDescriptorProto, index: ProtoIndex, package: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    """Registers every element of ``file`` in ``index``, yielding its source-info path and
    full name."""
    prefix = f"{file.package}." if file.package else ""
    for i, message in enumerate(file.message_type):
        yield from _message(message, (_FILE_MESSAGES, i), prefix + message.name, index)
    for i, enum in enumerate(file.enum_type):
        yield from _enum(enum, (_FILE_ENUMS, i), prefix + enum.name, index)
    for i, service in enumerate(file.service):
        name = prefix + service.name
        if file.package == package:
            index.services.append((name, service))
        yield (_FILE_SERVICES, i), name
        for j, method in enumerate(service.method):
            yield (_FILE_SERVICES, i, _SERVICE_METHODS, j), f"{name}.{method.name}"


def _message(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str, index: ProtoIndex
) -> Iterator[tuple[tuple[int, ...], str]]:
    index.messages[name] = message
    yield path, name
    for i, message_field in enumerate(message.field):
        yield (*path, _MESSAGE_FIELDS, i), f"{name}.{message_field.name}"
    for i, nested in enumerate(message.nested_type):
        yield from _message(nested, (*path, _MESSAGE_NESTED, i), f"{name}.{nested.name}", index)
    for i, enum in enumerate(message.enum_type):
        yield from _enum(enum, (*path, _MESSAGE_ENUMS, i), f"{name}.{enum.name}", index)


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str, index: ProtoIndex
) -> Iterator[tuple[tuple[int, ...], str]]:
    index.enums[name] = enum
    yield path, name
    for i, value in enumerate(enum.value):
        yield (*path, _ENUM_VALUES, i), f"{name}.{value.name}"
