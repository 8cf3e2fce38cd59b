"""The two cross-cutting concerns of every RPC: who is calling, and how failures look.

``AuthInterceptor`` resolves the caller from the ``authorization`` metadata (the REST
edge forwards the HTTP header as-is) and makes it available through ``current_caller``.
``ErrorInterceptor`` turns ``DomainError`` into a gRPC status with an AIP-193
``ErrorInfo`` detail, plus two trailers the REST edge reads to build the documented error
body: ``devicehub-error-reason`` and ``devicehub-http-status``.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import peewee
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from devicehub.errors import (
    ERROR_DOMAIN,
    INTERNAL_MESSAGE,
    DomainError,
    Internal,
    Unavailable,
)
from devicehub.security import Caller, TokenSigner, token_from_authorization

log = logging.getLogger(__name__)

# Methods callable without an access token.
PUBLIC_METHODS = frozenset(
    {
        "/devicehub.v1.AuthService/Register",
        "/devicehub.v1.AuthService/CreateToken",
        "/devicehub.v1.AuthService/RefreshToken",
        # Devices have no user token; the method answers only for bound, active devices
        # and is rate-limited per MAC address (voice.py).
        "/devicehub.v1.RtcService/GetRtcTokenByMac",
        "/devicehub.v1.SystemService/Ping",
    }
)
PUBLIC_SERVICE_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)

Behavior = Callable[..., Any]


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served."""
    caller = _caller.get()
    if caller is None:  # only reachable from a public method, which must not ask
        raise RuntimeError("current_caller() called outside an authenticated RPC")
    return caller


def _wrap_handler(
    handler: grpc.RpcMethodHandler,
    around: Callable[[grpc.aio.ServicerContext, Callable[[], Awaitable[Any]]], Awaitable[Any]],
) -> grpc.RpcMethodHandler:
    """Returns ``handler`` with each call run inside ``around(context, call)``.

    Handles unary and streaming responses alike: for streaming behaviors ``around``
    wraps the whole stream, so errors raised mid-stream are mapped too.
    """

    def unary(behavior: Behavior) -> Behavior:
        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            return await around(context, lambda: behavior(request_or_iterator, context))

        return wrapped

    def streaming(behavior: Behavior) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):
            return unary(behavior)  # writes with context.write() and returns

        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            async def drain() -> None:
                async for response in behavior(request_or_iterator, context):
                    await context.write(response)

            await around(context, drain)

        return wrapped

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            streaming(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary(handler.stream_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        streaming(handler.stream_stream),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def abort_with(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    """Ends the RPC with ``error`` as a rich status (AIP-193)."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error.reason_name, domain=ERROR_DOMAIN))
    status = rpc_status.to_status(
        status_pb2.Status(code=error.grpc_code.value[0], message=error.message, details=[detail])
    )
    await context.abort(
        status.code,
        status.details,
        trailing_metadata=(
            *status.trailing_metadata,
            ("devicehub-error-reason", error.reason_name),
            ("devicehub-http-status", str(error.http_status)),
        ),
    )


class _PerMethodInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once, on its first call, not on every call."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            wrapped = self._handlers[method] = self.wrap(method, handler)
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class ErrorInterceptor(_PerMethodInterceptor):
    """Maps exceptions to statuses in one place, so servicers never catch to report."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        async def guarded(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[Any]]):
            try:
                return await call()
            except DomainError as error:
                await abort_with(context, error)
            except grpc.aio.AbortError:
                raise
            except (peewee.OperationalError, peewee.InterfaceError):
                log.exception("database unavailable in %s", method)
                await abort_with(context, Unavailable("Database temporarily unavailable"))
            except Exception:
                log.exception("unexpected error in %s", method)
                await abort_with(context, Internal(INTERNAL_MESSAGE))

        return _wrap_handler(handler, guarded)


class AuthInterceptor(_PerMethodInterceptor):
    """Requires a valid access token on every method except the public ones."""

    def __init__(self, signer: TokenSigner) -> None:
        super().__init__()
        self._signer = signer

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method in PUBLIC_METHODS or method.startswith(PUBLIC_SERVICE_PREFIXES):
            return handler

        async def authenticated(context: grpc.aio.ServicerContext, call):
            authorization = dict(context.invocation_metadata() or ()).get("authorization")
            caller = self._signer.verify(token_from_authorization(authorization))
            token = _caller.set(caller)
            try:
                return await call()
            finally:
                _caller.reset(token)

        return _wrap_handler(handler, authenticated)
