"""The client interceptor: what every call of every stub gets, in one place.

- ``authorization: Bearer <token>`` metadata with the client's current token (read at each
  call, so a refreshed or replaced token applies to the next call), unless the caller passed
  an ``authorization`` of its own;
- the client's default deadline on unary calls that set none. Streams get none by default: a
  subscription lives for hours and an upload's duration grows with its size;
- retries of idempotent methods after UNAVAILABLE (``retry.RetryPolicy``), within the call's
  deadline; a server stream only while it has delivered nothing, since its caller has seen
  nothing yet;
- every ``grpc.RpcError`` raised as ``ApiError`` (for unary calls when the call returns or
  its future's result is read, for streams while iterating).

Retrying needs the outcome of each attempt, so a unary call's ``future()`` resolves in the
calling thread here; the stubs' plain calls (the way this client is used) are unaffected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import grpc

from devicehub_client.errors import ApiError
from devicehub_client.retry import RetryPolicy


class _CallDetails(
    NamedTuple(
        "_CallDetails",
        [
            ("method", str),
            ("timeout", float | None),
            ("metadata", Sequence[tuple[str, str | bytes]] | None),
            ("credentials", grpc.CallCredentials | None),
            ("wait_for_ready", bool | None),
            ("compression", grpc.Compression | None),
        ],
    ),
    grpc.ClientCallDetails,
):
    """A ``grpc.ClientCallDetails`` the interceptor can build (grpcio's own is private)."""


class ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
):
    """Auth metadata, default deadline, retries and ApiError for every call (see above)."""

    def __init__(
        self,
        token: Callable[[], str | None],
        timeout: float | None,
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._token = token
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep

    def _details(self, details: grpc.ClientCallDetails, timeout: float | None) -> _CallDetails:
        metadata = list(details.metadata or ())
        token = self._token()
        if token and not any(key.lower() == "authorization" for key, _ in metadata):
            metadata.append(("authorization", f"Bearer {token}"))
        return _CallDetails(
            details.method,
            timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def _pause_before_retry(
        self, method: str, error: grpc.RpcError, attempt: int, deadline: float | None
    ) -> bool:
        """Sleeps the backoff and returns True if ``attempt`` is followed by another."""
        if not self._retry.retries(method, error.code(), attempt):
            return False
        delay = self._retry.backoff(attempt)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return False
        self._sleep(delay)
        return True

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        timeout = details.timeout if details.timeout is not None else self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 1
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            outcome = continuation(self._details(details, remaining), request)
            error = outcome.exception()
            if not isinstance(error, grpc.RpcError):
                # A response, or an error of the client itself (e.g. a request of the wrong
                # type), which grpcio raises when the result is read.
                return outcome
            if not self._pause_before_retry(details.method, error, attempt, deadline):
                raise ApiError.from_rpc_error(error) from error
            attempt += 1

    def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        details: grpc.ClientCallDetails,
        request_iterator: Iterator[Any],
    ) -> Any:
        # The request stream can be read only once, so this is never repeated (the only such
        # method, UploadFirmwarePackage, is not idempotent anyway).
        outcome = continuation(self._details(details, details.timeout), request_iterator)
        error = outcome.exception()
        if isinstance(error, grpc.RpcError):
            raise ApiError.from_rpc_error(error) from error
        return outcome

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> ResponseStream:
        deadline = None if details.timeout is None else time.monotonic() + details.timeout

        def start() -> Any:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            return continuation(self._details(details, remaining), request)

        def retry(error: grpc.RpcError, attempt: int) -> bool:
            return self._pause_before_retry(details.method, error, attempt, deadline)

        return ResponseStream(start, retry)


class ResponseStream:
    """The responses of a server-streaming call, raising ApiError; ``cancel()`` ends it.

    Other attributes of grpcio's call (``code()``, ``initial_metadata()``, ...) are those of
    the current attempt."""

    def __init__(
        self, start: Callable[[], Any], retry: Callable[[grpc.RpcError, int], bool]
    ) -> None:
        self._start = start
        self._retry = retry
        self._call = start()
        self._attempt = 1
        self._received = False
        self._canceled = False

    def __iter__(self) -> ResponseStream:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                response = next(self._call)
            except grpc.RpcError as error:
                if self._received or self._canceled or not self._retry(error, self._attempt):
                    raise ApiError.from_rpc_error(error) from error
                self._attempt += 1
                self._call = self._start()
                continue
            self._received = True
            return response

    def cancel(self) -> bool:
        self._canceled = True
        return bool(self._call.cancel())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not grpcio's: never recurse into a half-built instance
            raise AttributeError(name)
        return getattr(self._call, name)
