"""Smoke run of the benchmark on a tiny data set: it keeps working. No timing checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

MEASUREMENTS = {
    "stack_limit_grpc",
    "stack_limit_rest",
    "home_grpc",
    "home_rest",
    "devlog_grpc",
    "devlog_raw_insert",
    "movement_grpc",
    "movement_rest",
    "movement_raw_copy",
}


def test_benchmark_runs_every_measurement(tmp_path: Path):
    output = tmp_path / "bench.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "run.py"),
            "--scale",
            "0.0005",
            "--duration",
            "1",
            "--processes",
            "1",
            "--concurrency",
            "2",
            "--json",
            str(output),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(output.read_text())
    assert set(report["results"]) == MEASUREMENTS
    for name, figures in report["results"].items():
        assert figures["errors"] == 0, name
        assert figures["per_second"] > 0, name
    assert set(report["ratios"]) == {
        "home_grpc",
        "home_rest",
        "devlog_grpc",
        "movement_grpc",
        "movement_rest",
    }
