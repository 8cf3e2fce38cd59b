"""devicehub benchmark: every figure measured beside its baseline, in one run.

Starts a throwaway PostgreSQL cluster and ``devicehub serve`` (gRPC + Envoy) on it, seeds
the data set (bulk SQL), then measures, each for ``--duration`` seconds:

1. stack limit: SystemService.Ping over gRPC, and GET /api/v1/ping through Envoy (wrk);
2. home screen: get-all-device for random accounts, over gRPC and REST (wrk), as a ratio
   to the stack limit of the same path;
3. devlog ingestion: 100-record uploads over gRPC, records/s as a ratio to a raw
   set-based INSERT of the same rows into the same table;
4. movement ingestion: 1000-sample uploads over gRPC and REST (wrk), samples/s as a
   ratio to raw COPY of the same samples into the row layout the chunks replaced (a
   baseline table with its primary key); then a one-hour range read of one device over
   gRPC, and the store's bytes per sample on disk beside the row layout's;
5. streams beside unary calls: 5,000 SSE subscriptions held through Envoy while the REST
   stack limit and home screen are measured again (none may be refused or fail);
6. workers: the stack limit and home screen again with one worker process, for the
   1 -> N speed-up;
7. fan-out: 1,000 and 5,000 subscription streams held by one server process, a text
   message to every subscribed account per round; delivery latency and server memory;
   then 5,000 server-sent-event streams through Envoy and 5,000 WebSocket streams, alike;
8. growth: the data set grown to 10x, home screen, ingestion (and their baselines), the
   range read and the bytes per sample again; the cost per request as a ratio to the 1x
   figure;
9. the embedded default, SQLite: a smaller data set seeded into a SQLite file and the
   stack on it; stack limit, home screen and devlog ingestion again.

The cluster runs with PostgreSQL's durable settings (fsync, synchronous_commit,
full_page_writes on), as a production database does; ``--fast-unsafe`` switches them off
for quick local runs, and the table's header says which settings a run used.

Prints a table and writes it as JSON. Usage: ``scripts/bench.sh [--scale 1] [--duration 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout
import grpc_load
import movement_store
import raw
import seed
import sqlite_seed
import wrk

from devicehub.security import Caller, TokenSigner
from devicehub.storage.movement_chunks import week_start
from devicehub.testing.pgcluster import DEFAULT_SETTINGS, DURABLE_SETTINGS, ThrowawayCluster
from devicehub.testing.stack import DEVICEHUB, Stack, serve_env, start_stack

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-key-not-for-production"

FULL = {
    "roots": 10_000,
    "children": 20_000,
    "devices": 20_000,
    "devlogs": 200_000,
    "movement": 10_000_000,
}
SQLITE = "_sqlite"  # suffix of the figures measured on the embedded default


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


class Bench:
    """The database (``backend``: postgresql or sqlite), the seeded data set and the server
    under test, for one run; figures go to ``results``."""

    def __init__(
        self,
        args: argparse.Namespace,
        backend: str,
        database_url: str,
        work: Path,
        results: dict[str, dict],
    ) -> None:
        self.args = args
        self.backend = backend
        self.database_url = database_url
        self.work = work
        self.env = serve_env(work, database_url, SECRET, DEVICEHUB_ACCESS_TOKEN_TTL=str(24 * 3600))
        self.grpc_target = f"127.0.0.1:{self.env['DEVICEHUB_GRPC_PORT']}"
        self.rest = f"http://127.0.0.1:{self.env['DEVICEHUB_HTTP_PORT']}"
        self.signer = TokenSigner(SECRET, 24 * 3600, 24 * 3600)
        self.results = results
        self.stream_holds: dict[int, dict] = {}
        self.footprints: dict[str, dict] = {}
        self.accounts: list[int] = []
        self.bound: list[tuple[int, int, int, str]] = []
        self.server: Stack | None = None
        self.load = {
            "processes": args.processes,
            "concurrency": args.concurrency,
            "duration": args.duration,
        }
        self.wrk_load = {"duration": args.duration, "threads": 2, "connections": 32}

    def migrate(self) -> None:
        subprocess.run([DEVICEHUB, "migrate"], env=self.env, check=True, capture_output=True)

    def seed(self, sizes: dict[str, int], part: int) -> None:
        started = time.perf_counter()
        if self.backend == "sqlite":
            dataset = sqlite_seed.seed(self.database_url, **sizes)
        else:
            dataset = seed.seed(self.database_url, **sizes, part=part)
            self.sql("CHECKPOINT")  # the load's dirty pages written now, not while measuring
        self.accounts += dataset.accounts
        self.bound += dataset.bound
        print(f"seeded {sizes} in {time.perf_counter() - started:.0f} s", flush=True)
        tokens = (self.token(a) for a in self.accounts)
        (self.work / "tokens.txt").write_text("\n".join(tokens) + "\n")

    def token(self, account_id: int, admin: bool = False) -> str:
        return self.signer.issue_access(Caller(account_id, admin))

    def start_server(self, workers: int) -> None:
        self.stop_server()
        env = {**self.env, "DEVICEHUB_WORKERS": str(workers)}
        self.server = start_stack(self.backend, env, self.work / "serve.log")

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @contextlib.contextmanager
    def profiled(self, name: str) -> Iterator[None]:
        """With ``--profile DIR``: py-spy samples the server (every worker, the threads
        holding the GIL: where its Python time goes) and PostgreSQL counts each statement's
        planning and execution time meanwhile."""
        if self.args.profile is None or self.server is None:
            yield
            return
        postgresql = self.backend == "postgresql"
        self.args.profile.mkdir(parents=True, exist_ok=True)
        output = self.args.profile / f"{name}.txt"
        command = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(self.server.process.pid),
            "--subprocesses",
            "--gil",
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        if postgresql:
            self.sql(STATEMENT_STATS_RESET)
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
            top = profile_summary(output.read_text()) if output.exists() else "no samples\n"
            statements = statement_summary(self.sql(STATEMENT_STATS)) if postgresql else ""
            (self.args.profile / f"{name}.top.txt").write_text(top + "\n" + statements)

    def sql(self, query: str) -> list[tuple]:
        with psycopg2.connect(self.database_url) as connection, connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchall() if cursor.description else []

    def grpc_run(self, name: str, scenario: str, params: dict) -> None:
        with self.profiled(name):
            result = grpc_load.run(self.grpc_target, scenario, params, **self.load)
        self.record(name, summary(result))

    def wrk_run(self, name: str, url: str, per_request: int = 1, **kwargs) -> None:
        with self.profiled(name):
            out = wrk.run(self.rest + url, **self.wrk_load, **kwargs)
        self.record(
            name,
            {
                "per_second": out["rps"] * per_request,
                "calls_per_second": out["rps"],
                "p50_ms": out["p50_ms"],
                "p99_ms": out["p99_ms"],
                "errors": out["errors"],
            },
        )

    def raw_run(self, name: str, kind: str, batch: int, first_id: int) -> None:
        slots = self.args.processes * self.args.concurrency
        devices = [(d, c) for a, c, d, u in self.bound[slots + 8 : slots + 16]]
        result = raw.run(
            kind,
            self.database_url,
            devices,
            processes=self.args.processes,
            batch=batch,
            duration=self.args.duration,
            base=first_id,
        )
        self.record(name, summary(result))

    def record(self, name: str, figures: dict) -> None:
        self.results[name] = figures
        print(f"{name}: {figures}", flush=True)

    def stack_limit_and_home(self, suffix: str = "") -> None:
        self.grpc_run(f"stack_limit_grpc{suffix}", "ping", {})
        self.wrk_run(f"stack_limit_rest{suffix}", "/api/v1/ping")
        self.home(suffix)

    def home(self, suffix: str) -> None:
        tokens = (self.work / "tokens.txt").read_text().split()
        self.grpc_run(f"home_grpc{suffix}", "home", {"tokens": tokens})
        self.home_rest(suffix)

    def home_rest(self, suffix: str) -> None:
        self.wrk_run(
            f"home_rest{suffix}",
            "/api/v1/lux/device/get-all-device",
            script="home.lua",
            env={"BENCH_TOKENS": str(self.work / "tokens.txt")},
        )

    def upload_params(self, first_id: int) -> dict:
        """The gRPC uploaders' devices (one per caller slot); ``first_id`` keeps the ids
        and timestamps of a later run clear of an earlier one's."""
        slots = self.args.processes * self.args.concurrency
        devices = [(self.token(a), c, d, u) for a, c, d, u in self.bound[:slots]]
        return {"devices": devices, "first_id": first_id}

    def devlog(self, suffix: str, first_id: int) -> None:
        """100-record devlog uploads over gRPC."""
        params = {**self.upload_params(first_id), "batch": 100}
        self.grpc_run(f"devlog_grpc{suffix}", "devlog", params)

    def ingestion(self, suffix: str, first_id: int, first_ts: int) -> None:
        """Devlog and movement uploads, each beside its raw baseline; movement timestamps
        from ``first_ts`` on (each uploading device its own, clear of the seeded ones)."""
        slots = self.args.processes * self.args.concurrency
        wrk_devices = self.bound[slots : slots + 8]
        devices_file = self.work / "devices.txt"
        devices_file.write_text("".join(f"{self.token(a)} {c} {d}\n" for a, c, d, u in wrk_devices))
        params = self.upload_params(first_id)
        self.devlog(suffix, first_id)
        self.raw_run(f"devlog_raw_insert{suffix}", "devlog", 100, 50_000_000 + first_id)
        movement = {**params, "batch": 1000, "first_ts": first_ts}
        self.grpc_run(f"movement_grpc{suffix}", "movement", movement)
        self.wrk_run(
            f"movement_rest{suffix}",
            "/api/v1/lux/device/movement",
            per_request=1000,
            script="movement.lua",
            env={"BENCH_DEVICES": str(devices_file), "BENCH_FIRST_TS": str(first_ts)},
        )
        self.raw_run(f"movement_raw_copy{suffix}", "movement", 1000, 2_500_000_000 + first_id)

    def movement_range(self, suffix: str) -> None:
        """One device's seeded hour read back over gRPC (ListMovementSamples, one page), for
        random devices the uploads did not touch; then what the store takes on disk."""
        slots = self.args.processes * self.args.concurrency
        readers = [(self.token(a), c, d) for a, c, d, u in self.bound[slots + 16 :]]
        start = seed.movement_start()
        params = {"readers": readers or [(self.token(a), c, d) for a, c, d, u in self.bound]}
        params.update(start=start, end=start + 3600)
        self.grpc_run(f"movement_range_grpc{suffix}", "movement_range", params)
        figures = movement_store.footprint(self.database_url)
        self.footprints[suffix or "_1x"] = figures
        print(f"movement_store{suffix or '_1x'}: {figures}", flush=True)

    def edge_streams(self, streams: int) -> None:
        """The REST stack limit and home screen again while ``streams`` server-sent-event
        subscriptions are held open through Envoy (bench/sse_streams.py, a process of its
        own): streams must neither be refused nor take unary calls down."""
        holder = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve().parent / "sse_streams.py"),
                "--url",
                self.rest,
                "--tokens",
                str(self.work / "tokens.txt"),
                "--streams",
                str(streams),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            opened = json.loads(holder.stdout.readline() or "{}")
            self.wrk_run(f"stack_limit_rest_{streams}_sse", "/api/v1/ping")
            self.home_rest(f"_{streams}_sse")
        finally:
            holder.stdin.close()
            closed = json.loads(holder.stdout.readline() or "{}")
            holder.wait(120)
        self.stream_holds[streams] = {**opened, **closed}
        print(f"sse_{streams}: {self.stream_holds[streams]}", flush=True)

    def fan_out(self, streams: int, transport: str = "grpc") -> None:
        """``streams`` subscriptions over ``transport`` (gRPC to the server, SSE and
        WebSocket through Envoy), messages sent over gRPC; with one worker, the server
        process holds them all."""
        assert self.server is not None
        subscribers = sorted({a for a, _, _, _ in self.bound})
        name = f"fanout_{streams}" if transport == "grpc" else f"fanout_{transport}_{streams}"
        server_pid = self.server.process.pid
        with self.profiled(name):
            figures = fanout.run(
                self.grpc_target,
                self.token(self.accounts[0], admin=True),
                [(a, self.token(a)) for a in subscribers],
                streams=streams,
                streams_per_account=self.args.fanout_streams_per_account,
                rounds=self.args.fanout_rounds,
                send_rate=self.args.fanout_rate,
                processes=self.args.processes,
                server_pid=server_pid,
                transport=transport,
                edge=self.rest,
                edge_pid=child_pid(server_pid, "envoy"),
            )
        self.record(name, figures)


