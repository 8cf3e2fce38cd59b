"""What the per-call log line and Envoy's access log cost, side by side in one run.

One PostgreSQL cluster with production durability (fsync, synchronous commit, full-page
writes on), one account, and three stacks of the same build, started one after another on
the same database, each measured in turn (twice, interleaved, so drift hits all alike):

- ``quiet``: DEVICEHUB_LOG_LEVEL=WARNING and DEVICEHUB_ACCESS_LOG=off (no call lines, no
  access log);
- ``text``: the shipped defaults: a text call line per RPC (INFO) and Envoy's JSON access
  log on standard output;
- ``json``: the same with DEVICEHUB_LOG_FORMAT=json.

The load is wrk on ``GET /api/v1/accounts/me`` with a token (a REST call through Envoy that
reads the database). Each stack's output goes to a file, as under a service manager.
Metrics are counted in all three (they cannot be switched off). Run:

    .venv/bin/python bench/observability_cost.py [--duration 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wrk

from devicehub.testing.pgcluster import DURABLE_SETTINGS, ThrowawayCluster
from devicehub.testing.stack import serve_env, start_stack

SECRET = "bench-secret-key-not-for-production"
CONFIGURATIONS = {
    "quiet": {"DEVICEHUB_LOG_LEVEL": "WARNING", "DEVICEHUB_ACCESS_LOG": "off"},
    "text": {"DEVICEHUB_LOG_LEVEL": "INFO", "DEVICEHUB_ACCESS_LOG": "-"},
    "json": {
        "DEVICEHUB_LOG_LEVEL": "INFO",
        "DEVICEHUB_ACCESS_LOG": "-",
        "DEVICEHUB_LOG_FORMAT": "json",
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per configuration")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devicehub-observability-"))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGURATIONS}
    with ThrowawayCluster(settings=DURABLE_SETTINGS) as pg:
        token = ""
        for round_ in range(args.rounds):
            for name, settings in CONFIGURATIONS.items():
                env = serve_env(
                    work / name, pg.url, SECRET, DEVICEHUB_WORKERS=str(args.workers), **settings
                )
                stack = start_stack("postgresql", env, work / f"{name}.log")
                try:
                    if not token:
                        _, token = stack.new_user()
                    out = wrk.run(
                        stack.url("/api/v1/accounts/me"),
                        duration=args.duration,
                        threads=2,
                        connections=args.connections,
                        env={"WRK_TOKEN": token},
                        script="token.lua",
                    )
                finally:
                    stack.stop()
                if out["errors"]:
                    raise SystemExit(f"{name}: {out['errors']} failed requests")
                results[name].append(out)
                print(f"round {round_ + 1} {name:5s} {out['rps']:8.0f} req/s", flush=True)
    base = sum(r["rps"] for r in results["quiet"]) / args.rounds
    print(f"\n{'configuration':14s} {'req/s':>8s} {'p99 ms':>7s} {'vs quiet':>8s}")
    for name, runs in results.items():
        rps = sum(r["rps"] for r in runs) / len(runs)
        p99 = max(r["p99_ms"] for r in runs)
        print(f"{name:14s} {rps:8.0f} {p99:7.1f} {rps / base:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
