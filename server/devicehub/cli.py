"""``devicehub`` command line: serve, gateway, migrate, create-admin."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from typing import Any

from devicehub import accounts, db
from devicehub.config import Settings
from devicehub.errors import DomainError
from devicehub.migrate import apply_migrations

log = logging.getLogger("devicehub")


def _open(settings: Settings):
    return db.open_database(settings.database_url, settings.db_pool_size)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = apply_migrations(_open(settings))
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    return 0


def cmd_create_admin(settings: Settings, args: argparse.Namespace) -> int:
    password = args.password or os.environ.get("DEVICEHUB_ADMIN_PASSWORD")
    if not password:
        password = getpass.getpass("password: ")
    database = _open(settings)
    apply_migrations(database)
    try:
        with database.connection_context():
            account = accounts.register(args.username, password, is_admin=True)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    print(f"created admin account {account.username!r} (id {account.id})")
    return 0


async def _run_envoy(settings: Settings) -> asyncio.subprocess.Process:
    from devicehub.gateway import envoy_command

    process = await asyncio.create_subprocess_exec(*envoy_command(settings))
    return process


async def _serve(settings: Settings, with_gateway: bool, with_grpc: bool = True) -> int:
    from devicehub.server import DevicehubServer
    from devicehub.workers import WorkerPool, reserve_grpc_port

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    server = None
    pool = None
    if with_grpc:
        apply_migrations(_open(settings))
        if settings.workers > 1:
            settings = reserve_grpc_port(settings)
            settings.signing_key()  # created once here, read by every worker
            pool = WorkerPool(settings)
            await pool.start()
            port = settings.grpc_port
        else:
            server = DevicehubServer(settings)
            await server.start()
            port = server.port
        workers = f" ({settings.workers} workers)" if pool else ""
        print(f"gRPC  listening on {settings.grpc_host}:{port}{workers}", flush=True)
    envoy = None
    if with_gateway:
        envoy = await _run_envoy(settings)
        print(f"REST  listening on http://{settings.http_host}:{settings.http_port}", flush=True)
    print("press Ctrl-C to stop", flush=True)

    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if envoy is not None:
        waiters.append(asyncio.ensure_future(envoy.wait()))
    if pool is not None:
        waiters.append(asyncio.ensure_future(pool.wait()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if not stop.is_set():
        if envoy is not None and envoy.returncode is not None:
            log.error("envoy exited with status %s", envoy.returncode)
        else:
            log.error("a worker process exited; stopping")
        code = 1
    # Envoy first, so no new REST calls arrive; then drain the gRPC server(s).
    if envoy is not None and envoy.returncode is None:
        envoy.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(envoy.wait(), 10)
        if envoy.returncode is None:
            envoy.kill()
    if server is not None:
        await server.stop()
    if pool is not None:
        await pool.stop()
    for waiter in waiters:
        waiter.cancel()
    print("stopped", flush=True)
    return code


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_serve(settings, with_gateway=not args.no_gateway))


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_serve(settings, with_gateway=True, with_grpc=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devicehub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate, then run the gRPC server and Envoy")
    serve.add_argument("--no-gateway", action="store_true", help="run only the gRPC server")
    serve.set_defaults(run=cmd_serve)
    gateway = commands.add_parser("gateway", help="run only Envoy (REST edge)")
    gateway.set_defaults(run=cmd_gateway)
    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(run=cmd_migrate)
    admin = commands.add_parser("create-admin", help="create an admin account")
    admin.add_argument("username")
    admin.add_argument(
        "--password",
        help="the password (default: $DEVICEHUB_ADMIN_PASSWORD, else asked for)",
    )
    admin.set_defaults(run=cmd_create_admin)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
