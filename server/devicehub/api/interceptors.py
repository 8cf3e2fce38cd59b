"""The two cross-cutting concerns of every RPC: who is calling, and how failures look.

``AuthInterceptor`` resolves the caller from the ``authorization`` metadata (the REST
edge forwards the HTTP header as-is) and makes it available through ``current_caller``.
``ErrorInterceptor`` ends every RPC that raised with the status ``api.errors`` maps its
error to (a ``DomainError``; a lost database as Unavailable; anything else as Internal).
"""

from __future__ import annotations

import contextvars
import inspect
import ipaddress
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import peewee

from devicehub.api import call_context
from devicehub.api.errors import abort_with
from devicehub.api.request_checks import check_request, checked_deserializer
from devicehub.errors import INTERNAL_MESSAGE, DomainError, Internal, Unavailable
from devicehub.security import Caller, TokenSigner, TokenVersionCheck, token_from_authorization

log = logging.getLogger(__name__)

# Methods callable without an access token.
PUBLIC_METHODS = frozenset(
    {
        "/devicehub.v1.AuthService/Register",
        "/devicehub.v1.AuthService/CreateToken",
        "/devicehub.v1.AuthService/RefreshToken",
        # Devices have no user token; the method answers only for bound, active devices,
        # checks the device's signature and is throttled per MAC and address (rtc_grants.py).
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


def wrap_handler(
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


# Envoys on other hosts (DEVICEHUB_TRUSTED_PROXIES), set once per process by the
# composition root: their x-forwarded-for names the client, as on the abstract sockets.
_trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def trust_proxies(networks: Iterable[str]) -> None:
    """Trusts the ``x-forwarded-for`` of TCP peers in ``networks`` (this process)."""
    global _trusted_proxies
    _trusted_proxies = tuple(ipaddress.ip_network(network) for network in networks)


def client_address(context: grpc.aio.ServicerContext) -> str:
    """The address of the client a call comes from, for throttling (see ``address_of``)."""
    peer = urllib.parse.unquote(context.peer() or "")
    return address_of(
        peer, lambda: dict(context.invocation_metadata() or ()).get("x-forwarded-for", "")
    )


def address_of(
    peer: str,
    forwarded: Callable[[], str],
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None,
) -> str:
    """The client of a call from ``peer`` (gRPC's peer string) and its ``x-forwarded-for``.

    A call that arrived on a worker's abstract Unix socket came through Envoy (only Envoy
    connects there; its peer is ``unix:``): Envoy appends the real peer address to
    ``x-forwarded-for`` and trusts nothing a client sent before it, so the rightmost entry
    is the client. So is a call over TCP from a trusted proxy (``trusted``, default
    ``DEVICEHUB_TRUSTED_PROXIES``: an Envoy of ``devicehub gateway`` on another host).
    Any other direct gRPC call's own TCP peer is the client; its x-forwarded-for is
    whatever the client wrote and is ignored.
    """
    scheme, _, rest = peer.partition(":")
    if scheme == "unix":
        return _ip(forwarded().rpartition(",")[2].strip()) or "unix"
    if scheme in ("ipv4", "ipv6"):
        host = _ip(rest.rpartition(":")[0].strip("[]"))
        if not host:
            return peer
        networks = _trusted_proxies if trusted is None else trusted
        if networks and _in_networks(host, networks):
            return _ip(forwarded().rpartition(",")[2].strip()) or host
        return host
    return peer or "unknown"


def _in_networks(
    host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener's IPv4 peer
    return any(address in network for network in networks)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


class PerMethodInterceptor(grpc.aio.ServerInterceptor):
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


class ErrorInterceptor(PerMethodInterceptor):
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

        return wrap_handler(handler, guarded)


class AuthInterceptor(PerMethodInterceptor):
    """Requires a valid access token on every method except the public ones: signed,
    unexpired, and of its account's current token version (not revoked)."""

    def __init__(self, signer: TokenSigner, token_versions: TokenVersionCheck) -> None:
        super().__init__()
        self._signer = signer
        self._token_versions = token_versions

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method in PUBLIC_METHODS or method.startswith(PUBLIC_SERVICE_PREFIXES):
            return handler

        async def authenticated(context: grpc.aio.ServicerContext, call):
            authorization = dict(context.invocation_metadata() or ()).get("authorization")
            caller = self._signer.verify(token_from_authorization(authorization))
            await self._token_versions.check(caller)
            call_context.note_account(caller.account_id)  # for the call's log line
            token = _caller.set(caller)
            try:
                return await call()
            finally:
                _caller.reset(token)

        return wrap_handler(handler, authenticated)


class InputInterceptor(PerMethodInterceptor):
    """Applies the rules every request obeys (``request_checks.checked_deserializer``: no NUL
    in any text, valid UTF-8) before a servicer sees it, so no endpoint can forget them.

    Goes after ``ErrorInterceptor`` in the chain, which maps the InvalidArgument it raises.
    A client stream (the firmware upload) is checked message by message as the servicer
    reads it. Bidirectional streams (none are served) and raw-bytes handlers are left alone.
    """

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        deserializer = checked_deserializer(handler.request_deserializer)
        if handler.stream_unary:
            reader = handler.stream_unary

            async def checked_requests(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                async def each() -> Any:
                    async for request in requests:
                        check_request(request)
                        yield request

                return await reader(each(), context)

            return grpc.stream_unary_rpc_method_handler(
                checked_requests,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.request_streaming:
            return handler
        if handler.unary_unary:
            behavior = handler.unary_unary

            async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
                check_request(request)
                return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(
                checked,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        streaming = handler.unary_stream
        if inspect.isasyncgenfunction(streaming):

            async def checked_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                check_request(request)
                async for response in streaming(request, context):
                    yield response

            wrapped: Behavior = checked_stream
        else:  # writes with context.write() and returns

            async def checked_writes(request: Any, context: grpc.aio.ServicerContext) -> Any:
                check_request(request)
                return await streaming(request, context)

            wrapped = checked_writes

        return grpc.unary_stream_rpc_method_handler(
            wrapped,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
