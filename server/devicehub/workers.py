"""Worker processes: ``DEVICEHUB_WORKERS`` gRPC servers behind one address and one Envoy.

With more than one worker, ``devicehub serve`` supervises: it applies migrations, starts
the workers (each a complete ``DevicehubServer`` with its own event loop and database
pool) and then Envoy. Direct gRPC clients connect to the shared gRPC port, where the
kernel spreads connections over the workers (SO_REUSEPORT); Envoy balances requests over
each worker's own socket, since its few long-lived HTTP/2 connections would otherwise
land on one worker. Live streams work across workers: a message stored by any worker
reaches subscribers on every worker (PostgreSQL LISTEN/NOTIFY; on SQLite, polling).

A worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group) and drains
on SIGTERM, which the supervisor sends after Envoy has stopped. A worker that dies stops
the service with an error, like Envoy exiting does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import signal
import socket
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from devicehub import db
from devicehub.config import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0


def worker_address(settings: Settings, index: int) -> str:
    """The name of worker ``index``'s own abstract Unix socket, which Envoy balances over
    (abstract: nothing to clean up; named after the shared gRPC port, which is unique)."""
    return f"devicehub-{settings.grpc_port}-worker-{index}"


def reserve_grpc_port(settings: Settings) -> Settings:
    """Checks that the gRPC port is free (SO_REUSEPORT would silently share a port with
    another server); resolves port 0 to a free port all workers then share."""
    family = socket.AF_INET6 if ":" in settings.grpc_host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((settings.grpc_host.strip("[]"), settings.grpc_port))
        except OSError as error:
            raise SystemExit(f"cannot listen on {settings.grpc_address}: {error}") from None
        port = probe.getsockname()[1]
    return dataclasses.replace(settings, grpc_port=port)


def _die_with_parent() -> None:
    """Asks Linux to SIGTERM this worker if the supervisor dies without stopping it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def _serve_worker(settings: Settings, index: int, ready: Connection) -> None:
    from devicehub.server import DevicehubServer

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    db.open_database(settings.database_url, settings.db_pool_size)
    server = DevicehubServer(settings, worker_index=index)
    await server.start()
    ready.send("ready")
    ready.close()
    await stop.wait()
    await server.stop()


def _worker_main(settings: Settings, index: int, ready: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve_worker(settings, index, ready))
    except SystemExit as error:
        with contextlib.suppress(OSError):
            ready.send(f"failed: {error}")
        raise


class WorkerPool:
    """Starts, watches and stops the worker processes of one ``devicehub serve``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._processes: list[BaseProcess] = []

    async def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        pipes = []
        for index in range(self.settings.workers):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker_main,
                args=(self.settings, index, sender),
                name=f"devicehub-worker-{index}",
            )
            process.start()
            sender.close()
            self._processes.append(process)
            pipes.append(receiver)
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

    async def wait(self) -> int:
        """Returns when any worker exits; its exit code."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()
        for process in self._processes:

            def on_exit(process: BaseProcess = process) -> None:
                loop.remove_reader(process.sentinel)
                if not exited.done():
                    process.join()
                    exited.set_result(process.exitcode or 0)

            loop.add_reader(process.sentinel, on_exit)
        try:
            return await exited
        finally:
            for process in self._processes:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(process.sentinel)

    async def stop(self) -> None:
        """SIGTERM to every worker (each drains its calls), then waits for them."""
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = self.settings.shutdown_grace + 15
        for process in self._processes:
            await asyncio.to_thread(process.join, deadline)
            if process.is_alive():
                log.error("worker %s did not stop; killing it", process.name)
                process.kill()
                await asyncio.to_thread(process.join, 5)
