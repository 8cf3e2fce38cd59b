"""What the REST edge does that the descriptors cannot tell: the tables the document is
built from besides the protos.

Each table mirrors one place of the service, named beside it; tests/unit/test_openapi.py
holds the mirrors to their originals where those can be read (the public methods, the Lua
filter's legacy body paths and reasons), and tests/stack/test_openapi_document.py checks
live responses against the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from devicehub.api.openapi.schemas import Schema

ErrorStyle = Literal["detail", "status"]

# api/interceptors.py PUBLIC_METHODS: the methods that need no access token.
PUBLIC_METHODS = frozenset(
    {
        "AuthService.Register",
        "AuthService.CreateToken",
        "AuthService.RefreshToken",
        "RtcService.GetRtcTokenByMac",
        "SystemService.Ping",
    }
)

# The list methods whose REST answer is the bare JSON array of the response's one repeated
# field (gateway/rest_edge.lua): their servicer calls rest_edge.send_list_metadata, or, for
# the home screen (the hottest call, spared that metadata operation), their envoy.yaml
# route names the field (rest_array). tests/unit/test_openapi.py checks this list against
# both.
BARE_ARRAY_METHODS = frozenset(
    {
        "AccountService.ListChildren",
        "BindingService.ListChildDevices",
        "BindingService.ListUserDevices",
        "DeviceBatchService.ListDeviceBatches",
        "DeviceService.ListDevices",
        "DeviceTypeService.ListDeviceTypes",
        "FirmwareService.ListDeviceFirmwareUpdates",
        "FirmwareService.ListFirmwarePackages",
        "FirmwareService.ListFirmwareRollouts",
        "FirmwareService.ListFirmwareRolloutUpdates",
    }
)
NEXT_PAGE_TOKEN_HEADER = "x-next-page-token"  # api/rest_edge.py


@dataclass(frozen=True)
class LiteralBody:
    """A body the servicer replaces with literal JSON (rest_edge.send_rest_body)."""

    schema: Schema
    description: str
    headers: dict[str, Schema] = field(default_factory=dict)


LITERAL_BODIES = {
    # servicers/notification.py: the Lux document answers `null`.
    "NotificationService.SendImpedanceAlert": LiteralBody(
        schema={"type": "null"},
        description="Sent, or suppressed within the window: the body is `null` either way.",
        headers={
            "x-alimtalk-outcome": {
                "description": "`sent`, or `suppressed` within the suppression window.",
                "schema": {"type": "string", "enum": ["sent", "suppressed"]},
            }
        },
    ),
}

# gateway/rest_edge.lua LEGACY_ARRAY_PATHS: besides its JSON object, the path takes a bare
# array of the named repeated field's entries (the earlier devlog body).
LEGACY_ARRAY_BODIES = {"/api/v1/lux/device/devlog": "log_arrays"}

# Downloads that honour a Range header (servicers/firmware.py): 206 with Content-Range.
RANGE_DOWNLOADS = frozenset({"FirmwareService.DownloadFirmwarePackage"})

# Query parameters the server requires (400 without them) that the proto cannot mark
# REQUIRED: the fields of a client-streaming request's first message, which the later
# messages (the bytes) leave unset (firmware.PackageUpload).
REQUIRED_QUERY_PARAMETERS = {
    "FirmwareService.UploadFirmwarePackage": frozenset({"device_type", "version", "title"}),
}

# google.protobuf.Value fields: what each holds (api/converters.py, devlog.py).
VALUE_FIELDS: dict[str, Schema] = {
    "devicehub.v1.Device.activated_at": {"type": ["string", "null"], "format": "date-time"},
    "devicehub.v1.ChildDeviceRow.created_at": {"type": ["string", "null"], "format": "date-time"},
    "devicehub.v1.DevlogDetail.finish_flag": {"type": ["integer", "string", "null"]},
}

# The paths their documents give with a trailing slash (the device-interaction module's
# Django routes, and the child accounts in the README); the edge serves every path with
# and without one, and the document lists both, the documented form first.
SLASHED_PREFIXES = (
    "/api/device/device-types",
    "/api/device/device-batches",
    "/api/device/devices",
    "/api/device/user-devices",
    "/api/device/messages",
    "/api/device/rtc-token",
    "/api/v1/accounts/children",
)


def error_style(path: str) -> ErrorStyle:
    """The error body of a path (gateway/rest_edge.lua): the device-interaction module's
    ``{"status", "message", "code"}`` under /api/device, ``{"detail"}`` everywhere else."""
    return "status" if path == "/api/device" or path.startswith("/api/device/") else "detail"


# Every operation can answer these: headers over the edge's limit, a failure of the
# service, an unreachable server or database (the README's "Errors" and "Limits").
EVERY_OPERATION = (431, 500, 503)
WITH_INPUT = 400  # any parameter or body can be malformed or invalid
WITH_TOKEN = 401  # every method but the public ones
WITH_BODY = 413  # a request body over DEVICEHUB_MAX_REQUEST_BYTES

# The statuses of each method besides those above, read from the domain functions it calls
# (the errors they raise, mapped by api/errors.py) and the documents.
ERROR_STATUSES: dict[str, tuple[int, ...]] = {
    "SystemService.Ping": (),
    "AuthService.Register": (409, 429),
    "AuthService.CreateToken": (401, 429),
    "AuthService.RefreshToken": (401,),
    # 404: the account was deleted while the call was on its way (its token not yet refused).
    "AccountService.GetMyAccount": (404,),
    "AccountService.CreateChild": (404,),
    "AccountService.ListChildren": (),
    "AccountService.UpdateChild": (404,),
    "AccountService.DeleteChild": (404,),
    "AccountService.DeleteMyAccount": (),
    "AccountService.ChangeMyPassword": (403,),
    "AccountService.SetAccountAdmin": (403, 404),
    "DeviceTypeService.ListDeviceTypes": (),
    "DeviceTypeService.CreateDeviceType": (403, 409),
    "DeviceTypeService.GetDeviceType": (404,),
    "DeviceTypeService.UpdateDeviceType": (403, 404, 409),
    "DeviceTypeService.DeleteDeviceType": (403, 404, 409),
    "DeviceBatchService.ListDeviceBatches": (),
    "DeviceBatchService.CreateDeviceBatch": (403, 404, 409),
    "DeviceBatchService.GetDeviceBatch": (404,),
    "DeviceBatchService.UpdateDeviceBatch": (403, 404, 409),
    "DeviceBatchService.DeleteDeviceBatch": (403, 404, 409),
    "DeviceService.ListDevices": (),
    "DeviceService.CreateDevice": (403, 404, 409),
    "DeviceService.BatchCreateDevices": (403, 404, 409),
    "DeviceService.GetDevice": (404,),
    "DeviceService.UpdateDevice": (403, 404, 409),
    "DeviceService.DeleteDevice": (403, 404, 409),
    "BindingService.GetChildDevice": (404,),
    "BindingService.ListChildDevices": (),
    "BindingService.ConnectDevice": (404, 409),
    "BindingService.DisconnectDevice": (404,),
    "BindingService.CheckDevice": (404, 409),
    "BindingService.UpdateDeviceAlias": (404, 409),
    "BindingService.ListUserDevices": (),
    "BindingService.BindUserDevice": (404, 409),
    "BindingService.SetPrimaryUserDevice": (404,),
    "BindingService.UnbindUserDevice": (404,),
    "DevlogService.UploadDevlogs": (404, 409),
    "MovementService.UploadMovement": (404, 409),
    "MovementService.ListMovementSamples": (404,),
    "NotificationService.SendImpedanceAlert": (403, 409),
    "MessagingService.SendMessage": (403, 404, 409, 429),
    "MessagingService.SubscribeMessages": (403,),
    "MessagingService.AckMessages": (),
    "RtcService.GenerateRtcToken": (404,),
    "RtcService.GetRtcTokenByMac": (401, 404, 429),
    "RtcService.IssueDeviceSecrets": (403, 404),
    "FirmwareService.UploadFirmwarePackage": (403, 404, 409),
    "FirmwareService.ListFirmwarePackages": (403,),
    "FirmwareService.GetFirmwarePackage": (403, 404),
    "FirmwareService.DeleteFirmwarePackage": (403, 404, 409),
    "FirmwareService.DownloadFirmwarePackage": (404, 416),
    "FirmwareService.ReportFirmware": (404,),
    "FirmwareService.GetInstalledFirmware": (404,),
    "FirmwareService.CheckFirmwareUpdate": (404,),
    "FirmwareService.ReportFirmwareUpdateProgress": (404,),
    "FirmwareService.ListDeviceFirmwareUpdates": (404,),
    "FirmwareService.CreateFirmwareRollout": (403, 404),
    "FirmwareService.ListFirmwareRollouts": (403,),
    "FirmwareService.GetFirmwareRollout": (403, 404),
    "FirmwareService.PauseFirmwareRollout": (403, 404, 409),
    "FirmwareService.ResumeFirmwareRollout": (403, 404, 409),
    "FirmwareService.CancelFirmwareRollout": (403, 404, 409),
    "FirmwareService.ListFirmwareRolloutUpdates": (403, 404),
}

STATUS_DESCRIPTIONS = {
    400: "Malformed (`MALFORMED_REQUEST`: not JSON, a value of the wrong type or out of range, "
    "invalid UTF-8) or invalid (`INVALID_ARGUMENT`, or the operation's own reason).",
    401: "Not authenticated: no, a malformed, an expired (`TOKEN_EXPIRED`) or a revoked token "
    "(`UNAUTHENTICATED`), or the operation's own reason (wrong credentials, a child that is "
    "not the caller's, a device signature).",
    403: "Authenticated but not allowed (`PERMISSION_DENIED`: not an admin, or the operation's "
    "own reason).",
    404: "Not found (the operation's `..._NOT_FOUND` reason).",
    409: "In conflict with the current state (taken, in use, bound, not bound, ...).",
    413: "Request body too large (`REQUEST_TOO_LARGE`; a firmware package: `FIRMWARE_TOO_LARGE`).",
    416: "The range starts at or beyond the end (`RANGE_NOT_SATISFIABLE`).",
    429: "Too many requests (`RATE_LIMITED`, `QUEUE_FULL`); `Retry-After` gives the seconds "
    "until the window ends where the limit is one.",
    431: "Request headers too large (`HEADERS_TOO_LARGE`).",
    500: "Internal error (`INTERNAL`); the body names the request id.",
    503: "Unavailable (`SERVICE_UNAVAILABLE`, a provider's reason, or `STREAM_LIMIT_REACHED`); "
    "the body names the request id.",
}

RETRY_AFTER_HEADER: Schema = {
    "description": "Seconds until the limit's window ends (throttles only).",
    "schema": {"type": "integer", "minimum": 0},
}


def error_schemas(code_ref: Schema) -> dict[str, Schema]:
    """The error bodies of gateway/rest_edge.lua (and envoy.yaml's local replies): exactly
    the documented keys, plus ``request_id`` in a 5xx."""

    def body(style: ErrorStyle, server_error: bool) -> Schema:
        if style == "detail":
            properties: dict[str, Schema] = {
                "detail": {"type": "string", "description": "What went wrong."}
            }
        else:
            properties = {
                "status": {"type": "string", "const": "error"},
                "message": {"type": "string", "description": "What went wrong."},
                "code": code_ref,
            }
        if server_error:
            properties["request_id"] = {
                "type": "string",
                "description": "The request's id (`x-request-id`), to quote when reporting it.",
            }
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    return {
        "DetailError": {
            **body("detail", False),
            "description": "A 4xx outside /api/device (the Lux API's FastAPI-style body).",
        },
        "DetailServerError": {**body("detail", True), "description": "A 5xx outside /api/device."},
        "StatusError": {
            **body("status", False),
            "description": "A 4xx under /api/device (the device-interaction module's body).",
        },
        "StatusServerError": {**body("status", True), "description": "A 5xx under /api/device."},
    }


def error_response_name(style: ErrorStyle, status: int) -> str:
    return f"{style.capitalize()}Error{status}"


def error_response(style: ErrorStyle, status: int) -> Schema:
    """The ``components.responses`` entry of one error status of one path family."""
    family = "Detail" if style == "detail" else "Status"
    schema: Schema = {
        "$ref": f"#/components/schemas/{family}{'ServerError' if status >= 500 else 'Error'}"
    }
    if status == 431 and style == "status":
        # Headers far over the limit are refused before the path is read: {"detail"} then.
        schema = {"anyOf": [schema, {"$ref": "#/components/schemas/DetailError"}]}
    response: Schema = {
        "description": STATUS_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": schema}},
    }
    if status == 429:
        response["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
    return response
