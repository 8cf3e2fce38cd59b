"""The OpenAPI document's rules (devicehub.api.openapi): on a small proto of its own, which
codegen compiles as it compiles the real ones, and on the real descriptor set; the tables of
the edge's conventions held to the places they mirror; and the checkout's generated
document held to a fresh build.

The live responses are checked against the document in tests/stack/test_openapi_document.py.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from google.api import annotations_pb2
from openapi_spec_validator import validate

from devicehub import resources
from devicehub.api import interceptors, rest_edge
from devicehub.api.openapi import build_document, edge, schemas
from devicehub.runtime import codegen
from devicehub.v1 import (
    account_pb2,
    auth_pb2,
    binding_pb2,
    device_batch_pb2,
    device_pb2,
    device_type_pb2,
    devlog_pb2,
    error_pb2,
    firmware_pb2,
    messaging_pb2,
    movement_pb2,
    notification_pb2,
    rtc_pb2,
    system_pb2,
)

PROTO_MODULES = (
    account_pb2,
    auth_pb2,
    binding_pb2,
    device_batch_pb2,
    device_pb2,
    device_type_pb2,
    devlog_pb2,
    firmware_pb2,
    messaging_pb2,
    movement_pb2,
    notification_pb2,
    rtc_pb2,
    system_pb2,
)
SERVICERS = resources.PACKAGE_DIR / "api" / "servicers"

WIDGET_PROTO = """\
syntax = "proto3";

package devicehub.v1;

import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/protobuf/timestamp.proto";

// Widgets, for the generator's tests.
service WidgetService {
  // Reads one widget. It has a second sentence.
  rpc GetWidget(GetWidgetRequest) returns (Widget) {
    option (google.api.http) = {
      get: "/api/v1/widgets/{widget.id}"
      additional_bindings {get: "/api/device/widgets/{widget.id}"}
    };
  }

  // Renames a widget.
  rpc RenameWidget(RenameWidgetRequest) returns (Widget) {
    option (google.api.http) = {
      patch: "/api/v1/widgets/{id}/name"
      body: "*"
    };
  }

  // Deletes a widget.
  rpc DeleteWidget(DeleteWidgetRequest) returns (Widget) {
    option (google.api.http) = {delete: "/api/device/widgets/{id}"};
  }
}

// A widget.
message Widget {
  // What kind of widget.
  enum Kind {
    // Never set.
    KIND_UNSPECIFIED = 0;
    // A big one.
    KIND_BIG = 1;
  }

  // Widget id.
  int32 id = 1 [(google.api.field_behavior) = OUTPUT_ONLY];
  // Its name.
  string name = 2 [(google.api.field_behavior) = REQUIRED];
  // A counter too large for a JavaScript number.
  uint64 count = 3;
  // Set or not.
  optional string note = 4;
  // Labels and their weights.
  map<string, int64> labels = 5;
  // When it was made.
  google.protobuf.Timestamp created_at = 6;
  // Its kind.
  Kind kind = 7;
  oneof choice {
    // One choice.
    string left = 8;
    // The other.
    string right = 9;
  }
  // Never printed back.
  string secret = 10 [(google.api.field_behavior) = INPUT_ONLY];
}

// Which widgets.
message Filter {
  // By name.
  string name = 1;
  // By ids.
  repeated int32 ids = 2;
}

message GetWidgetRequest {
  // The widget; its id in the path.
  Widget widget = 1;
  // A nested message: its fields are query parameters.
  Filter filter = 2;
  // Only changes since this one.
  int64 since = 3 [(google.api.field_behavior) = REQUIRED];
  // A repeated message cannot be a query parameter.
  repeated Widget others = 4;
}

message RenameWidgetRequest {
  // Widget id.
  int32 id = 1;
  // The new name.
  string name = 2 [(google.api.field_behavior) = REQUIRED];
}

message DeleteWidgetRequest {
  // Widget id.
  int32 id = 1;
}

