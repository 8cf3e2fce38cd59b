"""Two hosts behind one edge, the rules without a stack: ``DEVICEHUB_UPSTREAMS`` and
``DEVICEHUB_TRUSTED_PROXIES`` parsing, the Envoy clusters ``devicehub gateway`` renders
for upstreams (checked by Envoy's own ``--mode validate``), and whose x-forwarded-for
names the client (``address_of``). The topology itself runs in
tests/stack/test_two_hosts.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from devicehub.api.interceptors import address_of
from devicehub.config import Settings, Upstream
from devicehub.runtime.gateway import (
    GRPC_CLUSTER,
    STREAM_CLUSTER,
    WS_CLUSTER,
    render_config,
    validate_config,
)


def settings(**env: str) -> Settings:
    return Settings.from_env({f"DEVICEHUB_{key.upper()}": value for key, value in env.items()})


def test_upstreams_take_host_grpc_port_and_an_optional_websocket_port():
    parsed = settings(
        upstreams=" 10.0.0.2:50051, db-b.internal:50052:9000 ,[fd00::3]:50053", ws_port="8800"
    ).upstreams
    assert parsed == (
        Upstream("10.0.0.2", 50051, 8800),
        Upstream("db-b.internal", 50052, 9000),
        Upstream("fd00::3", 50053, 8800),
    )
    assert settings().upstreams == ()


@pytest.mark.parametrize(
    "raw",
    [
        "10.0.0.2",
        "10.0.0.2:",
        "10.0.0.2:0",
        "10.0.0.2:70000",
        "10.0.0.2:5x",
        "10.0.0.2:1:2:3",
        ":50051",
        "[fd00::3:50051",
        "[fd00::3]50051",
        "10.0.0.2:50051,10.0.0.2:50051",
    ],
)
def test_a_malformed_upstream_stops_start_up(raw):
    with pytest.raises(SystemExit, match="DEVICEHUB_UPSTREAMS"):
        settings(upstreams=raw)


def test_trusted_proxies_are_addresses_or_networks():
    assert settings(trusted_proxies="10.0.0.10, 10.1.2.3/16,::1").trusted_proxies == (
        "10.0.0.10/32",
        "10.1.0.0/16",
        "::1/128",
    )
    with pytest.raises(SystemExit, match="DEVICEHUB_TRUSTED_PROXIES"):
        settings(trusted_proxies="10.0.0.10,gateway.internal")


def rendered(tmp_path: Path, **env: str) -> dict:
    """The gateway's config for ``env``, as Envoy itself validates it."""
    text = render_config(settings(data_dir=str(tmp_path), **env))
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    check = validate_config(path)
    assert check.returncode == 0, check.stdout + check.stderr
    return {c["name"]: c for c in yaml.safe_load(text)["static_resources"]["clusters"]}


def endpoints(cluster: dict) -> list[dict]:
    return [
        e["endpoint"]["address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]


def test_gateway_renders_health_checked_tcp_upstreams(tmp_path):
    clusters = rendered(tmp_path, upstreams="127.0.0.2:50061:8801,127.0.0.3:50062:8802")
    for name in (GRPC_CLUSTER, STREAM_CLUSTER):
        cluster = clusters[name]
        assert cluster["type"] == "STATIC"
        assert endpoints(cluster) == [
            {"socket_address": {"address": "127.0.0.2", "port_value": 50061}},
            {"socket_address": {"address": "127.0.0.3", "port_value": 50062}},
        ]
        (check,) = cluster["health_checks"]
        assert "grpc_health_check" in check
        assert cluster["outlier_detection"]["max_ejection_percent"] == 50
    ws = clusters[WS_CLUSTER]
    assert [a["socket_address"]["port_value"] for a in endpoints(ws)] == [8801, 8802]
    assert "tcp_health_check" in ws["health_checks"][0]
    # The stream limits stay (DEVICEHUB_MAX_STREAMS): only the endpoints changed.
    assert ws["circuit_breakers"]["thresholds"][0]["max_requests"] == Settings().max_streams


def test_host_names_are_resolved_by_envoy(tmp_path):
    clusters = rendered(tmp_path, upstreams="localhost:50061,127.0.0.3:50062")
    assert {clusters[name]["type"] for name in (GRPC_CLUSTER, STREAM_CLUSTER, WS_CLUSTER)} == {
        "STRICT_DNS"
    }


def test_without_upstreams_envoy_reaches_the_local_workers_sockets(tmp_path):
    clusters = rendered(tmp_path, workers="2")
    assert [a["pipe"]["path"] for a in endpoints(clusters[GRPC_CLUSTER])] == [
        "@devicehub-50051-worker-0",
        "@devicehub-50051-worker-1",
    ]
    assert "health_checks" not in clusters[GRPC_CLUSTER]


TRUSTED = (ipaddress.ip_network("10.0.0.10/32"),)


def forwarded(value: str):
    return lambda: value


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        # Envoy on this host, over a worker's abstract socket: the rightmost entry.
        ("unix:", "1.2.3.4, 5.6.7.8", "5.6.7.8"),
        ("unix:", "", "unix"),
        # A trusted gateway on another host, over TCP: the same.
        ("ipv4:10.0.0.10:41000", "1.2.3.4, 5.6.7.8", "5.6.7.8"),
        ("ipv6:[::ffff:10.0.0.10]:41000", "9.9.9.9", "9.9.9.9"),
        ("ipv4:10.0.0.10:41000", "not-an-address", "10.0.0.10"),
        ("ipv4:10.0.0.10:41000", "", "10.0.0.10"),
        # Anyone else: its own address, whatever it wrote.
        ("ipv4:10.0.0.11:41000", "5.6.7.8", "10.0.0.11"),
        ("ipv6:[2001:db8::1]:41000", "5.6.7.8", "2001:db8::1"),
    ],
)
def test_only_trusted_peers_name_the_client(peer, header, client):
    assert address_of(peer, forwarded(header), TRUSTED) == client


def test_nothing_is_trusted_over_tcp_by_default():
    assert address_of("ipv4:127.0.0.1:41000", forwarded("5.6.7.8"), ()) == "127.0.0.1"
