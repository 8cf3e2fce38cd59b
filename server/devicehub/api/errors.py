"""How a domain error looks on the wire: the one mapping from error to transport status.

A ``DomainError``'s class (and, where a document wants another REST status, its reason)
decides the gRPC status code a native client sees and the HTTP status the Envoy REST edge
(``gateway/rest_edge.lua``) answers with. ``abort_with`` ends an RPC with that status, an
AIP-193 ``ErrorInfo`` detail, and two trailers the edge reads to build the documented error
body: ``devicehub-error-reason`` and ``devicehub-http-status``.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from devicehub.api import call_context
from devicehub.api.call_context import SERVER_ERROR_CODES
from devicehub.api.rest_edge import ERROR_REASON_TRAILER, HTTP_STATUS_TRAILER, REQUEST_ID_HEADER
from devicehub.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from devicehub.v1 import error_pb2

ERROR_DOMAIN = "devicehub"
"""The ``ErrorInfo.domain`` of every error this service reports."""


@dataclass(frozen=True)
class Statuses:
    """What one kind of error is answered with on each transport."""

    grpc_code: grpc.StatusCode
    http_status: int


# gRPC codes follow gRPC semantics; REST statuses are the documented ones.
STATUSES: dict[type[DomainError], Statuses] = {
    DomainError: Statuses(grpc.StatusCode.UNKNOWN, 500),
    InvalidArgument: Statuses(grpc.StatusCode.INVALID_ARGUMENT, 400),
    Unauthenticated: Statuses(grpc.StatusCode.UNAUTHENTICATED, 401),
    PermissionDenied: Statuses(grpc.StatusCode.PERMISSION_DENIED, 403),
    NotFound: Statuses(grpc.StatusCode.NOT_FOUND, 404),
    AlreadyExists: Statuses(grpc.StatusCode.ALREADY_EXISTS, 409),
    # The documented contracts want 409 for a state conflict that gRPC calls
    # FAILED_PRECONDITION.
    Conflict: Statuses(grpc.StatusCode.FAILED_PRECONDITION, 409),
    FailedPrecondition: Statuses(grpc.StatusCode.FAILED_PRECONDITION, 400),
    ResourceExhausted: Statuses(grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    Unavailable: Statuses(grpc.StatusCode.UNAVAILABLE, 503),
    Internal: Statuses(grpc.StatusCode.INTERNAL, 500),
}

# Where a document fixes another REST status for one reason of a class; the gRPC code
# stays the class's.
HTTP_STATUS_BY_REASON: dict[tuple[type[DomainError], int], int] = {
    # The Lux API documents 401 `Not authorized user` for a child that is not the caller's.
    (PermissionDenied, error_pb2.ERROR_REASON_NOT_AUTHORIZED_USER): 401,
    # HTTP's own statuses for a body over the firmware limit and a range past the end.
    (InvalidArgument, error_pb2.ERROR_REASON_FIRMWARE_TOO_LARGE): 413,
    (InvalidArgument, error_pb2.ERROR_REASON_RANGE_NOT_SATISFIABLE): 416,
}


def _kind(error: DomainError) -> type[DomainError]:
    """The class of ``error`` the mapping knows: itself or its nearest mapped base (a
    subclass such as ``throttle.Throttled`` is answered like its base)."""
    return next(cls for cls in type(error).__mro__ if cls in STATUSES)


def grpc_code(error: DomainError) -> grpc.StatusCode:
    return STATUSES[_kind(error)].grpc_code


def http_status(error: DomainError) -> int:
    kind = _kind(error)
    return HTTP_STATUS_BY_REASON.get((kind, error.reason), STATUSES[kind].http_status)


# Status messages travel in HTTP/2 trailers (twice: grpc-message and the details), which
# clients and Envoy limit to a few KiB: a message quoting a huge request value would turn a
# 400 into a transport error (502 at the REST edge). Documented messages are far shorter.
MAX_STATUS_MESSAGE_BYTES = 512


def _bounded_message(message: str) -> str:
    raw = message.encode("utf-8", "replace")
    if len(raw) <= MAX_STATUS_MESSAGE_BYTES:
        return raw.decode("utf-8")
    return raw[:MAX_STATUS_MESSAGE_BYTES].decode("utf-8", "ignore") + "..."


async def abort_with(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    """Ends the RPC with ``error`` as a rich status (AIP-193)."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error.reason_name, domain=ERROR_DOMAIN))
    details = [detail]
    code = grpc_code(error)
    # A failure of the service names the call's request id (trailer and RequestInfo), for
    # the user to quote; the REST edge puts Envoy's id into the body instead.
    request_id = call_context.current_request_id() if code in SERVER_ERROR_CODES else None
    if request_id is not None:
        details.append(any_pb2.Any())
        details[-1].Pack(error_details_pb2.RequestInfo(request_id=request_id))
    message = _bounded_message(error.message)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=details)
    )
    # A throttled call says when to retry (REST: the Retry-After header).
    retry_after = getattr(error, "retry_after", None)
    await context.abort(
        status.code,
        status.details,
        trailing_metadata=(
            *status.trailing_metadata,
            (ERROR_REASON_TRAILER, error.reason_name),
            (HTTP_STATUS_TRAILER, str(http_status(error))),
            *((("retry-after", str(retry_after)),) if retry_after is not None else ()),
            *(((REQUEST_ID_HEADER, request_id),) if request_id is not None else ()),
        ),
    )
