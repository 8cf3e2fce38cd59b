"""Smoke run of the benchmark on a tiny data set: it keeps working. No timing checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stack_settings import REPO_ROOT

PHASE = {
    "home_grpc",
    "home_rest",
    "devlog_grpc",
    "devlog_raw_insert",
    "movement_grpc",
    "movement_rest",
    "movement_raw_copy",
    "movement_range_grpc",
}
MEASUREMENTS = {
    "stack_limit_grpc",
    "stack_limit_rest",
    *PHASE,
    "stack_limit_grpc_1_worker",
    "stack_limit_rest_1_worker",
    "home_grpc_1_worker",
    "home_rest_1_worker",
    "stack_limit_rest_20_sse",
    "home_rest_20_sse",
    "fanout_10",
    "fanout_sse_10",
    "fanout_websocket_10",
    *(f"{name}_2x" for name in PHASE),
    # The embedded default, SQLite.
    "stack_limit_grpc_sqlite",
    "stack_limit_rest_sqlite",
    "home_grpc_sqlite",
    "home_rest_sqlite",
    "devlog_grpc_sqlite",
}
FAN_OUTS = ("fanout_10", "fanout_sse_10", "fanout_websocket_10")


def test_benchmark_runs_every_measurement(tmp_path: Path):
    output = tmp_path / "bench.json"
    arguments = {
        "--scale": "0.0005",
        "--duration": "1",
        "--processes": "1",
        "--concurrency": "2",
        "--workers": "2",
        "--fanout-streams": "10",
        "--fanout-sse-streams": "10",
        "--fanout-websocket-streams": "10",
        "--edge-streams": "20",
        "--fanout-streams-per-account": "2",
        "--fanout-rounds": "2",
        "--growth": "2",
        "--sqlite-scale": "0.0005",
        "--json": str(output),
        "--profile": str(tmp_path / "profile"),
    }
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run.py")]
        + [part for pair in arguments.items() for part in pair],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(output.read_text())
    # Durable by default, and the table says so.
    assert report["postgresql_settings"] == {
        "mode": "durable",
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
    }
    assert "PostgreSQL settings: durable (fsync, synchronous_commit, full_page_writes on)" in (
        run.stdout
    )
    assert set(report["results"]) == MEASUREMENTS
    for name, figures in report["results"].items():
        assert figures["errors"] == 0, name
        assert figures["per_second"] > 0, name
    for name in FAN_OUTS:
        fan_out = report["results"][name]
        assert fan_out["lost"] == 0, name
        assert fan_out["duplicates"] == 0, name
        assert fan_out["deliveries"] == fan_out["expected_deliveries"] > 0, name
        assert fan_out["server_rss_mb"] > 0, name
    assert report["results"]["fanout_sse_10"]["transport"] == "sse"
    assert report["results"]["fanout_websocket_10"]["transport"] == "websocket"
    checked = {(c["figure"], c["measure"].split(" ")[0]) for c in report["checks"]}
    ratios = {(name, "throughput") for name in ("home_grpc", "devlog_grpc", "movement_rest")}
    assert ratios <= checked
    assert ("home_grpc", "speed-up") in checked and ("devlog_grpc", "cost") in checked
    for name in FAN_OUTS:
        assert {(name, "p99"), (name, "server"), (name, "deliveries")} <= checked, name
    assert {("fanout_sse_10", "Envoy"), ("fanout_websocket_10", "Envoy")} <= checked
    # The movement store's footprint beside the row layout's, at 1x and grown; the range
    # read's cost at the grown size.
    assert ("movement_range_grpc", "cost") in checked
    for scale in ("_1x", "_2x"):
        store = report["movement_store"][scale]
        assert store["samples"] > 0 and store["baseline_rows"] > 0, scale
        assert store["bytes_per_sample"] > 0 and store["baseline_bytes_per_sample"] > 0, scale
        figure = f"movement_store{scale}"
        measures = {c["measure"] for c in report["checks"] if c["figure"] == figure}
        assert measures == {"bytes per sample on disk", "row layout: bytes per sample"}, scale
    # What the embedded default gives: home screen beside the stack limit, on SQLite.
    sqlite = {c["measure"] for c in report["checks"] if c["figure"].endswith("_sqlite")}
    assert {
        "throughput / stack_limit_grpc_sqlite",
        "throughput / stack_limit_rest_sqlite",
    } <= sqlite
    # Every SSE stream was held through Envoy during the unary calls beside them.
    held = {c["measure"]: c for c in report["checks"] if c["figure"] == "sse_20"}
    assert held["streams held through Envoy"]["value"] == 20
    assert held["held streams that ended early"]["value"] == 0
    # py-spy profiled the server during each measurement, PostgreSQL timed its statements.
    home_profile = (tmp_path / "profile" / "home_grpc.top.txt").read_text()
    assert "ListChildDevices" in home_profile
    assert "home_screen" in home_profile.split("plan ms  exec ms")[1]


def test_firmware_rollout_benchmark_runs(tmp_path: Path):
    """bench/firmware_rollout.py on a small fleet: the rollout covers every device, every
    device that is not skipped is notified, and no queue or pace bound is passed."""
    output = tmp_path / "firmware.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "firmware_rollout.py"),
            "--devices",
            "400",
            "--pace",
            "12000",
            "--json",
            str(output),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    figures = json.loads(output.read_text())
    assert figures["create_updates"] == 400
    assert figures["create_skipped"] == 40  # 5% already on the version, 5% below its minimum
    assert figures["notified"] == figures["due"] == 360
    assert figures["most_in_60s"] <= 12000
    assert figures["largest_queue"] <= figures["queue_limit"]
    assert figures["met"] is True
