"""The ``dh`` command tree, its global options, and how a run ends.

Global options (before the command) say where the service is and how to print; each
command module adds its commands here. ``run`` turns what a command raised into the exit
statuses of ``failures``: typer itself handles usage errors (2) and Ctrl-C (130).

typer's pretty tracebacks are off: they print local variables, which may hold a password
or a token. An unexpected exception shows a plain traceback (a bug to report).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from devicehub_client import ApiError
from devicehub_client.cli import (
    accounts,
    binding,
    catalog,
    firmware,
    messaging,
    movement,
    provisioning,  # noqa: F401  (adds `devices batch-create`)
)
from devicehub_client.cli.failures import EXIT_API_ERROR, CommandFailed, api_error_line
from devicehub_client.cli.options import examples
from devicehub_client.cli.session import Session

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_CONFIG_DIR = Path(typer.get_app_dir("devicehub"))

app = typer.Typer(
    name="dh",
    help="devicehub for factory and support tooling: the catalog, provisioning, bindings,"
    " messages, movement exports, firmware and rollouts, over gRPC.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    epilog=examples(
        "dh login admin",
        "dh devices batch-create --type 1 --batch 7 --csv serials.csv",
        "dh --json devices find --mac 00:11:22:00:00:64",
        "DEVICEHUB_TARGET=devicehub.example.com:443 dh --tls whoami",
    ),
)


@app.callback()
def global_options(
    context: typer.Context,
    target: Annotated[
        str, typer.Option(envvar="DEVICEHUB_TARGET", help="The service's gRPC address, host:port.")
    ] = DEFAULT_TARGET,
    tls: Annotated[bool, typer.Option("--tls", help="Connect with TLS (system CAs).")] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="PEM file of the CA to trust; implies --tls.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of tables (every command).")
    ] = False,
    config_dir: Annotated[
        Path,
        typer.Option(
            envvar="DEVICEHUB_CONFIG_DIR",
            help="Where `dh login` keeps its tokens.",
            file_okay=False,
        ),
    ] = DEFAULT_CONFIG_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds each call may take.", min=0.1)] = 30.0,
) -> None:
    session = Session(target, tls, ca_file, config_dir, as_json, timeout)
    context.obj = session
    context.call_on_close(session.close)


accounts.register(app)
app.add_typer(catalog.types_app, name="types")
app.add_typer(catalog.batches_app, name="batches")
app.add_typer(catalog.devices_app, name="devices")
binding.register(app)
messaging.register(app)
app.add_typer(movement.movement_app, name="movement")
app.add_typer(firmware.firmware_app, name="firmware")
app.add_typer(firmware.rollout_app, name="rollout")


def run() -> None:
    try:
        app()
    except ApiError as error:
        sys.stderr.write(api_error_line(error) + "\n")
        sys.exit(EXIT_API_ERROR)
    except CommandFailed as failure:
        sys.stderr.write(f"error: {failure}\n")
        sys.exit(failure.exit_code)
