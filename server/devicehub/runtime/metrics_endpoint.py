"""The Prometheus scrape endpoint of ``devicehub serve``: ``GET /metrics`` on
``DEVICEHUB_METRICS_HOST:DEVICEHUB_METRICS_PORT`` (loopback by default; port 0: none).

The metrics themselves are defined in ``devicehub.metrics``. How one endpoint shows every
process:

- With several workers, the supervisor empties ``<data_dir>/metrics`` and sets
  ``PROMETHEUS_MULTIPROC_DIR`` to it before it starts them (``prepare_workers``): the
  variable is ``prometheus_client``'s own, read by each worker when it imports the library,
  so every worker keeps its values in files there. The supervisor serves the sum of the
  files (``MultiProcessCollector``) and, when a worker dies, removes its live gauges
  (``process_died``); its counters stay in the totals.
- With one worker the server runs in the supervisor's process and the endpoint serves that
  process's registry (which also has ``prometheus_client``'s ``process_*`` and
  ``python_*`` metrics).

Metrics are not worth refusing service for: a port that cannot be bound is logged as an
error and the service runs without the endpoint (a scrape then fails, which alerts).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

from devicehub.config import Settings

log = logging.getLogger(__name__)

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare_workers(settings: Settings) -> None:
    """Before the workers start: an empty directory for their metric files, named in the
    environment they inherit. Files of an earlier run (dead processes) are removed, so
    every counter starts at 0 with the service."""
    if not settings.metrics_port:
        return
    directory = settings.metrics_dir
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROCESS_VARIABLE] = str(directory)


def process_died(settings: Settings, pid: int | None) -> None:
    """A worker is gone: its live gauges (subscriptions, pool use) leave the sums."""
    if settings.metrics_port and pid is not None:
        multiprocess.mark_process_dead(pid, str(settings.metrics_dir))


class MetricsEndpoint:
    """The HTTP server (a thread of the supervisor) that answers scrapes."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    async def stop(self) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        await asyncio.to_thread(self._thread.join, 5)


def start(settings: Settings, workers: bool) -> MetricsEndpoint | None:
    """Serves the metrics of the worker processes (``workers``) or of this process; None
    when turned off or the port cannot be bound."""
    if not settings.metrics_port:
        return None
    registry = REGISTRY
    if workers:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(settings.metrics_dir))
    try:
        server, thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=registry
        )
    except OSError as error:
        log.error(
            "cannot serve metrics on %s:%d (%s); running without the metrics endpoint",
            settings.metrics_host,
            settings.metrics_port,
            error,
        )
        return None
    return MetricsEndpoint(server, thread)
