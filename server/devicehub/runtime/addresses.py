"""Where each server process listens for Envoy: named once, read by the server that listens
and by the gateway that renders Envoy's upstreams."""

from __future__ import annotations

from devicehub.config import Settings


def worker_address(settings: Settings, index: int) -> str:
    """The name of worker ``index``'s own abstract Unix socket, which Envoy balances over
    (abstract: nothing to clean up; named after the shared gRPC port, which is unique)."""
    return f"devicehub-{settings.grpc_port}-worker-{index}"
