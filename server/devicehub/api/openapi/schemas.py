"""JSON Schemas of the protobuf messages as the REST edge prints and parses them.

The edge's transcoder (envoy.yaml ``print_options``) prints proto field names as they are
(``preserve_proto_field_names``: ``json_name`` is not used), every field without presence
even at its zero value (``always_print_primitive_fields``: ``0``, ``""``, ``false``, ``[]``),
enums as their names, and 64-bit integers as decimal strings (proto3 JSON), while it leaves
out unset message fields and unset proto3 ``optional`` ones. So a response schema lists
those always-printed fields as ``required``, and a request schema only the fields with
``(google.api.field_behavior) = REQUIRED``: a message that travels both ways (a device type
created, then returned) gets two schemas, the request one named ``<Message>Input``.
``OUTPUT_ONLY`` fields are ``readOnly``, ``INPUT_ONLY`` ones ``writeOnly``.

A request schema says what the transcoder parses, which is more than it prints: a 64-bit
integer as a JSON number too (proto3 JSON); ``null`` for any field, read as the field's
default (unset); and for a list also a single value (a list of one), ``null`` elements
(skipped) and nested lists (flattened). So a request field takes those forms too, but a
REQUIRED one no ``null``, which the service refuses as it refuses the field missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from devicehub.api.openapi.protos import ProtoIndex, type_name

Direction = Literal["in", "out"]
Schema = dict[str, Any]

_F = descriptor_pb2.FieldDescriptorProto

INT32: Schema = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
UINT32: Schema = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
# proto3 JSON prints 64-bit integers as strings (a JavaScript number cannot hold them); the
# edge parses either form in requests.
INT64: Schema = {"type": "string", "pattern": "^-?[0-9]+$"}
UINT64: Schema = {"type": "string", "pattern": "^[0-9]+$"}

_SCALARS: dict[int, Schema] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT64: INT64,
    _F.TYPE_SINT64: INT64,
    _F.TYPE_SFIXED64: INT64,
    _F.TYPE_UINT64: UINT64,
    _F.TYPE_FIXED64: UINT64,
    _F.TYPE_INT32: INT32,
    _F.TYPE_SINT32: INT32,
    _F.TYPE_SFIXED32: INT32,
    _F.TYPE_UINT32: UINT32,
    _F.TYPE_FIXED32: UINT32,
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

# Well-known types print as their own JSON mapping, not as objects of their fields.
# SCALAR_WELL_KNOWN also bind as a single query parameter.
SCALAR_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.DoubleValue": _SCALARS[_F.TYPE_DOUBLE],
    "google.protobuf.FloatValue": _SCALARS[_F.TYPE_FLOAT],
    "google.protobuf.Int64Value": INT64,
    "google.protobuf.UInt64Value": UINT64,
    "google.protobuf.Int32Value": INT32,
    "google.protobuf.UInt32Value": UINT32,
    "google.protobuf.BoolValue": _SCALARS[_F.TYPE_BOOL],
    "google.protobuf.StringValue": _SCALARS[_F.TYPE_STRING],
    "google.protobuf.BytesValue": _SCALARS[_F.TYPE_BYTES],
}
WELL_KNOWN: dict[str, Schema] = {
    **SCALAR_WELL_KNOWN,
    "google.protobuf.Empty": {"type": "object", "maxProperties": 0},
    "google.protobuf.Value": {},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
    },
    # Only a whole request or response body (see document.py), never a JSON value.
    "google.api.HttpBody": {"type": "string", "format": "binary"},
}


def behaviors(field: descriptor_pb2.FieldDescriptorProto) -> set[int]:
    return set(field.options.Extensions[field_behavior_pb2.field_behavior])


def is_required(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    return field_behavior_pb2.REQUIRED in behaviors(field)


def has_presence(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Unset, the field is left out of the JSON: a message, a proto3 ``optional`` or a
    member of a oneof. Every other field is printed even at its zero value."""
    is_message = field.type == _F.TYPE_MESSAGE and field.label != _F.LABEL_REPEATED
    return is_message or field.proto3_optional or field.HasField("oneof_index")


