"""The OpenAPI document: one operation per ``google.api.http`` rule and path form.

Each rule is read as Envoy's transcoder reads it: ``{field}`` in the path binds that request
field; ``body: "*"`` takes the remaining fields from a JSON body, ``body: "<field>"`` that
field alone (the rest are query parameters), and without ``body`` every field not in the
path is a query parameter, also for a POST or PATCH (the Lux API's
``set-my-device?serial_code=...``). Then the edge's conventions (edge.py) shape the answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from devicehub.api.openapi import edge, protos
from devicehub.api.openapi.protos import ProtoIndex, type_name
from devicehub.api.openapi.schemas import (
    SCALAR_WELL_KNOWN,
    WELL_KNOWN,
    Schema,
    Schemas,
    enum_schema,
    is_required,
)

API_PACKAGE = "devicehub.v1"
ERROR_REASON_ENUM = f"{API_PACKAGE}.ErrorReason"
ERROR_REASON_PREFIX = "ERROR_REASON_"
HTTP_BODY = "google.api.HttpBody"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
EVENT_STREAM = "text/event-stream"

_F = descriptor_pb2.FieldDescriptorProto
_PATH_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "`Authorization: Bearer <access_token>`, the token from "
        "`POST /api/v1/auth/token`.",
    },
    "tokenAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Authorization: Token <access_token>`: the same token in the "
        "device-interaction module's Token-auth form (the value is `Token `, then the token).",
    },
}
_DESCRIPTION = """\
The JSON REST surface of devicehub, as its Envoy edge serves it: generated from the protos'
descriptor set when the code is built, so it always matches them. gRPC clients use the
protos themselves (server reflection is on).

- **Two families of paths**, each with its document's conventions. Under `/api/v1` (the Lux
  device API, accounts, tokens) an error is `{"detail": "..."}`; under `/api/device` (the
  device-interaction module) it is `{"status": "error", "message": "...", "code": "..."}`, `code`
  an `ErrorCode`. A 5xx body also names its `request_id`.
- **Authentication**: `Authorization: Bearer <access_token>` or `Authorization: Token
  <access_token>`; operations with no security requirement need no token.