def child_pid(parent: int, name: str) -> int | None:
    """The pid of a child process of ``parent`` whose command name starts with ``name``
    (Envoy, which ``devicehub serve`` runs), None if there is none."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command, _, rest = text.partition("(")[2].rpartition(")")
        if command.startswith(name) and int(rest.split()[1]) == parent:
            return int(stat.parent.name)
    return None


def sqlite_default(args: argparse.Namespace, results: dict[str, dict]) -> None:
    """The embedded default (``devicehub serve`` without DEVICEHUB_DATABASE_URL): a
    SQLite file seeded with a smaller data set (``--sqlite-scale``), the same worker
    count; stack limit, home screen and devlog uploads, each figure suffixed SQLITE."""
    work = Path(tempfile.mkdtemp(prefix="devicehub-bench-sqlite-"))
    database = f"sqlite:///{work / 'devicehub.sqlite3'}"
    bench = Bench(args, "sqlite", database, work, results)
    bench.migrate()
    bench.seed(sqlite_sizes(args), part=0)
    try:
        bench.start_server(args.workers)
        bench.stack_limit_and_home(SQLITE)
        bench.devlog(SQLITE, first_id=0)
    finally:
        bench.stop_server()


def data_sizes(args: argparse.Namespace, scale: float) -> dict[str, int]:
    """FULL at ``scale``, with a device for every load slot and a child per account."""
    sizes = {key: max(1, int(value * scale)) for key, value in FULL.items()}
    slots = args.processes * args.concurrency
    sizes["devices"] = max(sizes["devices"], slots + 16)
    sizes["children"] = max(sizes["children"], sizes["roots"])
    return sizes


def sqlite_sizes(args: argparse.Namespace) -> dict[str, int]:
    """The SQLite phase's data set: no movement samples (the movement store's figures are
    PostgreSQL's)."""
    sizes = data_sizes(args, args.sqlite_scale)
    del sizes["movement"]
    return sizes


