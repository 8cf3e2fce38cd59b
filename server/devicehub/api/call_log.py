"""One log line per RPC, and the request id around it.

``CallLogInterceptor`` goes first in the interceptor tuple (runtime/bootstrap.py): grpc.aio
runs the first interceptor's wrapper outermost, so it opens the call's context
(``call_context``: the request id every log line of the call carries) before anything else
runs, and sees the final status after ``ErrorInterceptor`` has mapped the call's error to
it. A streaming call logs once, when its stream ends.

The line (logger ``devicehub.calls``) names the method, the gRPC code, the duration in
milliseconds, the account when the call was authenticated, how the call arrived (``rest``:
transcoded by the REST edge; ``edge``: native gRPC through Envoy; ``direct``: the gRPC
port) and, through the log format, the request id. Never a token, a password, a device
secret or a message body: nothing of the request but its method is read.

Levels: INFO for every call a client caused, successful or not (a flood of wrong logins must
not raise the log's level), WARNING for the codes of a service failure
(``call_context.SERVER_ERROR_CODES``: the REST 5xx), whose cause ``ErrorInterceptor`` has
logged already.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from devicehub.api import call_context
from devicehub.api.interceptors import PerMethodInterceptor, wrap_handler
from devicehub.api.rest_edge import is_rest_call

log = logging.getLogger("devicehub.calls")


def arrived_via(context: grpc.aio.ServicerContext) -> str:
    """``rest`` (the edge marks what it transcodes), ``edge`` (only Envoy connects on the
    workers' Unix sockets) or ``direct``. For the log only: nothing trusts it."""
    if is_rest_call(context):
        return "rest"
    return "edge" if (context.peer() or "").startswith("unix") else "direct"


def level_of(code: grpc.StatusCode) -> int:
    return logging.WARNING if code in call_context.SERVER_ERROR_CODES else logging.INFO


class CallLogInterceptor(PerMethodInterceptor):
    """Opens each call's context (request id) and logs the call once it has ended."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        async def logged(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[Any]]):
            token = call_context.begin(call_context.request_id_from(context.invocation_metadata()))
            started = time.perf_counter()
            code: grpc.StatusCode | None = None
            try:
                result = await call()
                code = context.code() or grpc.StatusCode.OK
                return result
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:  # the client went away, or the server stops
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                try:
                    _log_call(context, method, code, started)
                finally:
                    call_context.end(token)

        return wrap_handler(handler, logged)


def _log_call(
    context: grpc.aio.ServicerContext,
    method: str,
    code: grpc.StatusCode | None,
    started: float,
) -> None:
    code = code or grpc.StatusCode.UNKNOWN
    level = level_of(code)
    if not log.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    call = call_context.current()
    account_id = call.account_id if call is not None else None
    via = arrived_via(context)
    log.log(
        level,
        "%s %s %.1f ms account=%s via=%s",
        method,
        code.name,
        duration_ms,
        "-" if account_id is None else account_id,
        via,
        extra={
            "method": method,
            "code": code.name,
            "duration_ms": duration_ms,
            "account_id": account_id,
            "via": via,
        },
    )
