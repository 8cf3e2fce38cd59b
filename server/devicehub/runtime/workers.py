"""Worker processes: ``DEVICEHUB_WORKERS`` gRPC servers behind one address and one Envoy.

With more than one worker, ``devicehub serve`` supervises: it applies migrations, starts
the workers (each a complete ``DevicehubServer`` with its own event loop and database
pool) and then Envoy. Direct gRPC clients connect to the shared gRPC port, where the
kernel spreads connections over the workers (SO_REUSEPORT); Envoy balances requests over
each worker's own socket, since its few long-lived HTTP/2 connections would otherwise
land on one worker. Live streams work across workers: a message stored by any worker
reaches subscribers on every worker (PostgreSQL LISTEN/NOTIFY; on SQLite, polling).

Supervision rules:

- A worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group) and drains
  on SIGTERM, which the supervisor sends after Envoy has stopped.
- A worker that dies is replaced by a new process with the same index, so it listens on
  the same sockets (the shared port, its own Unix socket) and worker 0's duties (the
  message expiry sweep) go on. The others keep serving meanwhile.
- Restarts back off (``supervision.RestartPolicy``): 0.5 s after the first death, doubling
  up to 30 s, counting only the deaths of the last ``DEVICEHUB_RESTART_WINDOW`` seconds, so
  a process that stayed up that long starts again from 0.5 s. The ``DEVICEHUB_RESTART_LIMIT``-th
  death within the window is a crash loop: the service stops with an error, for the
  process manager (or the operator) to look at. Envoy is supervised the same way
  (``devicehub.runtime.gateway.Gateway``).
- A worker that does not start at all with the service (``WorkerPool.start``) is not
  retried: that is a configuration error, reported at once.
- Children die with the supervisor (PR_SET_PDEATHSIG), so a crashed ``serve`` leaves no
  orphan holding its ports; the ports are probed with SO_REUSEADDR, so the sockets a
  crash leaves in TIME_WAIT never block the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from devicehub.config import Settings
from devicehub.runtime import metrics_endpoint
from devicehub.runtime.bootstrap import bootstrap
from devicehub.runtime.logs import configure_logging
from devicehub.runtime.server import DevicehubServer
from devicehub.runtime.supervision import (
    RestartPolicy,
    RestartTracker,
    describe_exit,
    die_with_parent,
)
from devicehub.storage import db

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0


def reserve_grpc_port(settings: Settings) -> Settings:
    """Checks that the gRPC port is free (SO_REUSEPORT would silently share a port with
    another server); resolves port 0 to a free port all workers then share.

    SO_REUSEADDR, as every server sets it: connections of a stopped or crashed server
    linger in TIME_WAIT for a minute, and must not block its restart. A socket that
    listens on the port still makes the bind fail, which is the point of the probe.
    """
    family = socket.AF_INET6 if ":" in settings.grpc_host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.grpc_host.strip("[]"), settings.grpc_port))
        except OSError as error:
            raise SystemExit(f"cannot listen on {settings.grpc_address}: {error}") from None
        port = probe.getsockname()[1]
    return dataclasses.replace(settings, grpc_port=port)


async def _serve_worker(settings: Settings, index: int, ready: Connection) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    db.open_database(settings.database_url, settings.db_pool_size)
    server = DevicehubServer(settings, bootstrap(settings), worker_index=index)
    await server.start()
    ready.send("ready")
    ready.close()
    await stop.wait()
    await server.stop()


def _worker_main(settings: Settings, index: int, ready: Connection, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    configure_logging(settings, f"worker-{index}")
    try:
        asyncio.run(_serve_worker(settings, index, ready))
    except SystemExit as error:
        with contextlib.suppress(OSError):
            ready.send(f"failed: {error}")
        raise


class WorkerPool:
    """Starts, watches, replaces and stops the worker processes of one ``devicehub serve``."""

    def __init__(self, settings: Settings, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.policy = policy or RestartPolicy.from_settings(settings)
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, BaseProcess] = {}
        self._trackers = {
            index: RestartTracker(f"worker {index}", self.policy)
            for index in range(settings.workers)
        }
        self._restarts: set[asyncio.Task[None]] = set()
        self._exited: asyncio.Queue[int] = asyncio.Queue()
        self._stopping = False

    def _spawn(self, index: int) -> Connection:
        """Starts worker ``index`` (from the event loop's thread: see ``die_with_parent``);
        returns the pipe on which it reports that it is ready."""
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(self.settings, index, sender, os.getpid()),
            name=f"devicehub-worker-{index}",
        )
        process.start()
        sender.close()
        self._processes[index] = process
        self._watch(index, process)
        return receiver

    def _watch(self, index: int, process: BaseProcess) -> None:
        loop = asyncio.get_running_loop()

        def on_exit() -> None:
            loop.remove_reader(process.sentinel)
            if self._processes.get(index) is process and not self._stopping:
                self._exited.put_nowait(index)

        loop.add_reader(process.sentinel, on_exit)

    async def start(self) -> None:
        pipes = [self._spawn(index) for index in range(self.settings.workers)]
        for index, receiver in enumerate(pipes):
            answer = await asyncio.to_thread(self._await_ready, receiver)
            if answer != "ready":
                await self.stop()
                raise SystemExit(f"worker {index} did not start: {answer}")

    @staticmethod
    def _await_ready(receiver: Connection) -> str:
        with receiver:
            if not receiver.poll(START_TIMEOUT):
                return f"no answer in {START_TIMEOUT:.0f} s"
            try:
                return str(receiver.recv())
            except EOFError:
                return "exited during start-up"

    async def supervise(self) -> str:
        """Replaces every worker that dies; returns (the reason) when one is in a crash
        loop. Runs until then or until cancelled."""
        while True:
            index = await self._exited.get()
            process = self._processes[index]
            await asyncio.to_thread(process.join)
            metrics_endpoint.process_died(self.settings, process.pid)
            tracker = self._trackers[index]
            delay = tracker.record_death()
            what = f"worker {index} (pid {process.pid}) died: {describe_exit(process.exitcode)}"
            if delay is None:
                log.error("%s", what)
                return tracker.crash_loop_message()
            log.error("%s; starting a new one in %.1f s", what, delay)
            task = asyncio.create_task(self._replace(index, delay), name=f"replace-{index}")
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _replace(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        receiver = self._spawn(index)
        process = self._processes[index]
        answer = await asyncio.to_thread(self._await_ready, receiver)
        if answer == "ready":
            log.warning("worker %d replaced: pid %s is serving", index, process.pid)
            return
        # Its exit (now, or once killed) counts as the next death of a crash loop.
        log.error("new worker %d (pid %s) did not start: %s", index, process.pid, answer)
        if process.is_alive():
            process.kill()

    async def stop(self) -> None:
        """SIGTERM to every worker (each drains its calls), then waits for them."""
        self._stopping = True
        for task in list(self._restarts):
            task.cancel()
        processes = list(self._processes.values())
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = self.settings.shutdown_grace + 15
        for process in processes:
            await asyncio.to_thread(process.join, deadline)
            if process.is_alive():
                log.error("worker %s did not stop; killing it", process.name)
                process.kill()
                await asyncio.to_thread(process.join, 5)
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(process.sentinel)
