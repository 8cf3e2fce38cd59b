"""A multi-process grpc.aio load generator: P processes x C concurrent callers, timed.

Each caller loops on one scenario call until the deadline. Scenarios give every caller
its own device and id range, so ingestion calls always insert new rows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from devicehub.v1 import (
    binding_pb2,
    binding_pb2_grpc,
    devlog_pb2,
    devlog_pb2_grpc,
    movement_pb2,
    movement_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
)


@dataclass
class LoadResult:
    calls: int
    errors: int
    units: int  # records/samples carried by successful calls
    seconds: float
    latencies: list[float]


def _caller(scenario: str, channel: grpc.aio.Channel, params: dict[str, Any], slot: int):
    """Returns (async call, units per call) for one caller slot."""
    if scenario == "ping":
        stub = system_pb2_grpc.SystemServiceStub(channel)
        request = system_pb2.PingRequest()
        return (lambda: stub.Ping(request)), 1
    if scenario == "home":
        stub_b = binding_pb2_grpc.BindingServiceStub(channel)
        tokens = params["tokens"]
        request_b = binding_pb2.ListChildDevicesRequest()
        counter = [slot * 7919]

        def home():
            counter[0] += 1
            token = tokens[(counter[0] * 2654435761) % len(tokens)]
            return stub_b.ListChildDevices(
                request_b, metadata=(("authorization", f"Bearer {token}"),)
            )

        return home, 1
    if scenario == "movement_range":
        stub_r = movement_pb2_grpc.MovementServiceStub(channel)
        readers = params["readers"]  # (token, child id, device id) of seeded devices
        start, end = params["start"], params["end"]
        turn = [slot * 7919]

        def range_read():
            turn[0] += 1
            token, child_id, device_id = readers[(turn[0] * 2654435761) % len(readers)]
            return stub_r.ListMovementSamples(
                movement_pb2.ListMovementSamplesRequest(
                    device_id=device_id, real_user_id=child_id, start=start, end=end
                ),
                metadata=(("authorization", f"Bearer {token}"),),
            )

        return range_read, 1
    token, child_id, device_id, unique_id = params["devices"][slot % len(params["devices"])]
    auth = (("authorization", f"Bearer {token}"),)
    sequence = [0]
    first_id = params.get("first_id", 0)  # distinct per run, so every upload inserts
    # Upload requests are built once per caller; each call only renumbers the ids (the
    # client's work per call stays small beside the server's, as in the raw baselines).
    if scenario == "devlog":
        stub_d = devlog_pb2_grpc.DevlogServiceStub(channel)
        size = params["batch"]
        detail = devlog_pb2.DevlogDetail(
            treatment_date="2026-01-02T10:00:00",
            finish_flag=struct_pb2.Value(number_value=1),
            last_intensity=3,
            treatment_time=600,
        )
        entry = devlog_pb2.DevlogEntry(
            real_user_id=child_id, device_id=device_id, unique_id=unique_id, detail_data=detail
        )
        devlog_request = devlog_pb2.UploadDevlogsRequest(log_arrays=[entry] * size)

        def devlog():
            base = 10_000_000 + first_id + sequence[0] * size
            sequence[0] += 1
            for i, log in enumerate(devlog_request.log_arrays):
                log.log_file_id = base + i
            return stub_d.UploadDevlogs(devlog_request, metadata=auth)

        return devlog, size
    if scenario == "movement":
        stub_m = movement_pb2_grpc.MovementServiceStub(channel)
        size = params["batch"]
        movement_request = movement_pb2.UploadMovementRequest(
            real_user_id=child_id,
            device_id=device_id,
            movement_data=[movement_pb2.MovementSample(val=i % 100) for i in range(size)],
        )

        first_ts = params["first_ts"]  # distinct per run and device, in a kept week

        def upload():
            base = first_ts + sequence[0] * size
            sequence[0] += 1
            for i, sample in enumerate(movement_request.movement_data):
                sample.timestamp = base + i
            return stub_m.UploadMovement(movement_request, metadata=auth)

        return upload, size
    raise ValueError(scenario)


async def _process_main(target, scenario, params, first_slot, concurrency, duration) -> LoadResult:
    channel = grpc.aio.insecure_channel(target)
    latencies: list[float] = []
    counts = {"calls": 0, "errors": 0, "units": 0}
    deadline = time.perf_counter() + duration

    async def worker(slot: int) -> None:
        call, units = _caller(scenario, channel, params, slot)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError:
                counts["errors"] += 1
                continue
            latencies.append(time.perf_counter() - started)
            counts["calls"] += 1
            counts["units"] += units

    started = time.perf_counter()
    await asyncio.gather(*(worker(first_slot + i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    await channel.close()
    return LoadResult(counts["calls"], counts["errors"], counts["units"], elapsed, latencies)


def _entry(args) -> LoadResult:
    return asyncio.run(_process_main(*args))


def run(
    target: str,
    scenario: str,
    params: dict[str, Any],
    *,
    processes: int,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """Runs the scenario from ``processes`` client processes; merges their results."""
    context = multiprocessing.get_context("spawn")
    jobs = [
        (target, scenario, params, p * concurrency, concurrency, duration) for p in range(processes)
    ]
    with context.Pool(processes) as pool:
        parts = pool.map(_entry, jobs)
    return LoadResult(
        calls=sum(p.calls for p in parts),
        errors=sum(p.errors for p in parts),
        units=sum(p.units for p in parts),
        seconds=max(p.seconds for p in parts),
        latencies=[latency for p in parts for latency in p.latencies],
    )
