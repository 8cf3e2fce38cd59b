"""ApiError: every failed call, with the service's ``ErrorReason``.

devicehub answers every error with a rich status (AIP-193): the gRPC code, a message, and a
``google.rpc.ErrorInfo`` detail whose ``reason`` is the stable ``ErrorReason`` name without
its prefix (``DEVICE_NOT_FOUND`` for ``ERROR_REASON_DEVICE_NOT_FOUND``, see
``proto/devicehub/v1/error.proto``); a server failure adds a ``RequestInfo`` with the id to
quote. Programs branch on ``reason`` (stable) rather than on the message (for people) or the
code (too coarse: NOT_FOUND covers a missing device and a missing batch alike). Errors that
never reached the service (a refused connection, a deadline) have the code and no reason.
"""

from __future__ import annotations

import contextlib

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class ApiError(Exception):
    """A call that failed: ``code`` (grpc.StatusCode), ``reason`` (the ``ErrorReason`` name,
    "" when the status has none), ``message``; ``str()`` reads "REASON: message (CODE)"."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        *,
        metadata: dict[str, str] | None = None,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, reason)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = metadata or {}
        """``ErrorInfo.metadata``: more about the error, when the service gives it."""
        self.request_id = request_id
        """The server's id of the failed call (server failures only), for a bug report."""
        self.retry_after = retry_after
        """Seconds after which a throttled call (RATE_LIMITED) may be repeated."""

    def __str__(self) -> str:
        prefix = f"{self.reason}: " if self.reason else ""
        return f"{prefix}{self.message} ({self.code.name})"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ApiError:
        """The ApiError for a failed call of grpcio (its RpcError is also the grpc.Call)."""
        if isinstance(error, grpc.Call):
            code, message = error.code(), error.details() or ""
            trailers = error.trailing_metadata() or ()
        else:  # an RpcError that is no call (grpcio raises none such itself)
            code, message, trailers = grpc.StatusCode.UNKNOWN, str(error), ()
        reason, metadata, request_id = "", {}, ""
        status = _rich_status(error)
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason, metadata = info.reason, dict(info.metadata)
                elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
                    request = error_details_pb2.RequestInfo()
                    detail.Unpack(request)
                    request_id = request.request_id
        retry_after = None
        for key, value in trailers:
            if key == "retry-after":
                with contextlib.suppress(TypeError, ValueError):
                    retry_after = float(value)
        return cls(
            code,
            message,
            reason,
            metadata=metadata,
            request_id=request_id,
            retry_after=retry_after,
        )


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` in the error's trailers, if it has one that agrees with
    the call's code and message (grpc_status refuses one that does not)."""
    if not isinstance(error, grpc.Call):
        return None
    try:
        return rpc_status.from_call(error)
    except ValueError:
        return None
