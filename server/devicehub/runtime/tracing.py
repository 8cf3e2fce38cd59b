"""OpenTelemetry tracing of one server process: off unless an OTLP endpoint is configured.

When ``settings.otlp_traces_endpoint`` is set (``DEVICEHUB_OTLP_ENDPOINT`` or the standard
``OTEL_*`` variables, see ``config.py``), each server process (each worker) installs its
own ``TracerProvider``: resource ``service.name`` from ``OTEL_SERVICE_NAME`` (default
``devicehub``), a ``BatchSpanProcessor`` exporting over OTLP/HTTP. Every RPC gets a server
span (``opentelemetry-instrumentation-grpc``'s aio interceptor, first in the chain so the
span covers authentication and error mapping too) and every unit of database work inside
it a child span (``storage/db.py``, through the OpenTelemetry API alone). Spans are
flushed when the server stops.

Off, nothing is installed: no interceptor, no provider, and ``run_db`` does not look for
spans at all.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from devicehub.config import Settings
from devicehub.storage import db

log = logging.getLogger(__name__)

UNTRACED_PREFIXES = ("/grpc.health.v1.",)
# How long stopping waits for the last spans to reach the collector.
FLUSH_TIMEOUT_MS = 5_000

_provider: TracerProvider | None = None


def server_interceptors(settings: Settings) -> tuple[grpc.aio.ServerInterceptor, ...]:
    """The tracing interceptor (to go first in the chain), or none when tracing is off.

    Its tracer is resolved through the global provider, which ``start_tracing`` installs
    when the server starts.
    """
    if not settings.otlp_traces_endpoint:
        return ()
    return (_StreamAwareInterceptor(aio_server_interceptor()),)


def start_tracing(settings: Settings) -> None:
    """Installs this process's tracer provider, exporting to the configured endpoint."""
    global _provider
    if not settings.otlp_traces_endpoint or _provider is not None:
        return
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.service_name}))
    # The batch size, queue and delay follow the standard OTEL_BSP_* variables.
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_traces_endpoint))
    )
    trace.set_tracer_provider(provider)
    db.trace_work(True)
    _provider = provider
    log.info("tracing: spans go to %s", settings.otlp_traces_endpoint)


def stop_tracing() -> None:
    """Flushes the spans not yet exported (bounded) and shuts the provider down."""
    global _provider
    if _provider is None:
        return
    if not _provider.force_flush(FLUSH_TIMEOUT_MS):
        log.warning("tracing: spans not exported within %d ms were dropped", FLUSH_TIMEOUT_MS)
    db.trace_work(False)
    _provider.shutdown()
    _provider = None


class _StreamAwareInterceptor(grpc.aio.ServerInterceptor):
    """The instrumentation's interceptor, also for the server-streaming handlers the inner
    interceptors return, and never for health checks (a load balancer's probes are not
    calls worth a trace).

    The instrumentation wraps every response-streaming behavior as an async generator
    (``async for``), but ``api.interceptors`` hands on streaming behaviors as coroutines
    that write with ``context.write()``; such a handler is wrapped like a unary one (the
    span then covers the whole coroutine, that is the whole stream). That wrapping is the
    instrumentation's ``_intercept_aio_server_unary``, not a public API:
    tests/stack/test_tracing.py streams a subscription with tracing on, and fails if a new
    version of the instrumentation changes it.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(UNTRACED_PREFIXES):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if handler.response_streaming and not inspect.isasyncgenfunction(
            handler.unary_stream or handler.stream_stream
        ):
            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            return factory(
                self._inner._intercept_aio_server_unary(
                    handler.unary_stream or handler.stream_stream, handler_call_details
                ),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def resolved(_details: Any) -> grpc.RpcMethodHandler:
            return handler

        return await self._inner.intercept_service(resolved, handler_call_details)
