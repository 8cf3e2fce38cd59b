"""devicehub benchmark: every figure measured beside its baseline, in one run.

Starts a throwaway PostgreSQL cluster and ``devicehub serve`` (gRPC + Envoy) on it, seeds
the data set (bulk SQL), then measures, each for ``--duration`` seconds:

1. stack limit: SystemService.Ping over gRPC, and GET /api/v1/ping through Envoy (wrk);
2. home screen: get-all-device for random accounts, over gRPC and REST (wrk), as a ratio
   to the stack limit of the same path;
3. devlog ingestion: 100-record uploads over gRPC, records/s as a ratio to a raw
   set-based INSERT of the same rows into the same table;
4. movement ingestion: 1000-sample uploads over gRPC and REST (wrk), samples/s as a
   ratio to raw COPY of the same rows into the same table.

Prints a table and writes it as JSON. Usage: ``scripts/bench.sh [--scale 1] [--duration 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc_load
import raw
import seed
import wrk

from devicehub.pgcluster import ThrowawayCluster
from devicehub.security import Caller, TokenSigner

REPO = Path(__file__).resolve().parents[1]
DEVICEHUB = str(Path(sys.executable).parent / "devicehub")
SECRET = "bench-secret-key-not-for-production"

FULL = {
    "roots": 10_000,
    "children": 20_000,
    "devices": 20_000,
    "devlogs": 200_000,
    "movement": 10_000_000,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(result: grpc_load.LoadResult) -> dict[str, float]:
    return {
        "per_second": result.units / result.seconds if result.seconds else 0.0,
        "calls_per_second": result.calls / result.seconds if result.seconds else 0.0,
        "p50_ms": percentile(result.latencies, 0.50) * 1e3,
        "p99_ms": percentile(result.latencies, 0.99) * 1e3,
        "errors": result.errors,
    }


def wait_ready(grpc_target: str, rest: str, process: subprocess.Popen) -> None:
    channel = grpc.insecure_channel(grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("devicehub serve exited")
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1 and (
                requests.get(rest + "/api/v1/ping", timeout=1).status_code == 200
            ):
                channel.close()
                return
        except (grpc.RpcError, requests.ConnectionError):
            pass
        time.sleep(0.2)
    raise SystemExit("devicehub did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="data set size factor")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=16, help="callers per process")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "latest.json")
    args = parser.parse_args()
    sizes = {key: max(1, int(value * args.scale)) for key, value in FULL.items()}
    sizes["devices"] = max(sizes["devices"], args.processes * args.concurrency + 16)
    sizes["children"] = max(sizes["children"], sizes["roots"])
    work = Path(tempfile.mkdtemp(prefix="devicehub-bench-"))
    results: dict[str, dict] = {}

    with ThrowawayCluster(settings={"shared_buffers": "256MB", "max_connections": "300"}) as pg:
        env = {
            **os.environ,
            "DEVICEHUB_DATABASE_URL": pg.url,
            "DEVICEHUB_DATA_DIR": str(work),
            "DEVICEHUB_SECRET_KEY": SECRET,
            "DEVICEHUB_ACCESS_TOKEN_TTL": str(24 * 3600),
            "DEVICEHUB_GRPC_PORT": str(free_port()),
            "DEVICEHUB_HTTP_PORT": str(free_port()),
            "DEVICEHUB_ENVOY_ADMIN_PORT": str(free_port()),
            "DEVICEHUB_WS_PORT": str(free_port()),
            "DEVICEHUB_LOG_LEVEL": "WARNING",
        }
        subprocess.run([DEVICEHUB, "migrate"], env=env, check=True, capture_output=True)
        started = time.perf_counter()
        dataset = seed.seed(pg.url, **sizes)
        print(f"seeded {sizes} in {time.perf_counter() - started:.0f} s", flush=True)

        signer = TokenSigner(SECRET, 24 * 3600, 24 * 3600)
        token_of = {a: signer.issue_access(Caller(a, False)) for a in dataset.accounts}
        tokens_file = work / "tokens.txt"
        tokens_file.write_text("\n".join(token_of.values()) + "\n")
        slots = args.processes * args.concurrency
        service_devices = [(token_of[a], c, d, u) for a, c, d, u in dataset.bound[:slots]]
        wrk_devices = dataset.bound[slots : slots + 8]
        raw_devices = [(d, c) for a, c, d, u in dataset.bound[slots + 8 : slots + 16]]
        devices_file = work / "devices.txt"
        devices_file.write_text("".join(f"{token_of[a]} {c} {d}\n" for a, c, d, u in wrk_devices))

        grpc_target = f"127.0.0.1:{env['DEVICEHUB_GRPC_PORT']}"
        rest = f"http://127.0.0.1:{env['DEVICEHUB_HTTP_PORT']}"
        server = subprocess.Popen([DEVICEHUB, "serve"], env=env, stdout=subprocess.DEVNULL)
        try:
            wait_ready(grpc_target, rest, server)
            load = {
                "processes": args.processes,
                "concurrency": args.concurrency,
                "duration": args.duration,
            }
            wrk_load = {"duration": args.duration, "threads": 2, "connections": 32}

            def grpc_run(name: str, scenario: str, params: dict) -> None:
                results[name] = summary(grpc_load.run(grpc_target, scenario, params, **load))
                print(f"{name}: {results[name]}", flush=True)

            def wrk_run(name: str, url: str, per_request: int = 1, **kwargs) -> None:
                out = wrk.run(rest + url, **wrk_load, **kwargs)
                results[name] = {
                    "per_second": out["rps"] * per_request,
                    "calls_per_second": out["rps"],
                    "p50_ms": out["p50_ms"],
                    "p99_ms": out["p99_ms"],
                    "errors": out["errors"],
                }
                print(f"{name}: {results[name]}", flush=True)

            grpc_run("stack_limit_grpc", "ping", {})
            wrk_run("stack_limit_rest", "/api/v1/ping")
            grpc_run("home_grpc", "home", {"tokens": list(token_of.values())})
            wrk_run(
                "home_rest",
                "/api/v1/lux/device/get-all-device",
                script="home.lua",
                env={"BENCH_TOKENS": str(tokens_file)},
            )
            grpc_run("devlog_grpc", "devlog", {"devices": service_devices, "batch": 100})
            results["devlog_raw_insert"] = summary(
                raw.run(
                    "devlog",
                    pg.url,
                    raw_devices,
                    processes=args.processes,
                    batch=100,
                    duration=args.duration,
                    base=50_000_000,
                )
            )
            grpc_run("movement_grpc", "movement", {"devices": service_devices, "batch": 1000})
            wrk_run(
                "movement_rest",
                "/api/v1/lux/device/movement",
                per_request=1000,
                script="movement.lua",
                env={"BENCH_DEVICES": str(devices_file)},
            )
            results["movement_raw_copy"] = summary(
                raw.run(
                    "movement",
                    pg.url,
                    raw_devices,
                    processes=args.processes,
                    batch=1000,
                    duration=args.duration,
                    base=2_000_000_000,
                )
            )
        finally:
            server.terminate()
            server.wait(30)

    ratios = {
        "home_grpc": ("stack_limit_grpc", 0.50),
        "home_rest": ("stack_limit_rest", 0.50),
        "devlog_grpc": ("devlog_raw_insert", 0.50),
        "movement_grpc": ("movement_raw_copy", 0.50),
        "movement_rest": ("movement_raw_copy", 0.35),
    }
    report = {"sizes": sizes, "load": load, "results": results, "ratios": {}}
    print(
        f"\n{'measurement':<20}{'per second':>14}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'baseline':>20}{'ratio':>8}{'target':>8}"
    )
    for name, figures in results.items():
        base, target = ratios.get(name, (None, None))
        ratio = figures["per_second"] / results[base]["per_second"] if base else None
        if base:
            report["ratios"][name] = {"baseline": base, "ratio": ratio, "target": target}
        ratio_text = "" if ratio is None else f"{ratio:.2f}"
        target_text = "" if target is None else f"{target:.2f}"
        print(
            f"{name:<20}{figures['per_second']:>14,.0f}{figures['p50_ms']:>10.1f}"
            f"{figures['p99_ms']:>10.1f}{base or '':>20}{ratio_text:>8}{target_text:>8}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