- **Paths** work with and without their trailing slash; both are listed, the documented form
  first (the other's operation id ends in `_with_slash` or `_without_slash`).
- **Lists** are bare JSON arrays; `page_size` pages those that take it, and the next page's
  token comes in the `x-next-page-token` header (absent on the last page), to pass as
  `page_token`.
- **JSON**: keys are the proto field names; 64-bit integers are decimal strings, 32-bit ones
  numbers; timestamps RFC 3339 in UTC; enums their names. Unknown keys in a request are
  ignored. A successful DELETE answers 204 with an empty body.
- **Requests are read leniently** (the request schemas say so field by field): `null`
  stands for an optional field left out; a 64-bit integer may also be a number; a list
  may also be a single value (a list of one), and its `null` elements are skipped and
  nested lists flattened. A JSON body is read as JSON whatever its `Content-Type` says
  (`curl -d` sends `application/x-www-form-urlencoded`).
- **Live messages** stream as server-sent events from `GET /api/device/messages/stream/`. The
  documented WebSocket channel `ws://<host>/api/device/messages/{user_id}/?token=...` (frames
  `{"type", "message", "user_id", "id"}`, acknowledgements `{"ack": [ids]}`) is not described
  here: OpenAPI has no WebSocket operations.
"""


@dataclass(frozen=True)
class Binding:
    """One HTTP rule of one method."""

    service: descriptor_pb2.ServiceDescriptorProto
    method: descriptor_pb2.MethodDescriptorProto
    verb: str
    template: str
    body: str
    number: int  # 0: the method's rule; then its additional_bindings in order

    @property
    def key(self) -> str:
        """``Service.Method``, as edge.py's tables name methods."""
        return f"{self.service.name}.{self.method.name}"

    @property
    def request(self) -> str:
        return type_name(self.method.input_type)

    @property
    def response(self) -> str:
        return type_name(self.method.output_type)


def bindings(index: ProtoIndex) -> list[Binding]:
    """Every HTTP rule of the API's services, in file and method order."""
    found = []
    for _, service in index.services:
        for method in service.method:
            rule = method.options.Extensions[annotations_pb2.http]
            if rule.WhichOneof("pattern") is None:
                continue
            for number, each in enumerate([rule, *rule.additional_bindings]):
                verb, template = _pattern(each)
                found.append(Binding(service, method, verb, template, each.body, number))
    return found


def _pattern(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    return str(kind), getattr(rule, str(kind))


def path_variables(template: str) -> list[str]:
    """The field paths a template binds: ``{device_type.id}`` -> ``device_type.id``."""
    return _PATH_VARIABLE.findall(template)


def parameter_name(field_path: str) -> str:
    """A path variable's name in the document: its last field (``device_type.id`` -> ``id``,
    as the documents write it)."""
    return field_path.rsplit(".", 1)[-1]


def path_forms(template: str) -> list[tuple[str, str]]:
    """``(path, operationId suffix)`` of both forms of a template, the documented one first
    with no suffix."""
    bare = _PATH_VARIABLE.sub(lambda m: "{" + parameter_name(m.group(1)) + "}", template)
    bare = bare.rstrip("/")
    slashed = f"{bare}/"
    if any(bare == prefix or bare.startswith(f"{prefix}/") for prefix in edge.SLASHED_PREFIXES):
        return [(slashed, ""), (bare, "_without_slash")]
    return [(bare, ""), (slashed, "_with_slash")]


def summary(description: str) -> str:
    """The first sentence of a comment, on one line."""
    paragraph = " ".join(description.split("\n\n", 1)[0].split())
    sentence, dot, _ = paragraph.partition(". ")
    return sentence + "." if dot else paragraph


class _Builder:
    """One pass over the rules; ``both_ways`` as ``Schemas`` takes it."""

    def __init__(self, index: ProtoIndex, both_ways: set[str]) -> None:
        self.index = index
        self.schemas = Schemas(index, API_PACKAGE, both_ways, edge.VALUE_FIELDS)
        self.responses: dict[str, Schema] = {}

    def document(self) -> dict[str, Any]:
        all_bindings = bindings(self.index)
        paths: dict[str, dict[str, Any]] = {}
        for binding in all_bindings:
            forms = path_forms(binding.template)
            documented = forms[0][0]
            for path, suffix in forms:
                operation = self.operation(binding, path, suffix, documented)
                paths.setdefault(path, {})[binding.verb] = operation
        schemas = {
            **self.schemas.components(),
            "ErrorCode": self.error_code(),
            **edge.error_schemas({"$ref": "#/components/schemas/ErrorCode"}),
        }
        used_services = {binding.service.name for binding in all_bindings}
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "devicehub REST API",
                "version": API_PACKAGE.rsplit(".", 1)[-1],
                "description": _DESCRIPTION,
            },
            "tags": [
                {"name": service.name, "description": self.index.comment(name)}
                for name, service in self.index.services
                if service.name in used_services
            ],
            "security": [{"bearerAuth": []}, {"tokenAuth": []}],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "responses": dict(sorted(self.responses.items())),
                "securitySchemes": _SECURITY_SCHEMES,
            },
        }

    def operation(
        self, binding: Binding, path: str, suffix: str, documented: str
    ) -> dict[str, Any]:
        comment = self.index.comment(f"{API_PACKAGE}.{binding.key}")
        description = comment
        if suffix:
            description += f"\n\nThe same operation as `{documented}`."
        operation: dict[str, Any] = {
            "operationId": "_".join(binding.key.split("."))
            + (f"_{binding.number}" if binding.number else "")
            + suffix,
            "tags": [binding.service.name],
            "summary": summary(comment),
            "description": description,
            "x-grpc-method": f"/{API_PACKAGE}.{binding.service.name}/{binding.method.name}",
        }
        if binding.key in edge.PUBLIC_METHODS:
            operation["security"] = []
        parameters = self.parameters(binding)
        if parameters:
            operation["parameters"] = parameters
        body = self.request_body(binding, path)
        if body is not None:
            operation["requestBody"] = body
        operation["responses"] = {
            **self.success(binding),
            **self.errors(binding, path, has_input=bool(parameters or body), has_body=bool(body)),
        }
        return operation

    # --- requests ---

    def field_at(
        self, message: str, field_path: str
    ) -> tuple[str, descriptor_pb2.FieldDescriptorProto]:
        """The field a dotted path names, with the message it belongs to."""
        *parents, last = field_path.split(".")
        for name in parents:
            message = type_name(self._field(message, name).type_name)
        return message, self._field(message, last)

    def _field(self, message: str, name: str) -> descriptor_pb2.FieldDescriptorProto:
        for field in self.index.messages[message].field:
            if field.name == name:
                return field
        raise ValueError(f"{message} has no field {name!r} (named by an HTTP rule)")

    def parameters(self, binding: Binding) -> list[Schema]:
        bound = path_variables(binding.template)
        parameters = []
        for field_path in bound:
            owner, field = self.field_at(binding.request, field_path)
            parameters.append(self.parameter(owner, field, parameter_name(field_path), "path"))
        if binding.body != "*":
            excluded = {*bound, binding.body}
            required = edge.REQUIRED_QUERY_PARAMETERS.get(binding.key, frozenset())
            for parameter in self.query_parameters(binding.request, "", excluded):
                if parameter["name"] in required:
                    parameter["required"] = True
                parameters.append(parameter)
        if binding.key in edge.RANGE_DOWNLOADS:
            parameters.append(
                {
                    "name": "Range",
                    "in": "header",
                    "required": False,
                    "description": "`bytes=N-`, `bytes=N-M` or `bytes=-N` (the last N): "
                    "answered with 206 and `Content-Range`; any other value is ignored.",
                    "schema": {"type": "string"},
                }
            )
        names = [(parameter["in"], parameter["name"]) for parameter in parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"{binding.key}: two parameters share a name: {names}")
        return parameters

    def query_parameters(self, message: str, prefix: str, excluded: set[str]) -> list[Schema]:
        """The fields of ``message`` as query parameters; a nested message's fields as
        ``<field>.<subfield>``, as the transcoder binds them."""
        parameters = []
        for field in self.index.messages[message].field:
            name = prefix + field.name
            if name in excluded:
                continue
            nested = type_name(field.type_name)
            if nested in WELL_KNOWN and nested not in SCALAR_WELL_KNOWN:
                continue  # a JSON value or object cannot be a query parameter
            if field.type == _F.TYPE_MESSAGE and nested not in SCALAR_WELL_KNOWN:
                if field.label != _F.LABEL_REPEATED and nested in self.index.messages:
                    parameters.extend(self.query_parameters(nested, f"{name}.", excluded))
                continue  # a repeated message or a JSON value cannot be a query parameter
            parameters.append(self.parameter(message, field, name, "query"))
        return parameters

    def parameter(
        self, message: str, field: descriptor_pb2.FieldDescriptorProto, name: str, where: str
    ) -> Schema:
        schema = self.schemas.field_schema(message, field, "in")
        description = schema.pop("description", "")
        schema.pop("readOnly", None)
        schema.pop("writeOnly", None)
        parameter: Schema = {"name": name, "in": where, "required": where == "path"}
        if where == "query" and is_required(field):
            parameter["required"] = True
        if description:
            parameter["description"] = description
        parameter["schema"] = schema
        return parameter

    def request_body(self, binding: Binding, path: str) -> Schema | None:
        if not binding.body:
            return None
        if binding.body != "*":
            owner, field = self.field_at(binding.request, binding.body)
            if type_name(field.type_name) == HTTP_BODY:
                return {
                    "required": True,
                    "description": "The bytes, of any content type.",
                    "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
                }
            schema = self.schemas.field_schema(owner, field, "in")
            body: Schema = {"required": is_required(field)}
            description = schema.pop("description", "")
            if description:
                body["description"] = description
            return {**body, "content": {JSON: {"schema": schema}}}
        # A path variable of a nested field ({device.id}) leaves the rest of its message
        # in the body.
        in_path = {variable for variable in path_variables(binding.template) if "." not in variable}
        message = self.index.messages[binding.request]
        remaining = [field for field in message.field if field.name not in in_path]
        if not remaining:
            return None
        if in_path:
            schema = self.schemas.object_schema(binding.request, "in", exclude=in_path)
        else:
            schema = self.schemas.ref(binding.request, "in")
        legacy_field = edge.LEGACY_ARRAY_BODIES.get(path.rstrip("/"))
        if legacy_field is not None:
            _, entries = self.field_at(binding.request, legacy_field)
            legacy = {
                "type": "array",
                "description": f"The earlier body: the `{legacy_field}` array alone.",
                "items": self.schemas.ref(type_name(entries.type_name), "in"),
            }
            schema = {"oneOf": [schema, legacy]}
        return {
            "required": any(is_required(field) for field in remaining),
            "content": {JSON: {"schema": schema}},
        }

    # --- responses ---

    def success(self, binding: Binding) -> dict[str, Schema]:
        response = binding.response
        description = self.index.comment(response) or "OK"
        if binding.verb == "delete":
            return {"204": {"description": "Done; the body is empty."}}
        literal = edge.LITERAL_BODIES.get(binding.key)
        if literal is not None:
            return {
                "200": {
                    "description": literal.description,
                    "headers": literal.headers,
                    "content": {JSON: {"schema": literal.schema}},
                }
            }
        if binding.method.server_streaming and response == HTTP_BODY:
            return self.download(binding)
        if binding.method.server_streaming:
            return {
                "200": {
                    "description": "A server-sent-event stream: one `data: <JSON>` event per "
                    "response message (`x-event-data-schema`), until the client or the "
                    "server ends it.",
                    "content": {
                        EVENT_STREAM: {
                            "schema": self.event_schema(response),
                            "x-event-data-schema": self.schemas.ref(response, "out"),
                        }
                    },
                }
            }
        if binding.key in edge.BARE_ARRAY_METHODS:
            return {"200": self.bare_array(binding, description)}
        schema = self.schemas.ref(response, "out")
        return {"200": {"description": description, "content": {JSON: {"schema": schema}}}}

    def event_schema(self, response: str) -> Schema:
        """One event of a stream, as an event-stream parser reads it (the fields of
        OpenAPI 3.2's ``itemSchema`` for ``text/event-stream``, which 3.1 lacks: its tools,
        schemathesis among them, read ``schema`` as each event's): the ``data`` is one
        response message as JSON."""
        return {
            "type": "object",
            "description": "One event: its `data` is one response message as JSON.",
            "properties": {
                "data": {
                    "type": "string",
                    "contentMediaType": JSON,
                    "contentSchema": self.schemas.ref(response, "out"),
                },
                "event": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
            },
            "required": ["data"],
        }

    def bare_array(self, binding: Binding, description: str) -> Schema:
        repeated = [
            field
            for field in self.index.messages[binding.response].field
            if field.label == _F.LABEL_REPEATED
        ]
        if len(repeated) != 1:
            raise ValueError(f"{binding.key}: a bare-array list needs one repeated field")
        (field,) = repeated
        items = self.schemas.field_schema(binding.response, field, "out")
        result: Schema = {
            "description": f"The `{field.name}` of the {binding.method.name} response, as a "
            f"bare array. {items.pop('description', '')}".strip(),
            "content": {JSON: {"schema": items}},
        }
        request = self.index.messages[binding.request]
        if any(field.name == "page_token" for field in request.field):
            result["headers"] = {
                edge.NEXT_PAGE_TOKEN_HEADER: {
                    "description": "The next page's `page_token`; absent on the last page.",
                    "schema": {"type": "string"},
                }
            }
        return result

    def download(self, binding: Binding) -> dict[str, Schema]:
        headers: dict[str, Schema] = {
            "ETag": {
                "description": "The SHA-256 of the package, quoted.",
                "schema": {"type": "string"},
            },
            "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
            "Content-Disposition": {"schema": {"type": "string"}},
        }
        content = {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}
        answers = {
            "200": {"description": "The whole package.", "headers": headers, "content": content}
        }
        if binding.key in edge.RANGE_DOWNLOADS:
            answers["206"] = {
                "description": "The range asked for.",
                "headers": {
                    **headers,
                    "Content-Range": {
                        "required": True,
                        "description": "`bytes <first>-<last>/<size>`.",
                        "schema": {"type": "string"},
                    },
                },
                "content": content,
            }
        return answers

    def errors(
        self, binding: Binding, path: str, has_input: bool, has_body: bool
    ) -> dict[str, Schema]:
        statuses = {*edge.EVERY_OPERATION, *edge.ERROR_STATUSES.get(binding.key, ())}
        if has_input:
            statuses.add(edge.WITH_INPUT)
        if binding.key not in edge.PUBLIC_METHODS:
            statuses.add(edge.WITH_TOKEN)
        if has_body:
            statuses.add(edge.WITH_BODY)
        style = edge.error_style(path)
        answers = {}
        for status in sorted(statuses):
            name = edge.error_response_name(style, status)
            self.responses[name] = edge.error_response(style, status)
            answers[str(status)] = {"$ref": f"#/components/responses/{name}"}
        return answers

    def error_code(self) -> Schema:
        """``ErrorReason`` as the REST bodies spell it: without its prefix, never UNSPECIFIED."""
        enum = self.index.enums[ERROR_REASON_ENUM]
        values = [
            (
                value.name.removeprefix(ERROR_REASON_PREFIX),
                self.index.comment(f"{ERROR_REASON_ENUM}.{value.name}"),
            )
            for value in enum.value
            if value.number != 0
        ]
        return enum_schema(self.index.comment(ERROR_REASON_ENUM), values)


def build_document(descriptor_set: bytes) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST surface that ``descriptor_set`` (built with
    ``--include_imports --include_source_info``) describes, ready for ``json.dumps``."""
    index = protos.load(descriptor_set, API_PACKAGE)
    # A first pass finds the messages that travel both ways, which need two schemas.
    discovery = _Builder(index, both_ways=set())
    discovery.document()
    return _Builder(index, both_ways=discovery.schemas.used_both_ways()).document()
