"""Counts and times every RPC for Prometheus (``devicehub_rpc_requests_total`` and
``devicehub_rpc_duration_seconds``, see ``devicehub.metrics``).

It runs outside ``ErrorInterceptor`` (before it in the chain, runtime/bootstrap.py), so the
status it records is the one the client gets, after an exception was mapped to its code. Only
registered methods reach a wrapper (an unknown method is answered UNIMPLEMENTED by gRPC
before any interceptor wraps it), so the method labels stay a fixed, small set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from devicehub import metrics
from devicehub.api.interceptors import PerMethodInterceptor, wrap_handler
from devicehub.api.rest_edge import is_rest_call


def _code(context: grpc.aio.ServicerContext, failure: BaseException | None) -> str:
    if isinstance(failure, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name  # the client went away (or the server stops)
    code = context.code()
    if code is None:
        # A normal return is OK; any other exception escaped every mapping: gRPC answers
        # UNKNOWN for it.
        return grpc.StatusCode.OK.name if failure is None else grpc.StatusCode.UNKNOWN.name
    if isinstance(code, grpc.StatusCode):
        return code.name
    return str(code)


class MetricsInterceptor(PerMethodInterceptor):
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").partition("/")
        # (code, protocol) -> this method's counter and histogram children: looking a
        # child up by its labels takes as long as counting.
        children: dict[tuple[str, str], tuple[Any, Any]] = {}

        def series(code: str, protocol: str) -> tuple[Any, Any]:
            found = children.get((code, protocol))
            if found is None:
                labels = (service, name, code, protocol)
                found = children[(code, protocol)] = (
                    metrics.RPC_REQUESTS.labels(*labels),
                    metrics.RPC_DURATION.labels(*labels),
                )
            return found

        async def measured(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[Any]]):
            started = time.perf_counter()
            failure: BaseException | None = None
            try:
                return await call()
            except BaseException as error:
                failure = error
                raise
            finally:
                protocol = metrics.REST if is_rest_call(context) else metrics.GRPC
                requests, durations = series(_code(context, failure), protocol)
                requests.inc()
                durations.observe(time.perf_counter() - started)

        return wrap_handler(handler, measured)
