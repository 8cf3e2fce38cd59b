"""The worker processes of a running ``devicehub serve``: each one's own gRPC socket, its pid
(found through /proc), its health, and waiting for a killed one to be replaced."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devicehub.testing.stack import Stack

WORKERS = 2


def worker_target(grpc_port: int | str, index: int) -> str:
    return f"unix-abstract:devicehub-{grpc_port}-worker-{index}"


@contextmanager
def worker_channel(stack_or_port: Stack | int, index: int) -> Iterator[grpc.Channel]:
    port = (
        stack_or_port.env["DEVICEHUB_GRPC_PORT"]
        if isinstance(stack_or_port, Stack)
        else stack_or_port
    )
    with grpc.insecure_channel(worker_target(port, index)) as channel:
        yield channel


def worker_pids(parent: int) -> list[int]:
    """Pids of the worker processes (multiprocessing spawn children) of ``parent``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def worker_pid(parent: int, grpc_port: int | str, index: int) -> int | None:
    """The pid of ``parent``'s worker ``index``: the process that listens on that
    worker's own abstract socket (/proc/net/unix gives the socket's inode)."""
    name = "@" + worker_target(grpc_port, index).removeprefix("unix-abstract:")
    inodes = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == name:
            inodes.add(f"socket:[{fields[6]}]")
    for pid in worker_pids(parent):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    return None


def replaced(parent: int, grpc_port: int | str, index: int, old: int) -> int | None:
    """Waits until ``parent``'s worker ``index`` is a new process other than ``old`` that
    serves on its socket; its pid (None if that did not happen in time)."""
    found: list[int] = []

    def serving() -> bool:
        pid = worker_pid(parent, grpc_port, index)
        if pid is None or pid == old:
            return False
        with worker_channel(int(grpc_port), index) as channel:
            try:
                serves = health_status(channel) == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False
        found.append(pid)
        return serves

    return found[-1] if wait_until(serving, 60) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def health_status(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
