"""Domain errors: raised by business code, turned into a gRPC status in one interceptor.

Each error has a human message (the documented ``detail``/``message`` text) and a stable
reason from ``devicehub.v1.ErrorReason`` (without its ``ERROR_REASON_`` prefix). The
gRPC status code follows gRPC semantics; ``http_status`` is the status the REST edge
must answer with, which differs where the documented contract wants 409 for a state
conflict that gRPC calls FAILED_PRECONDITION.
"""

from __future__ import annotations

import grpc

from devicehub.v1 import error_pb2

ERROR_DOMAIN = "devicehub"
INTERNAL_MESSAGE = "Internal server error. Please try again later."


def reason_name(reason: int) -> str:
    """``ERROR_REASON_DEVICE_NOT_FOUND`` -> ``DEVICE_NOT_FOUND``."""
    return error_pb2.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")


class DomainError(Exception):
    """Base class; subclasses fix the status codes."""

    grpc_code = grpc.StatusCode.UNKNOWN
    http_status = 500
    default_reason = error_pb2.ERROR_REASON_INTERNAL

    def __init__(
        self, message: str, reason: int | None = None, *, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = self.default_reason if reason is None else reason
        if http_status is not None:  # where a documented REST status differs from gRPC's
            self.http_status = http_status

    @property
    def reason_name(self) -> str:
        return reason_name(self.reason)


class InvalidArgument(DomainError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    default_reason = error_pb2.ERROR_REASON_INVALID_ARGUMENT


class Unauthenticated(DomainError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    default_reason = error_pb2.ERROR_REASON_UNAUTHENTICATED


class PermissionDenied(DomainError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    default_reason = error_pb2.ERROR_REASON_PERMISSION_DENIED


class NotFound(DomainError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class AlreadyExists(DomainError):
    """A create or rename collides with a unique value."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class Conflict(DomainError):
    """The resource's current state forbids the change (in use, locked, bound)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class ResourceExhausted(DomainError):
    """A limit was reached (queue bound, rate limit); retrying later can succeed."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class Unavailable(DomainError):
    """A dependency (the database, a provider) cannot be reached right now."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_reason = error_pb2.ERROR_REASON_SERVICE_UNAVAILABLE


class Internal(DomainError):
    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