class Schemas:
    """Builds ``components.schemas``: each ``ref`` asks for one message (or enum) schema,
    and ``components`` then builds every schema asked for, and those they refer to.

    ``both_ways`` are the messages that appear in requests and in responses (they get an
    ``Input`` schema); ``field_schemas`` replace the schema of named fields, where the
    descriptors cannot tell (a ``google.protobuf.Value`` that is a timestamp or null)."""

    def __init__(
        self,
        index: ProtoIndex,
        package: str,
        both_ways: set[str],
        field_schemas: Mapping[str, Schema],
    ) -> None:
        self._index = index
        self._package_prefix = f"{package}."
        self._both_ways = both_ways
        self._field_schemas = field_schemas
        self._wanted: set[tuple[str, Direction | None]] = set()

    def name(self, type_full_name: str, direction: Direction | None) -> str:
        short = type_full_name.removeprefix(self._package_prefix)
        if direction == "in" and type_full_name in self._both_ways:
            return f"{short}Input"
        return short

    def ref(self, type_full_name: str, direction: Direction | None) -> Schema:
        """A reference to a message (``direction`` "in" or "out") or enum (None) schema, or
        the inline schema of a well-known type."""
        if type_full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_full_name])
        self._wanted.add((type_full_name, direction))
        return {"$ref": f"#/components/schemas/{self.name(type_full_name, direction)}"}

    def components(self) -> dict[str, Schema]:
        built: dict[tuple[str, Direction | None], Schema] = {}
        while len(built) < len(self._wanted):
            for wanted in sorted(self._wanted - built.keys(), key=str):
                full_name, direction = wanted
                if direction is None:
                    built[wanted] = self._enum(full_name)
                else:
                    built[wanted] = self.object_schema(full_name, direction)
        named = {self.name(*key): schema for key, schema in built.items()}
        return dict(sorted(named.items(), key=lambda item: item[0]))

    def used_both_ways(self) -> set[str]:
        """The messages asked for (so far, at any depth once ``components`` ran) both as
        request and as response schemas."""
        inputs = {name for name, direction in self._wanted if direction == "in"}
        return inputs & {name for name, direction in self._wanted if direction == "out"}

    def object_schema(
        self, message_name: str, direction: Direction, exclude: Iterable[str] = ()
    ) -> Schema:
        """The schema of a message's JSON object, less the fields ``exclude`` names (those
        a request carries in its path)."""
        message = self._index.messages[message_name]
        excluded = set(exclude)
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in message.field:
            if field.name in excluded:
                continue
            property_schema = self.field_schema(message_name, field, direction)
            field_behaviors = behaviors(field)
            if direction == "in":
                property_schema = parsed_form(
                    property_schema, nullable=field_behavior_pb2.REQUIRED not in field_behaviors
                )
            properties[field.name] = property_schema
            if field_behavior_pb2.REQUIRED in field_behaviors or (
                direction == "out"
                and not has_presence(field)
                and field_behavior_pb2.INPUT_ONLY not in field_behaviors
            ):
                required.append(field.name)
        schema: Schema = {"type": "object"}
        description = self._index.comment(message_name)
        if description:
            schema["description"] = description
        schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def field_schema(
        self, message_name: str, field: descriptor_pb2.FieldDescriptorProto, direction: Direction
    ) -> Schema:
        full_name = f"{message_name}.{field.name}"
        if full_name in self._field_schemas:
            schema = dict(self._field_schemas[full_name])
        elif self._is_map(field):
            entry = self._index.messages[type_name(field.type_name)]
            value = next(f for f in entry.field if f.name == "value")
            schema = {"type": "object", "additionalProperties": self._single(value, direction)}
        elif field.label == _F.LABEL_REPEATED:
            schema = {"type": "array", "items": self._single(field, direction)}
        else:
            schema = self._single(field, direction)
        description = self._index.comment(full_name)
        if description:
            schema["description"] = description
        field_behaviors = behaviors(field)
        if field_behavior_pb2.OUTPUT_ONLY in field_behaviors:
            schema["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in field_behaviors:
            schema["writeOnly"] = True
        return schema

    def _single(self, field: descriptor_pb2.FieldDescriptorProto, direction: Direction) -> Schema:
        """The schema of one value of ``field`` (an element, if it is repeated)."""
        if field.type == _F.TYPE_MESSAGE:
            return self.ref(type_name(field.type_name), direction)
        if field.type == _F.TYPE_ENUM:
            return self.ref(type_name(field.type_name), None)
        return dict(_SCALARS[field.type])

    def _is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        if field.type != _F.TYPE_MESSAGE or field.label != _F.LABEL_REPEATED:
            return False
        entry = self._index.messages.get(type_name(field.type_name))
        return entry is not None and entry.options.map_entry

    def _enum(self, enum_name: str) -> Schema:
        enum = self._index.enums[enum_name]
        return enum_schema(
            self._index.comment(enum_name),
            [
                (value.name, self._index.comment(f"{enum_name}.{value.name}"))
                for value in enum.value
            ],
        )


_INTEGER_PATTERNS = {INT64["pattern"], UINT64["pattern"]}
_ARRAY_KEYS = {"type", "items"}


def parsed_form(schema: Schema, nullable: bool) -> Schema:
    """What the transcoder accepts for a request field printed as ``schema`` (module
    docstring); ``nullable``: a ``null`` too."""
    schema = _with_integer_form(schema)
    if schema.get("type") == "array":
        item = schema["items"]
        annotations = {key: value for key, value in schema.items() if key not in _ARRAY_KEYS}
        # A nested list is flattened into the list: its own elements are not described.
        element = {"anyOf": [item, {"type": "null"}, {"type": "array"}]}
        schema = {"anyOf": [{"type": "array", "items": element}, item], **annotations}
    return _or_null(schema) if nullable else schema


def _with_integer_form(schema: Schema) -> Schema:
    schema = dict(schema)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _with_integer_form(schema[key])
    if schema.get("type") == "string" and schema.get("pattern") in _INTEGER_PATTERNS:
        # ``pattern`` holds for the string form only, ``minimum`` for the number form.
        schema["type"] = ["string", "integer"]
        if schema["pattern"] == UINT64["pattern"]:
            schema["minimum"] = 0
    return schema


def _or_null(schema: Schema) -> Schema:
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    if "$ref" in schema:
        annotations = {key: value for key, value in schema.items() if key != "$ref"}
        return {"anyOf": [{"$ref": schema["$ref"]}, {"type": "null"}], **annotations}
    types = schema.get("type")
    if types is None:
        return schema  # any JSON value (a google.protobuf.Value): null included
    types = [types] if isinstance(types, str) else list(types)
    nullable = {**schema, "type": types if "null" in types else [*types, "null"]}
    if "enum" in nullable and None not in nullable["enum"]:
        nullable["enum"] = [*nullable["enum"], None]
    return nullable


def enum_schema(description: str, values: list[tuple[str, str]]) -> Schema:
    """A string enum; each value's comment joins the description as a list item (JSON
    Schema has no per-value description)."""
    items = "\n".join(
        f"- `{name}`: {' '.join(comment.split())}" if comment else f"- `{name}`"
        for name, comment in values
    )
    text = f"{description}\n\n{items}" if description else items
    return {"type": "string", "description": text, "enum": [name for name, _ in values]}
