"""The one mapping from domain errors to gRPC codes and REST statuses (api/errors.py), and
the status, detail and trailers ``abort_with`` ends an RPC with."""

from __future__ import annotations

import asyncio
import inspect

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from devicehub import errors
from devicehub.api.errors import (
    HTTP_STATUS_BY_REASON,
    MAX_STATUS_MESSAGE_BYTES,
    STATUSES,
    abort_with,
    grpc_code,
    http_status,
)
from devicehub.throttle import Throttled
from devicehub.v1 import error_pb2

EXPECTED = [
    (errors.DomainError, grpc.StatusCode.UNKNOWN, 500),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION, 409),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 400),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (errors.Internal, grpc.StatusCode.INTERNAL, 500),
]


@pytest.mark.parametrize(("kind", "code", "status"), EXPECTED)
def test_each_error_class_has_its_grpc_code_and_rest_status(kind, code, status):
    error = kind("message")
    assert (grpc_code(error), http_status(error)) == (code, status)


def test_every_error_class_of_the_domain_is_mapped():
    classes = {
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, errors.DomainError)
    }
    assert classes == set(STATUSES) == {kind for kind, _, _ in EXPECTED}


def test_a_subclass_is_answered_like_its_base():
    throttled = Throttled("Too many requests", retry_after=3)
    assert grpc_code(throttled) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert http_status(throttled) == 429


def test_not_authorized_user_is_401_at_the_rest_edge_and_permission_denied_in_grpc():
    error = errors.PermissionDenied(
        "Not authorized user", error_pb2.ERROR_REASON_NOT_AUTHORIZED_USER
    )
    assert grpc_code(error) == grpc.StatusCode.PERMISSION_DENIED
    assert http_status(error) == 401
    assert http_status(errors.PermissionDenied("Only admins may change the device catalog")) == 403


def test_firmware_limits_have_http_statuses_of_their_own():
    too_large = errors.InvalidArgument("too large", error_pb2.ERROR_REASON_FIRMWARE_TOO_LARGE)
    past_the_end = errors.InvalidArgument(
        "past the end", error_pb2.ERROR_REASON_RANGE_NOT_SATISFIABLE
    )
    assert (grpc_code(too_large), http_status(too_large)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        413,
    )
    assert (grpc_code(past_the_end), http_status(past_the_end)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        416,
    )


def test_a_reason_override_applies_to_its_class_only():
    (kind, reason), _ = next(iter(HTTP_STATUS_BY_REASON.items()))
    for other, _, status in EXPECTED:
        if other is not kind:
            assert http_status(other("message", reason)) == status


class _AbortingContext:
    """Records what ``context.abort`` was called with, and raises as grpc.aio does."""

    def __init__(self) -> None:
        self.aborted: tuple = ()

    async def abort(self, code, details, trailing_metadata=()):
        self.aborted = (code, details, tuple(trailing_metadata))
        raise grpc.aio.AbortError()


def _abort(error: errors.DomainError) -> tuple[grpc.StatusCode, str, dict]:
    context = _AbortingContext()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(abort_with(context, error))  # type: ignore[arg-type]
    code, details, trailers = context.aborted
    return code, details, dict(trailers)


def test_abort_sends_the_code_message_error_info_and_rest_trailers():
    error = errors.PermissionDenied(
        "Not authorized user", error_pb2.ERROR_REASON_NOT_AUTHORIZED_USER
    )
    code, details, trailers = _abort(error)
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "Not authorized user")
    assert trailers["devicehub-error-reason"] == "NOT_AUTHORIZED_USER"
    assert trailers["devicehub-http-status"] == "401"
    assert "retry-after" not in trailers
    status = status_pb2.Status.FromString(trailers[rpc_status.GRPC_DETAILS_METADATA_KEY])
    assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("NOT_AUTHORIZED_USER", "devicehub")


def test_abort_of_a_throttled_call_says_when_to_retry():
    _, _, trailers = _abort(Throttled("Too many requests", retry_after=7))
    assert trailers["retry-after"] == "7"
    assert trailers["devicehub-http-status"] == "429"
    assert trailers["devicehub-error-reason"] == "RATE_LIMITED"


def test_abort_bounds_a_long_message():
    _, details, _ = _abort(errors.InvalidArgument("x" * 10_000))
    assert details == "x" * MAX_STATUS_MESSAGE_BYTES + "..."
