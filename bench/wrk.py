"""Runs wrk (REST load) and reads its summary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent / "wrk"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run(
    url: str,
    *,
    duration: float,
    threads: int,
    connections: int,
    script: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """Requests/s, p50/p99 latency (ms) and counts of one wrk run."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (scripts/bench.sh does)")
    command = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script:
        command += ["-s", str(SCRIPTS / script)]
    output = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    seconds = float(re.search(r"requests in ([\d.]+)(s|m)", output).group(1))
    return {
        "requests": requests,
        "errors": errors,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        # Anchored: a "+/- Stdev" column such as "81.50%" must not match.
        "p50_ms": _ms(re.search(r"^\s+50%[ \t]+(\S+)", output, re.M).group(1)),
        "p99_ms": _ms(re.search(r"^\s+99%[ \t]+(\S+)", output, re.M).group(1)),
        "seconds": seconds,
    }
