"""Baselines: the same rows written straight into the same tables, no service in between.

Each of P processes writes batches in their own transactions for a fixed time, like the
service does per request: devlog rows with a set-based ``INSERT ... SELECT FROM unnest``,
movement samples with ``COPY`` into the baseline table, the row layout with its key.
"""

from __future__ import annotations

import io
import multiprocessing
import time

import psycopg2
from grpc_load import LoadResult
from seed import MOVEMENT_BASELINE

_DEVLOG_INSERT = (
    "INSERT INTO devlog (device_id, child_id, log_file_id, treatment_date, finish_flag,"
    " last_intensity, treatment_time, is_temp, created_at, updated_at)"
    " SELECT %s, %s, f, '2026-01-02 10:00:00', 1, 3, 600, false, now(), now()"
    " FROM unnest(%s::integer[]) AS f"
)


def _devlog(url: str, device_id: int, child_id: int, batch: int, duration: float, base: int):
    latencies: list[float] = []
    rows = 0
    with psycopg2.connect(url) as connection:
        deadline = time.perf_counter() + duration
        started = time.perf_counter()
        sequence = 0
        while time.perf_counter() < deadline:
            ids = list(range(base + sequence * batch, base + (sequence + 1) * batch))
            sequence += 1
            t0 = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(_DEVLOG_INSERT, (device_id, child_id, ids))
            connection.commit()
            latencies.append(time.perf_counter() - t0)
            rows += batch
        elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), 0, rows, elapsed, latencies)


def _movement(url: str, device_id: int, child_id: int, batch: int, duration: float, base: int):
    latencies: list[float] = []
    rows = 0
    with psycopg2.connect(url) as connection:
        deadline = time.perf_counter() + duration
        started = time.perf_counter()
        sequence = 0
        while time.perf_counter() < deadline:
            first = base + sequence * batch
            sequence += 1
            data = "".join(
                f"{device_id}\t{first + i}\t{i % 100}\t{child_id}\n" for i in range(batch)
            )
            t0 = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.copy_expert(
                    f"COPY {MOVEMENT_BASELINE} (device_id, ts, val, child_id) FROM STDIN",
                    io.StringIO(data),
                )
            connection.commit()
            latencies.append(time.perf_counter() - t0)
            rows += batch
        elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), 0, rows, elapsed, latencies)


def _entry(args):
    kind, *rest = args
    return (_devlog if kind == "devlog" else _movement)(*rest)


def run(
    kind: str,
    url: str,
    devices: list[tuple[int, int]],
    *,
    processes: int,
    batch: int,
    duration: float,
    base: int,
) -> LoadResult:
    """``devices``: (device id, child id), one per process (distinct from the service's)."""
    context = multiprocessing.get_context("spawn")
    jobs = [
        (kind, url, devices[p][0], devices[p][1], batch, duration, base) for p in range(processes)
    ]
    with context.Pool(processes) as pool:
        parts = pool.map(_entry, jobs)
    return LoadResult(
        calls=sum(p.calls for p in parts),
        errors=0,
        units=sum(p.units for p in parts),
        seconds=max(p.seconds for p in parts),
        latencies=[latency for p in parts for latency in p.latencies],
    )