def postgresql_settings(args: argparse.Namespace) -> dict[str, str]:
    """The durability settings of the run's cluster."""
    chosen = DEFAULT_SETTINGS if args.fast_unsafe else DURABLE_SETTINGS
    return {name: chosen[name] for name in DURABLE_SETTINGS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="data set size factor")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=16, help="callers per process")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="server worker processes"
    )
    parser.add_argument(
        "--fanout-streams",
        type=int,
        nargs="*",
        default=[1000, 5000],
        help="stream counts of the fan-out measurements",
    )
    parser.add_argument(
        "--fanout-streams-per-account",
        type=int,
        default=10,
        help="subscription streams per account (a family's devices)",
    )
    parser.add_argument(
        "--fanout-sse-streams",
        type=int,
        nargs="*",
        default=[5000],
        help="stream counts of the fan-out measurements over server-sent events (Envoy)",
    )
    parser.add_argument(
        "--fanout-websocket-streams",
        type=int,
        nargs="*",
        default=[5000],
        help="stream counts of the fan-out measurements over the WebSocket (Envoy)",
    )
    parser.add_argument("--fanout-rounds", type=int, default=5, help="messages per account")
    parser.add_argument("--fanout-rate", type=float, default=100.0, help="sends per second")
    parser.add_argument(
        "--edge-streams",
        type=int,
        nargs="*",
        default=[5000],
        help="SSE streams held through Envoy while unary REST calls are measured",
    )
    parser.add_argument("--growth", type=int, default=10, help="data set factor of growth")
    parser.add_argument(
        "--sqlite-scale",
        type=float,
        default=0.1,
        help="data set size factor of the SQLite (embedded default) phase; 0: no such phase",
    )
    parser.add_argument(
        "--fast-unsafe",
        action="store_true",
        help="PostgreSQL without fsync, synchronous_commit and full_page_writes: quicker, "
        "not what a production database gives",
    )
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "latest.json")
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory for py-spy profiles of the server during each measurement",
    )
    args = parser.parse_args()
    sizes = data_sizes(args, args.scale)
    work = Path(tempfile.mkdtemp(prefix="devicehub-bench-"))

    # No autovacuum: it would vacuum the freshly loaded 10-100 million rows in the middle
    # of later measurements. Seeding analyzes and checkpoints instead; during the run the
    # tables only grow by the measurements' inserts.
    settings = {
        **postgresql_settings(args),
        "shared_buffers": "512MB",
        "max_connections": "300",
        "max_wal_size": "4GB",
        "autovacuum": "off",
    }
    if args.profile is not None:
        settings["shared_preload_libraries"] = "pg_stat_statements"
        settings["pg_stat_statements.track_planning"] = "on"
    results: dict[str, dict] = {}
    with ThrowawayCluster(settings=settings) as pg:
        bench = Bench(args, "postgresql", pg.url, work, results)
        bench.migrate()
        if args.profile is not None:
            bench.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        bench.seed(sizes, part=0)
        try:
            bench.start_server(args.workers)
            bench.stack_limit_and_home()
            # Uploads into this week (partitions exist two weeks ahead), the growth
            # phase's three days later: clear of the seeded samples and of each other.
            this_week = week_start(int(time.time()))
            bench.ingestion("", first_id=0, first_ts=this_week)
            bench.movement_range("")
            for streams in args.edge_streams:
                bench.edge_streams(streams)
            if args.workers > 1:
                bench.start_server(1)
                bench.stack_limit_and_home("_1_worker")
            else:
                bench.start_server(1)
            for streams in args.fanout_streams:
                bench.fan_out(streams)
            # A fresh server process for each: its memory is not returned after a run, so a
            # later fan-out's RSS would start from the earlier one's high-water mark.
            for streams in args.fanout_sse_streams:
                bench.start_server(1)
                bench.fan_out(streams, "sse")
            for streams in args.fanout_websocket_streams:
                bench.start_server(1)
                bench.fan_out(streams, "websocket")
            if args.growth > 1:
                bench.stop_server()
                more = {key: value * (args.growth - 1) for key, value in sizes.items()}
                bench.seed(more, part=1)
                bench.start_server(args.workers)
                bench.home(f"_{args.growth}x")
                grown = f"_{args.growth}x"
                bench.ingestion(grown, first_id=100_000_000, first_ts=this_week + 3 * 86400)
                bench.movement_range(grown)
        finally:
            bench.stop_server()
    if args.sqlite_scale > 0:
        sqlite_default(args, results)
    report = build_report(args, sizes, results, bench.stream_holds, bench.footprints)
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


