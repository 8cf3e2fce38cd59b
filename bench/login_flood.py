"""How much a flood of wrong passwords slows unrelated calls (issue 10, defect 5).

Starts a throwaway PostgreSQL cluster and ``devicehub serve`` (gRPC + Envoy) on it, then
measures the p95 latency of unrelated REST calls (``GET /api/v1/accounts/me`` from
``--probes`` sequential clients) for ``--duration`` seconds alone, and again while
``--wrong`` wrong-password logins are sent ``--concurrency`` at a time; prints both p95s
and their ratio. The failed-login throttle is raised out of the way (every wrong login is
hashed), so the figure measures bounded password hashing, not the throttle; ``--throttle``
keeps the default limits instead.

    .venv/bin/python bench/login_flood.py [--wrong 500] [--concurrency 8] [--workers 2]

Run it with ``PYTHONPATH=<other checkout>/server`` to measure another version's server.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from devicehub.testing.pgcluster import ThrowawayCluster
from devicehub.testing.stack import DEVICEHUB, free_port, serve_env, start_stack

PASSWORD = "password-123"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def probe(rest: str, token: str, stop: threading.Event, latencies: list[float]) -> None:
    """Sequential unrelated calls until ``stop``; appends each latency (seconds)."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        started = time.perf_counter()
        response = session.get(rest + "/api/v1/accounts/me", headers=headers, timeout=30)
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()


def measure(rest: str, token: str, args: argparse.Namespace, attack: bool) -> dict:
    latencies: list[float] = []
    stop = threading.Event()
    probes = [
        threading.Thread(target=probe, args=(rest, token, stop, latencies))
        for _ in range(args.probes)
    ]
    for thread in probes:
        thread.start()
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    if attack:
        local = threading.local()

        def wrong(index: int) -> int:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            body = {"username": args.username, "password": f"wrong-{index:05d}"}
            return session.post(rest + "/api/v1/auth/token", json=body, timeout=120).status_code

        with ThreadPoolExecutor(args.concurrency) as pool:
            for status in pool.map(wrong, range(args.wrong)):
                statuses[status] = statuses.get(status, 0) + 1
    else:
        time.sleep(args.duration)
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in probes:
        thread.join()
    return {
        "seconds": round(elapsed, 1),
        "probe_calls": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1e3, 1),
        "login_statuses": statuses,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wrong", type=int, default=500, help="wrong-password logins")
    parser.add_argument("--concurrency", type=int, default=8, help="logins at a time")
    parser.add_argument("--probes", type=int, default=2, help="sequential probe clients")
    parser.add_argument("--duration", type=float, default=10.0, help="baseline seconds")
    parser.add_argument("--workers", type=int, default=2, help="DEVICEHUB_WORKERS")
    parser.add_argument("--throttle", action="store_true", help="keep the login throttle")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devicehub-login-flood-"))
    with ThrowawayCluster() as pg:
        env = serve_env(
            work,
            pg.url,
            "bench-secret-key-not-for-production",
            DEVICEHUB_ENVOY_ADMIN_PORT=str(free_port()),  # read by older versions only
            DEVICEHUB_WORKERS=str(args.workers),
        )
        if not args.throttle:
            for name in ("PER_ADDRESS", "PER_USERNAME"):
                env[f"DEVICEHUB_LOGIN_FAILURES_{name}"] = str(10 * args.wrong)
        subprocess.run([DEVICEHUB, "migrate"], env=env, check=True, capture_output=True)
        server = start_stack("postgresql", env, work / "serve.log")
        rest = server.rest_url
        try:
            args.username = "flooded-user"
            registered = requests.post(
                rest + "/api/v1/auth/register",
                json={"username": args.username, "password": PASSWORD},
                timeout=30,
            )
            registered.raise_for_status()
            token = requests.post(
                rest + "/api/v1/auth/token",
                json={"username": args.username, "password": PASSWORD},
                timeout=30,
            ).json()["access_token"]
            measure(rest, token, args, attack=False)  # warm-up
            alone = measure(rest, token, args, attack=False)
            flooded = measure(rest, token, args, attack=True)
        finally:
            server.stop()
    report = {
        "wrong_logins": args.wrong,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "throttle": args.throttle,
        "alone": alone,
        "flooded": flooded,
        "p95_ratio": round(flooded["p95_ms"] / alone["p95_ms"], 2) if alone["p95_ms"] else None,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