enum ErrorReason {
  // Never sent.
  ERROR_REASON_UNSPECIFIED = 0;
  // The widget is gone.
  ERROR_REASON_GONE = 1;
}
"""


@pytest.fixture(scope="module")
def document() -> dict:
    return build_document(resources.DESCRIPTOR_SET.read_bytes())


@pytest.fixture(scope="module")
def widgets(tmp_path_factory) -> tuple[dict, bytes]:
    """The document codegen writes for WIDGET_PROTO, and its descriptor set."""
    root = tmp_path_factory.mktemp("widgets")
    proto = root / "proto" / "devicehub" / "v1" / "widget.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(WIDGET_PROTO)
    codegen.generate(root / "proto", root / "out")
    generated = root / "out" / "devicehub" / "v1"
    descriptor_set = (generated / resources.DESCRIPTOR_SET.name).read_bytes()
    return json.loads((generated / resources.OPENAPI_DOCUMENT.name).read_text()), descriptor_set


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for verb, operation in item.items():
            yield path, verb, operation


def operation(doc: dict, path: str, verb: str) -> dict:
    return doc["paths"][path][verb]


def resolved(doc: dict, answer: dict) -> dict:
    if "$ref" in answer:
        return doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
    return answer


def schema_of(doc: dict, schema: dict) -> dict:
    if "$ref" in schema:
        return doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def json_schema(doc: dict, answer: dict) -> dict:
    return schema_of(doc, resolved(doc, answer)["content"]["application/json"]["schema"])


def parameters(op: dict) -> dict[str, dict]:
    return {parameter["name"]: parameter for parameter in op.get("parameters", ())}


def http_rules() -> list[tuple[str, str, str]]:
    """``(Service.Method, verb, path template)`` of every rule, read from the stubs."""
    rules = []
    for module in PROTO_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                for each in (rule, *rule.additional_bindings):
                    verb = each.WhichOneof("pattern")
                    if verb is not None:
                        rules.append((f"{service.name}.{method.name}", verb, getattr(each, verb)))
    return rules


# --- the rules, on the widget proto ---


def test_the_widget_document_validates_and_is_the_one_codegen_writes(widgets):
    doc, descriptor_set = widgets
    validate(doc)
    assert doc == json.loads(codegen.openapi_json(descriptor_set))


def test_each_rule_and_additional_binding_is_served_with_and_without_a_trailing_slash(widgets):
    doc, _ = widgets
    ids = {path: item["get"]["operationId"] for path, item in doc["paths"].items() if "get" in item}
    assert ids == {
        "/api/v1/widgets/{id}": "WidgetService_GetWidget",
        "/api/v1/widgets/{id}/": "WidgetService_GetWidget_with_slash",
        "/api/device/widgets/{id}": "WidgetService_GetWidget_1",
        "/api/device/widgets/{id}/": "WidgetService_GetWidget_1_with_slash",
    }
    assert (
        "The same operation as `/api/v1/widgets/{id}`."
        in (operation(doc, "/api/v1/widgets/{id}/", "get")["description"])
    )


def test_a_get_takes_every_field_outside_the_path_as_a_query_parameter(widgets):
    doc, _ = widgets
    found = parameters(operation(doc, "/api/v1/widgets/{id}", "get"))
    assert found["id"]["in"] == "path" and found["id"]["required"] is True
    assert found["id"]["description"] == "Widget id."
    assert "readOnly" not in found["id"]["schema"]  # output-only, yet the path names it
    # A nested message binds field by field; a scalar well-known type as one parameter.
    assert found["filter.ids"]["schema"] == {"type": "array", "items": schemas.INT32}
    assert found["widget.created_at"]["schema"] == {"type": "string", "format": "date-time"}
    assert found["since"] == {
        "name": "since",
        "in": "query",
        "required": True,
        "description": "Only changes since this one.",
        "schema": schemas.INT64,
    }
    # Neither a repeated message nor a map (repeated entries) fits a query string.
    assert "others" not in found and "widget.labels" not in found
    assert "requestBody" not in operation(doc, "/api/v1/widgets/{id}", "get")


def test_a_body_star_takes_the_fields_outside_the_path(widgets):
    doc, _ = widgets
    op = operation(doc, "/api/v1/widgets/{id}/name", "patch")
    assert list(parameters(op)) == ["id"]
    assert op["requestBody"]["required"] is True
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert list(body["properties"]) == ["name"] and body["required"] == ["name"]


def test_a_response_requires_every_field_printed_at_its_zero_value(widgets):
    doc, _ = widgets
    widget = json_schema(doc, operation(doc, "/api/v1/widgets/{id}", "get")["responses"]["200"])
    # Not the optional, the oneof members, the message, nor the input-only field.
    assert widget["required"] == ["id", "name", "count", "labels", "kind"]
    properties = widget["properties"]
    assert properties["id"]["readOnly"] is True
    assert properties["secret"]["writeOnly"] is True
    assert properties["count"] == {
        **schemas.UINT64,
        "description": properties["count"]["description"],
    }
    assert properties["labels"]["additionalProperties"] == schemas.INT64
    assert properties["kind"]["$ref"] == "#/components/schemas/Widget.Kind"


def test_comments_become_descriptions(widgets):
    doc, _ = widgets
    assert doc["tags"] == [
        {"name": "WidgetService", "description": "Widgets, for the generator's tests."}
    ]
    op = operation(doc, "/api/v1/widgets/{id}", "get")
    assert op["summary"] == "Reads one widget."
    assert op["description"] == "Reads one widget. It has a second sentence."
    kind = doc["components"]["schemas"]["Widget.Kind"]
    assert kind["enum"] == ["KIND_UNSPECIFIED", "KIND_BIG"]
    assert (
        kind["description"]
        == "What kind of widget.\n\n- `KIND_UNSPECIFIED`: Never set.\n- `KIND_BIG`: A big one."
    )
    error_code = doc["components"]["schemas"]["ErrorCode"]
    assert error_code["enum"] == ["GONE"]  # without the prefix, never UNSPECIFIED


def test_the_error_body_follows_the_path_family(widgets):
    doc, _ = widgets
    lux = operation(doc, "/api/v1/widgets/{id}", "get")["responses"]
    device = operation(doc, "/api/device/widgets/{id}", "get")["responses"]
    assert lux["401"] == {"$ref": "#/components/responses/DetailError401"}
    assert device["401"] == {"$ref": "#/components/responses/StatusError401"}
    assert json_schema(doc, lux["401"])["required"] == ["detail"]
    assert json_schema(doc, lux["500"])["required"] == ["detail", "request_id"]
    assert json_schema(doc, device["401"])["required"] == ["status", "message", "code"]
    assert json_schema(doc, device["503"])["required"] == [
        "status",
        "message",
        "code",
        "request_id",
    ]
    # Headers far over the limit are refused before the path is known: {"detail"}.
    assert resolved(doc, device["431"])["content"]["application/json"]["schema"]["anyOf"][1] == {
        "$ref": "#/components/schemas/DetailError"
    }


def test_a_delete_answers_204_with_no_body_whatever_the_method_returns(widgets):
    doc, _ = widgets
    answers = operation(doc, "/api/device/widgets/{id}/", "delete")["responses"]
    assert answers["204"] == {"description": "Done; the body is empty."}
    assert "200" not in answers


# --- the rules, on the real descriptor set ---


def test_the_document_validates(document):
    validate(document)


def test_every_http_rule_appears_in_both_path_forms(document):
    rules = http_rules()
    assert len(rules) == 65  # a new rule: check the counts in the README's REST API table
    found = {
        (op["x-grpc-method"].removeprefix("/devicehub.v1.").replace("/", "."), verb, path)
        for path, verb, op in operations(document)
    }
    for key, verb, template in rules:
        path = re.sub(r"\{([^}]*\.)?([^}.]+)\}", r"{\2}", template)
        assert (key, verb, path) in found, (key, verb, path)
        assert (key, verb, f"{path}/") in found, (key, verb, path)
    assert len(found) == 2 * len(rules)


def test_operation_ids_are_unique(document):
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)) == 130


def test_every_status_of_every_operation_has_its_body_schema(document):
    for path, verb, op in operations(document):
        answers = op["responses"]
        assert {"431", "500", "503"} <= set(answers), (path, verb)
        if op.get("security") != []:
            assert "401" in answers, (path, verb)
        if "requestBody" in op:
            assert {"400", "413"} <= set(answers), (path, verb)
        for status, answer in answers.items():
            answer = resolved(document, answer)
            if status == "204":
                assert "content" not in answer
                continue
            (media,) = answer["content"].values()
            assert "schema" in media, (path, verb, status)


def test_the_documented_form_of_each_path_comes_first(document):
    paths = list(document["paths"])
    assert paths.index("/api/device/device-types/") < paths.index("/api/device/device-types")
    assert paths.index("/api/v1/accounts/children/") < paths.index("/api/v1/accounts/children")
    assert paths.index("/api/v1/lux/device/devlog") < paths.index("/api/v1/lux/device/devlog/")
    assert (
        operation(document, "/api/device/device-types", "get")["operationId"]
        == "DeviceTypeService_ListDeviceTypes_without_slash"
    )


def test_lists_are_bare_arrays_with_the_next_page_token_header(document):
    answer = operation(document, "/api/device/device-types/", "get")["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]
    assert schema["type"] == "array"
    assert schema["items"] == {"$ref": "#/components/schemas/DeviceType"}
    assert answer["headers"]["x-next-page-token"]["schema"] == {"type": "string"}
    assert {"page_size", "page_token"} <= set(
        parameters(operation(document, "/api/device/device-types/", "get"))
    )
    # The home screen is a bare array too, and has no pages.
    home = operation(document, "/api/v1/lux/device/get-all-device", "get")["responses"]["200"]
    assert home["content"]["application/json"]["schema"]["type"] == "array"
    assert "headers" not in home
    # Movement samples are read back as their response object.
    samples = operation(document, "/api/v1/lux/device/movement", "get")["responses"]["200"]
    assert json_schema(document, samples)["required"] == ["samples", "next_page_token"]


def test_deletes_answer_204(document):
    deletes = [(path, op) for path, verb, op in operations(document) if verb == "delete"]
    assert len(deletes) == 2 * 7
    for _, op in deletes:
        assert op["responses"]["204"] == {"description": "Done; the body is empty."}


def test_64_bit_integers_are_strings_and_32_bit_ones_numbers(document):
    message = document["components"]["schemas"]["DeviceMessage"]["properties"]
    assert message["id"]["type"] == "string" and message["id"]["pattern"] == "^-?[0-9]+$"
    stream = parameters(operation(document, "/api/device/messages/stream/", "get"))
    assert stream["after_id"]["schema"] == schemas.INT64
    assert stream["user_id"]["schema"] == schemas.INT32
    device = document["components"]["schemas"]["Device"]["properties"]
    assert device["id"]["type"] == "integer"


def test_field_behaviour_and_optional_fields(document):
    components = document["components"]["schemas"]
    # A device type travels both ways: the request form requires what REQUIRED marks,
    # the response form every field printed at its zero value.
    assert components["DeviceTypeInput"]["required"] == ["name", "code"]
    assert components["DeviceType"]["required"] == ["id", "name", "code", "description"]
    assert components["DeviceType"]["properties"]["id"]["readOnly"] is True
    assert components["RegisterRequest"]["properties"]["password"]["writeOnly"] is True
    # proto3 optional fields are left out when unset.
    assert "required" not in components["MessagePayload"]
    assert components["SentMessage"].get("required") is None
    update = operation(document, "/api/v1/accounts/children/{id}/", "patch")["requestBody"]
    body = update["content"]["application/json"]["schema"]
    assert list(body["properties"]) == ["first_name", "last_name", "birthdate", "gender"]
    assert "required" not in body and update["required"] is False
    # The documented nulls.
    assert components["Device"]["properties"]["activated_at"]["type"] == ["string", "null"]


def test_query_parameter_posts_of_the_lux_api(document):
    op = operation(document, "/api/v1/lux/device/set-my-device", "post")
    assert "requestBody" not in op
    found = parameters(op)
    assert list(found) == ["serial_code", "mac_id", "unique_id", "real_user_id"]
    assert all(p["in"] == "query" and p["required"] for p in found.values())
    assert list(parameters(operation(document, "/api/v1/lux/device/un-connect", "patch"))) == [
        "unique_id",
        "real_user_id",
    ]


def test_both_devlog_bodies(document):
    body = operation(document, "/api/v1/lux/device/devlog", "post")["requestBody"]
    forms = body["content"]["application/json"]["schema"]["oneOf"]
    assert forms[0] == {"$ref": "#/components/schemas/UploadDevlogsRequest"}
    assert forms[1]["type"] == "array"
    assert forms[1]["items"] == {"$ref": "#/components/schemas/DevlogEntry"}
    flag = document["components"]["schemas"]["DevlogDetail"]["properties"]["finish_flag"]
    assert flag["type"] == ["integer", "string", "null"]


def test_alimtalk_answers_null_with_its_outcome_header(document):
    answer = operation(document, "/api/v1/lux/device/alimtalk", "post")["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {"type": "null"}
    assert answer["headers"]["x-alimtalk-outcome"]["schema"]["enum"] == ["sent", "suppressed"]


def test_firmware_upload_and_download_are_binary(document):
    upload = operation(document, "/api/device/firmware/packages", "post")
    assert upload["requestBody"]["content"] == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    assert {"device_type", "version", "title", "release_notes", "min_version"} <= set(
        parameters(upload)
    )
    assert "413" in upload["responses"]
    download = operation(document, "/api/device/firmware/packages/{id}/download", "get")
    assert parameters(download)["Range"]["in"] == "header"
    answers = download["responses"]
    assert (
        set(answers["200"]["content"])
        == set(answers["206"]["content"])
        == {"application/octet-stream"}
    )
    assert answers["206"]["headers"]["Content-Range"]["required"] is True
    assert "416" in answers


def test_the_message_stream_is_server_sent_events(document):
    answer = operation(document, "/api/device/messages/stream/", "get")["responses"]["200"]
    media = answer["content"]["text/event-stream"]
    assert media["x-event-data-schema"] == {
        "$ref": "#/components/schemas/SubscribeMessagesResponse"
    }


def test_each_event_of_the_stream_carries_a_message_as_json(document):
    """schemathesis (tests/stack/test_openapi_conformance.py) reads a 3.1 event stream's
    ``schema`` as each event's, as OpenAPI 3.2's ``itemSchema``."""
    answer = operation(document, "/api/device/messages/stream/", "get")["responses"]["200"]
    event = answer["content"]["text/event-stream"]["schema"]
    assert event["required"] == ["data"]
    assert event["properties"]["data"]["contentMediaType"] == "application/json"
    assert event["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/SubscribeMessagesResponse"
    }


def test_request_fields_take_what_the_transcoder_parses(document):
    """Found by the schemathesis run: the transcoder reads null as unset, a 64-bit integer
    as a number too, and a single value, null elements or nested lists as a list."""
    components = document["components"]["schemas"]
    register = components["RegisterRequest"]["properties"]
    assert register["last_name"]["type"] == ["string", "null"]
    assert register["username"]["type"] == "string"  # REQUIRED: null is refused
    target = components["CreateFirmwareRolloutRequest"]["properties"]["target"]
    assert target["anyOf"] == [
        {"$ref": "#/components/schemas/FirmwareRolloutTargetInput"},
        {"type": "null"},
    ]
    ids = components["AckMessagesRequest"]["properties"]["ids"]
    id_schema = {"type": ["string", "integer"], "pattern": "^-?[0-9]+$"}
    assert ids["anyOf"] == [
        {"type": "array", "items": {"anyOf": [id_schema, {"type": "null"}, {"type": "array"}]}},
        id_schema,
    ]
    # Responses print one form only.
    assert components["DeviceMessage"]["properties"]["id"]["type"] == "string"
    assert components["Device"]["properties"]["mac_address"]["type"] == "string"


def test_the_firmware_uploads_first_message_fields_are_required(document):
    upload = parameters(operation(document, "/api/device/firmware/packages", "post"))
    required = {name for name, parameter in upload.items() if parameter["required"]}
    assert required == {"device_type", "version", "title"}


def test_security_bearer_and_token_schemes(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["tokenAuth"]["type"] == "apiKey"
    assert schemes["tokenAuth"]["name"] == "Authorization"
    assert document["security"] == [{"bearerAuth": []}, {"tokenAuth": []}]
    public = {op["x-grpc-method"] for _, _, op in operations(document) if op.get("security") == []}
    assert public == set(interceptors.PUBLIC_METHODS)


def test_error_codes_are_the_error_reasons_without_their_prefix(document):
    codes = document["components"]["schemas"]["ErrorCode"]["enum"]
    assert codes == [
        name.removeprefix("ERROR_REASON_")
        for name in (value.name for value in error_pb2.ErrorReason.DESCRIPTOR.values)
        if name != "ERROR_REASON_UNSPECIFIED"
    ]
    assert (
        "- `DEVICE_NOT_FOUND`: No device with that id (or those identifiers)."
        in (document["components"]["schemas"]["ErrorCode"]["description"])
    )


# --- the tables, held to what they mirror ---


def test_every_method_with_a_rule_has_its_error_statuses():
    assert set(edge.ERROR_STATUSES) == {key for key, _, _ in http_rules()}


def test_public_methods_are_the_interceptors():
    assert {f"/devicehub.v1.{key.replace('.', '/')}" for key in edge.PUBLIC_METHODS} == set(
        interceptors.PUBLIC_METHODS
    )


def _methods_marked_by_routes() -> set[str]:
    """The methods whose envoy.yaml route names their bare array (rest_array)."""
    config = yaml.safe_load(resources.ENVOY_TEMPLATE.read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    marked = set()
    for host in manager["typed_config"]["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            lua = route.get("metadata", {}).get("filter_metadata", {})
            if "rest_array" in lua.get("envoy.filters.http.lua", {}):
                path = route["match"]["path"]
                marked.add(path.removeprefix("/devicehub.v1.").replace("/", "."))
    return marked


def test_bare_array_methods_are_those_whose_servicer_or_route_marks_the_list():
    marked = _methods_marked_by_routes()
    for module in SERVICERS.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ClassDef):
                service = node.name.removesuffix("Servicer") + "Service"
                for method in node.body:
                    if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
                        continue
                    calls = {
                        getattr(call.func, "id", None)
                        for call in ast.walk(method)
                        if isinstance(call, ast.Call)
                    }
                    if "send_list_metadata" in calls:
                        marked.add(f"{service}.{method.name}")
    assert marked == edge.BARE_ARRAY_METHODS


def test_headers_are_spelled_as_the_edge_spells_them():
    assert edge.NEXT_PAGE_TOKEN_HEADER == rest_edge.NEXT_PAGE_TOKEN_HEADER
    alimtalk = edge.LITERAL_BODIES["NotificationService.SendImpedanceAlert"]
    assert list(alimtalk.headers) == [rest_edge.ALIMTALK_OUTCOME_HEADER]


def test_legacy_array_bodies_are_the_lua_filters():
    source = resources.LUA_FILTER.read_text()
    declared = re.search(r"^local LEGACY_ARRAY_PATHS = \{(.*)\}$", source, re.MULTILINE)
    assert declared is not None
    pairs = dict(re.findall(r'\["([^"]+)"\] = "([^"]+)"', declared.group(1)))
    assert pairs == edge.LEGACY_ARRAY_BODIES


def test_every_code_the_edge_itself_sends_is_an_error_code(document):
    codes = set(document["components"]["schemas"]["ErrorCode"]["enum"])
    lua = resources.LUA_FILTER.read_text()
    defaults = re.search(r"local DEFAULT_REASONS = \{(.*?)\n\}", lua, re.DOTALL)
    assert defaults is not None
    sent = set(re.findall(r'"([A-Z_]+)"', defaults.group(1)))
    sent |= {"STREAM_LIMIT_REACHED", "INTERNAL"}  # the stream limit, and the fallback
    envoy = resources.ENVOY_TEMPLATE.read_text()
    sent |= set(re.findall(r"^\s+code: ([A-Z_]+)$", envoy, re.MULTILINE))
    assert {"MALFORMED_REQUEST", "ROUTE_NOT_FOUND", "REQUEST_TOO_LARGE"} <= sent <= codes


def test_every_value_field_says_what_it_holds():
    value_fields = set()
    for module in PROTO_MODULES:
        pending = list(module.DESCRIPTOR.message_types_by_name.values())
        while pending:
            message = pending.pop()
            pending.extend(message.nested_types)
            for field in message.fields:
                if field.message_type is not None and (
                    field.message_type.full_name == "google.protobuf.Value"
                ):
                    value_fields.add(field.full_name)
    assert value_fields == set(edge.VALUE_FIELDS)


def test_the_edge_prints_json_as_the_schemas_assume():
    config = yaml.safe_load(resources.ENVOY_TEMPLATE.read_text())
    (listener,) = config["static_resources"]["listeners"]
    (manager,) = listener["filter_chains"][0]["filters"]
    (transcoder,) = [
        f
        for f in manager["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    ]
    assert transcoder["typed_config"]["print_options"] == {
        "add_whitespace": False,
        "always_print_primitive_fields": True,  # zero values printed: response `required`
        "always_print_enums_as_ints": False,  # enums as names
        "preserve_proto_field_names": True,  # proto names, not json_name
        "stream_sse_style_delimited": True,  # streams as server-sent events
    }


# --- the generated file ---


def test_the_checkout_document_matches_a_fresh_build_of_the_protos(tmp_path: Path):
    """Fails when the protos changed without `python -m devicehub.runtime.codegen` (run by
    scripts/bootstrap.sh): the document, never committed, would be stale."""
    codegen.generate(codegen.PROTO_ROOT, tmp_path)
    fresh = tmp_path / "devicehub" / "v1" / resources.OPENAPI_DOCUMENT.name
    assert resources.OPENAPI_DOCUMENT.read_text() == fresh.read_text()