# (figure, its baseline, the target ratio): throughput ratios that must reach the target.
RATIO_TARGETS = (
    ("home_grpc", "stack_limit_grpc", 0.50),
    ("home_rest", "stack_limit_rest", 0.50),
    ("devlog_grpc", "devlog_raw_insert", 0.35),
    ("movement_grpc", "movement_raw_copy", 1.0),
    ("movement_rest", "movement_raw_copy", 0.8),
)
SPEED_UP = ("stack_limit_grpc", "stack_limit_rest", "home_grpc", "home_rest")
GROWTH = (
    "home_grpc",
    "home_rest",
    "devlog_grpc",
    "movement_grpc",
    "movement_rest",
    "movement_range_grpc",
    "devlog_raw_insert",
    "movement_raw_copy",
)
GROWTH_TARGET = 1.3
MOVEMENT_BYTES_PER_SAMPLE = 8.0
FANOUT_P99_MS = 250.0
FANOUT_RSS_MB = 400.0
# SQLite figures: (figure, its baseline), informational ratios (no target).
SQLITE_RATIOS = (
    ("home_grpc", "stack_limit_grpc"),
    ("home_rest", "stack_limit_rest"),
)
SQLITE_BESIDE_POSTGRESQL = ("home_grpc", "home_rest", "devlog_grpc")


