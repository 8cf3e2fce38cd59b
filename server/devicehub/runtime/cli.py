"""``devicehub`` command line: serve, gateway, migrate, create-admin, openapi."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from typing import Any

from devicehub import accounts, resources
from devicehub.config import Settings, read_secret
from devicehub.errors import DomainError
from devicehub.runtime import metrics_endpoint
from devicehub.runtime.bootstrap import bootstrap
from devicehub.runtime.gateway import Gateway
from devicehub.runtime.logs import configure_logging
from devicehub.runtime.server import DevicehubServer
from devicehub.runtime.supervision import RestartPolicy
from devicehub.runtime.workers import WorkerPool, reserve_grpc_port
from devicehub.storage import db
from devicehub.storage.migrate import apply_migrations

log = logging.getLogger("devicehub")


def _open(settings: Settings):
    return db.open_database(settings.database_url, settings.db_pool_size)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = apply_migrations(_open(settings))
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    return 0


def cmd_create_admin(settings: Settings, args: argparse.Namespace) -> int:
    password = args.password or read_secret(os.environ, "DEVICEHUB_ADMIN_PASSWORD")
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


def cmd_openapi(settings: Settings, args: argparse.Namespace) -> int:
    """Prints the OpenAPI document codegen wrote (its bytes: the document is UTF-8, whatever
    the terminal's locale)."""
    try:
        document = resources.OPENAPI_DOCUMENT.read_bytes()
    except FileNotFoundError:
        print(
            f"error: no {resources.OPENAPI_DOCUMENT}: generate it with "
            "`python -m devicehub.runtime.codegen` (scripts/bootstrap.sh does)",
            file=sys.stderr,
        )
        return 1
    sys.stdout.buffer.write(document)
    sys.stdout.flush()
    return 0


def _prepare_signing_key(settings: Settings) -> None:
    """Creates a generated key before any worker starts (every worker reads that one) and
    says so once per start, by ``serve`` itself."""
    if settings.secret_key:
        return
    settings.signing_key()
    log.warning(
        "DEVICEHUB_SECRET_KEY is not set: tokens and device secrets are signed with the key "
        "generated on this host in %s. Every other host would sign with a different key of "
        "its own and refuse this one's tokens: give every host the same secret in "
        "DEVICEHUB_SECRET_KEY or DEVICEHUB_SECRET_KEY_FILE (e.g. a systemd credential).",
        settings.generated_key_path,
    )


async def _serve(settings: Settings, with_gateway: bool, with_grpc: bool = True) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    policy = RestartPolicy.from_settings(settings)
    server: DevicehubServer | None = None
    pool: WorkerPool | None = None
    gateway: Gateway | None = None
    metrics: metrics_endpoint.MetricsEndpoint | None = None
    waiters: list[asyncio.Future[Any]] = []
    # Whatever fails below, the children are stopped: an exception that left the workers
    # running would hang the interpreter's exit (multiprocessing joins its children).
    try:
        if with_grpc:
            apply_migrations(_open(settings))
            _prepare_signing_key(settings)
            if settings.workers > 1:
                settings = reserve_grpc_port(settings)
                metrics_endpoint.prepare_workers(settings)
                pool = WorkerPool(settings, policy)
                await pool.start()
                port = settings.grpc_port
            else:
                single = DevicehubServer(settings, bootstrap(settings))
                await single.start()
                server, port = single, single.port
            workers = f" ({settings.workers} workers)" if pool else ""
            print(f"gRPC  listening on {settings.grpc_host}:{port}{workers}", flush=True)
        if with_gateway:
            gateway = Gateway(settings, policy)
            await gateway.start()
            scheme = "https" if settings.tls_cert_file else "http"
            rest = f"{scheme}://{settings.http_host}:{settings.http_port}"
            print(f"REST  listening on {rest}", flush=True)
            if settings.upstreams:
                names = ", ".join(f"{u.host}:{u.grpc_port}" for u in settings.upstreams)
                print(f"      in front of {names} (health-checked)", flush=True)
        if with_grpc:
            metrics = metrics_endpoint.start(settings, workers=pool is not None)
            if metrics is not None:
                where = f"http://{settings.metrics_host}:{metrics.port}/metrics"
                print(f"metrics on {where}", flush=True)
        print("press Ctrl-C to stop", flush=True)

        supervisors: list[asyncio.Future[str]] = []
        if gateway is not None:
            supervisors.append(asyncio.ensure_future(gateway.supervise()))
        if pool is not None:
            supervisors.append(asyncio.ensure_future(pool.supervise()))
        waiters = [asyncio.ensure_future(stop.wait()), *supervisors]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for supervisor in supervisors:
            if supervisor.done():
                reason = supervisor.result()  # a crash loop
                log.error("%s", reason)
                code = 1
    finally:
        for waiter in waiters:
            waiter.cancel()
        # Envoy first, so no new REST calls arrive; then drain the gRPC server(s).
        if gateway is not None:
            await gateway.stop()
        if server is not None:
            await server.stop()
        if pool is not None:
            await pool.stop()
        if metrics is not None:
            await metrics.stop()
        print("stopped", flush=True)
    return code


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.upstreams and not args.no_gateway:
        # Its Envoy would balance over those instead of the workers it starts.
        raise SystemExit(
            "DEVICEHUB_UPSTREAMS is for `devicehub gateway`; `devicehub serve` puts its "
            "Envoy in front of its own workers (or use `serve --no-gateway`)"
        )
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
    openapi = commands.add_parser(
        "openapi", help="print the OpenAPI 3.1 document of the REST API (JSON)"
    )
    openapi.set_defaults(run=cmd_openapi)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings, "serve")
    return args.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
