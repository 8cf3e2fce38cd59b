"""Domain errors: raised by business code, free of any transport.

Each error has a human message (the documented ``detail``/``message`` text) and a stable
reason from ``devicehub.v1.ErrorReason`` (without its ``ERROR_REASON_`` prefix), the API's
vocabulary of reasons. The class says what kind of failure it is; which gRPC status code
and REST status each kind (and, where a document wants another status, each reason) is
answered with is decided in one place, ``devicehub.api.errors``.
"""

from __future__ import annotations

from devicehub.v1 import error_pb2

INTERNAL_MESSAGE = "Internal server error. Please try again later."


def reason_name(reason: int) -> str:
    """``ERROR_REASON_DEVICE_NOT_FOUND`` -> ``DEVICE_NOT_FOUND``."""
    return error_pb2.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")


class DomainError(Exception):
    """Base class; a subclass names the kind of failure and its default reason."""

    default_reason = error_pb2.ERROR_REASON_INTERNAL

    def __init__(self, message: str, reason: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = self.default_reason if reason is None else reason

    @property
    def reason_name(self) -> str:
        return reason_name(self.reason)


class InvalidArgument(DomainError):
    """The request itself is wrong; the same request can never succeed."""

    default_reason = error_pb2.ERROR_REASON_INVALID_ARGUMENT


class Unauthenticated(DomainError):
    """The caller could not be identified (no, invalid, expired or revoked token)."""

    default_reason = error_pb2.ERROR_REASON_UNAUTHENTICATED


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    default_reason = error_pb2.ERROR_REASON_PERMISSION_DENIED


class NotFound(DomainError):
    """The named resource does not exist (or is not visible to the caller)."""


class AlreadyExists(DomainError):
    """A create or rename collides with a unique value."""


class Conflict(DomainError):
    """The resource's current state forbids the change (in use, locked, bound)."""


class FailedPrecondition(DomainError):
    """The request is well formed but the resource is not in a state that allows it, and
    the caller must change that first (e.g. an update reported out of its sequence)."""


class ResourceExhausted(DomainError):
    """A limit was reached (queue bound, rate limit); retrying later can succeed."""


class Unavailable(DomainError):
    """A dependency (the database, a provider) cannot be reached right now."""

    default_reason = error_pb2.ERROR_REASON_SERVICE_UNAVAILABLE


class Internal(DomainError):
    """A bug or an unexpected state: nothing the caller can fix."""