STATEMENT_STATS_RESET = "SELECT pg_stat_statements_reset()"
STATEMENT_STATS = """
SELECT calls, total_plan_time / calls, total_exec_time / calls, query
FROM pg_stat_statements
WHERE calls > 0 AND query NOT LIKE '%pg_stat_statements%'
ORDER BY total_plan_time + total_exec_time DESC
LIMIT 15
"""


def statement_summary(rows: list[tuple]) -> str:
    """PostgreSQL's side of a measurement: the statements that took the most time."""
    lines = ["calls  plan ms  exec ms  statement"]
    for calls, plan_ms, exec_ms, query in rows:
        text = " ".join(query.split())
        lines.append(f"{calls:5d}  {plan_ms:7.3f}  {exec_ms:7.3f}  {text[:160]}")
    return "\n".join(lines) + "\n"


def profile_summary(collapsed: str, top: int = 40) -> str:
    """The functions with the most samples in a py-spy raw (collapsed stacks) profile:
    on-CPU self time (the innermost frame) and inclusive time (anywhere on the stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def build_report(
    args: argparse.Namespace,
    sizes: dict[str, int],
    results: dict,
    stream_holds: dict,
    footprints: dict,
) -> dict:
    """The figures, and each comparison the issue asks for, with its target."""
    checks: list[dict] = []

    def check(figure: str, measure: str, value: float, target: float | None, met: bool | None):
        checks.append(
            {"figure": figure, "measure": measure, "value": value, "target": target, "met": met}
        )

    for name, base, target in RATIO_TARGETS:
        if name in results and base in results:
            ratio = results[name]["per_second"] / results[base]["per_second"]
            check(name, f"throughput / {base}", ratio, target, ratio >= target)
    for name in SPEED_UP:
        one = results.get(f"{name}_1_worker")
        if name in results and one:
            speed_up = results[name]["per_second"] / one["per_second"]
            check(name, f"speed-up {args.workers} workers / 1", speed_up, None, None)
    grown = f"_{args.growth}x"
    for name in GROWTH:
        if name in results and name + grown in results:
            cost = results[name]["per_second"] / results[name + grown]["per_second"]
            target = GROWTH_TARGET if not name.endswith(("_raw_insert", "_raw_copy")) else None
            met = cost <= target if target else None
            check(name, f"cost per request at {args.growth}x / 1x", cost, target, met)
    for scale, store in footprints.items():
        per_sample = store["bytes_per_sample"]
        target = MOVEMENT_BYTES_PER_SAMPLE
        check(f"movement_store{scale}", "bytes per sample on disk", per_sample, target,
              per_sample <= target)  # fmt: skip
        baseline = store["baseline_bytes_per_sample"]
        check(f"movement_store{scale}", "row layout: bytes per sample", baseline, None, None)
    for name, figures in results.items():
        if name.startswith("fanout_"):
            p99 = figures["p99_ms"]
            check(name, "p99 delivery ms", p99, FANOUT_P99_MS, p99 < FANOUT_P99_MS)
            rss = figures["server_rss_mb"]
            check(name, "server RSS MB", rss, FANOUT_RSS_MB, rss < FANOUT_RSS_MB)
            check(name, "deliveries lost", figures["lost"], 0, figures["lost"] == 0)
            edge_rss = figures["edge_rss_mb"]
            if figures["transport"] != "grpc" and edge_rss is not None:
                # SSE is transcoded there, WebSockets relayed: the edge's share of the cost.
                check(name, "Envoy RSS MB", edge_rss, None, None)
    for name, base in SQLITE_RATIOS:
        figure, limit = name + SQLITE, base + SQLITE
        if figure in results and limit in results:
            ratio = results[figure]["per_second"] / results[limit]["per_second"]
            check(figure, f"throughput / {limit}", ratio, None, None)
    for name in SQLITE_BESIDE_POSTGRESQL:
        if name + SQLITE in results and name in results:
            ratio = results[name + SQLITE]["per_second"] / results[name]["per_second"]
            check(name + SQLITE, f"throughput / {name} on PostgreSQL", ratio, None, None)
    for streams, hold in stream_holds.items():
        name = f"sse_{streams}"
        refused = sum(n for status, n in hold.get("refused", {}).items() if status != "200")
        held, ended = hold.get("held", 0), hold.get("ended_early", streams)
        check(name, "streams held through Envoy", held, streams, held == streams)
        check(name, "streams refused", refused, 0, refused == 0)
        check(name, "held streams that ended early", ended, 0, ended == 0)
        for base in ("stack_limit_rest", "home_rest"):
            figure = f"{base}_{streams}_sse"
            if figure in results and base in results:
                ratio = results[figure]["per_second"] / results[base]["per_second"]
                check(figure, f"throughput / {base} without streams", ratio, None, None)
                errors = results[figure]["errors"]
                check(figure, "errors", errors, 0, errors == 0)
    return {
        "postgresql_settings": {
            "mode": "fast-unsafe" if args.fast_unsafe else "durable",
            **postgresql_settings(args),
        },
        "sizes": sizes,
        "sqlite_sizes": sqlite_sizes(args) if args.sqlite_scale > 0 else None,
        "workers": args.workers,
        "growth": args.growth,
        "load": {
            "processes": args.processes,
            "concurrency": args.concurrency,
            "duration": args.duration,
        },
        "results": results,
        "movement_store": footprints,
        "checks": checks,
    }


def print_table(report: dict) -> None:
    """Markdown tables: every measurement, then every comparison with its target; the
    header line says which PostgreSQL settings the run used."""
    pg = report["postgresql_settings"]
    switches = ", ".join(name for name in DURABLE_SETTINGS)
    state = "on" if pg["mode"] == "durable" else "off: not production figures"
    print(f"\nPostgreSQL settings: {pg['mode']} ({switches} {state})")
    print("\n| measurement | per second | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for name, figures in report["results"].items():
        print(
            f"| {name} | {figures['per_second']:,.0f} | {figures['p50_ms']:.1f}"
            f" | {figures['p99_ms']:.1f} | {figures['errors']} |"
        )
    print("\n| figure | measure | value | target | met |")
    print("|---|---|---:|---:|---|")
    for item in report["checks"]:
        target = "" if item["target"] is None else f"{item['target']:g}"
        met = {True: "yes", False: "**no**", None: ""}[item["met"]]
        print(f"| {item['figure']} | {item['measure']} | {item['value']:,.2f} | {target} | {met} |")


if __name__ == "__main__":
    sys.exit(main())
