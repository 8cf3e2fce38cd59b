"""``firmware upload|list`` and ``rollout create|pause|resume|cancel|status|list``.

``firmware upload`` hashes the file first, then streams it (UploadFirmwarePackage,
client-streaming) with its size and SHA-256 in the first message: the service stores
nothing whose bytes differ from those, so a file that changed while it was read, or a
stream cut short, leaves no package behind. It prints the SHA-256 it computed beside the
one the service reports and fails (exit status 1) if they differ: the end-to-end check a
release engineer quotes.

``rollout status`` shows a rollout as a table of its update counts per state per group;
``--watch`` redraws it every ``--interval`` seconds until the rollout is over (completed,
stopped by failures, canceled) or Ctrl-C, printing a JSON line per poll with ``--json``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from devicehub_client.cli.failures import CommandFailed, UsageProblem
from devicehub_client.cli.options import PAGE_SIZE, JsonFlag, examples
from devicehub_client.cli.output import Column, Output, cell_text, message_dict
from devicehub_client.cli.session import Session
from devicehub_client.v1 import firmware_pb2

firmware_app = typer.Typer(
    help="Firmware packages: upload (streamed, SHA-256 checked), list, delete.",
    no_args_is_help=True,
    epilog=examples("dh firmware upload build/sp01-1.2.3.bin --type 1 --version 1.2.3"),
)
rollout_app = typer.Typer(
    help="Staged firmware rollouts: create, status (--watch), pause, resume, cancel, list.",
    no_args_is_help=True,
    epilog=examples(
        "dh rollout create --package 5 --groups 1,10,100", "dh rollout status 3 --watch"
    ),
)

PACKAGE_COLUMNS = (
    Column("id"),
    Column("type", "device_type"),
    Column("type name", "device_type_name"),
    Column("version"),
    Column("title"),
    Column("min version", "min_version"),
    Column("bytes", "size_bytes"),
    Column("sha256"),
    Column("uploaded", "created_at"),
)
ROLLOUT_COLUMNS = (
    Column("id"),
    Column("package", "package_id"),
    Column("version"),
    Column("state"),
    Column("devices", "device_count"),
    Column("groups", "group_percents"),
    Column("created", "created_at"),
)

# The states an update can be in, in the order of FirmwareUpdateCounts (its proto order).
UPDATE_STATES = tuple(field.name for field in firmware_pb2.FirmwareUpdateCounts.DESCRIPTOR.fields)
ENDED_ROLLOUT_STATES = frozenset({"completed", "stopped_by_failures", "canceled"})

CHUNK_BYTES = 256 * 1024
MAX_PACKAGE_BYTES = 2**31 - 1  # size_bytes is an int32

RolloutId = Annotated[int, typer.Argument(help="Rollout id.", min=1)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


@firmware_app.command(
    "upload",
    epilog=examples(
        "dh firmware upload build/sp01-1.2.3.bin --type 1 --version 1.2.3 --title 'Quieter fan'",
        "dh firmware upload fw.bin --type 1 --version 2.0.0 --min-version 1.2.0"
        ' --notes "$(cat CHANGES.md)"',
    ),
)
def upload(
    context: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(help="The firmware binary.", exists=True, dir_okay=False, readable=True),
    ],
    device_type: Annotated[int, typer.Option("--type", help="Device type id.", min=1)],
    version: Annotated[str, typer.Option(help="Semantic version, unique per type.")],
    title: Annotated[
        str | None, typer.Option(help="Short title; default: the file's name.")
    ] = None,
    notes: Annotated[str, typer.Option(help="Release notes.")] = "",
    min_version: Annotated[str, typer.Option(help="Oldest version that may update.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Upload a firmware package (admins only), streamed with a progress bar.

    Prints the SHA-256 computed here beside the service's, and fails if they differ.
    """
    session = Session.of(context)
    out = session.output(as_json)
    size = file.stat().st_size
    if size > MAX_PACKAGE_BYTES:
        raise UsageProblem(f"{file} has {size} bytes; packages are smaller than 2 GiB")
    computed = file_sha256(file)
    client = session.signed_in()

    def attempt() -> firmware_pb2.FirmwarePackage:
        with file.open("rb") as stream, _transfer_progress(out) as progress:
            task = progress.add_task(f"uploading {file.name}", total=size)
            return client.upload_firmware(
                device_type,
                version,
                iter(lambda: stream.read(CHUNK_BYTES), b""),
                title=file.name if title is None else title,
                release_notes=notes,
                min_version=min_version,
                size_bytes=size,
                sha256=computed,
                progress=lambda sent: progress.update(task, completed=sent),
            )

    package = session.retrying(attempt)
    if out.as_json:
        out.json({"package": message_dict(package), "computed_sha256": computed})
    else:
        out.item(package)
        out.line(f"sha256 computed here: {computed}")
        out.line(f"sha256 of the server: {package.sha256}")
    if package.sha256 != computed:
        raise CommandFailed(
            f"the service stored package {package.id} with SHA-256 {package.sha256},"
            f" the file's is {computed}: delete it (dh firmware delete {package.id})"
            " and upload again"
        )


def _transfer_progress(out: Output) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=out.errors,
    )


@firmware_app.command("list", epilog=examples("dh firmware list", "dh firmware list --type 1"))
def list_packages(
    context: typer.Context,
    device_type: Annotated[
        int, typer.Option("--type", help="Only this type's; 0: all.", min=0)
    ] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List firmware packages in id order (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    request = firmware_pb2.ListFirmwarePackagesRequest(device_type=device_type, page_size=PAGE_SIZE)
    found = session.paginate(client.firmware.ListFirmwarePackages, request, "packages")
    session.output(as_json).items(found, PACKAGE_COLUMNS)


@firmware_app.command("delete", epilog=examples("dh firmware delete 5"))
def delete_package(
    context: typer.Context,
    package_id: Annotated[int, typer.Argument(help="Package id.", min=1)],
    as_json: JsonFlag = False,
) -> None:
    """Delete a package and its bytes (admins only); not one a rollout or a device uses."""
    session = Session.of(context)
    client = session.signed_in()
    request = firmware_pb2.DeleteFirmwarePackageRequest(id=package_id)
    session.call(client.firmware.DeleteFirmwarePackage, request)
    session.output(as_json).fields({"deleted": "firmware package", "id": package_id})


# --- rollouts ---


def percents(text: str) -> list[int]:
    """``1,10,100`` -> [1, 10, 100] (the service checks that they increase to 100)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of percentages") from None


def rollout_table(rollout: firmware_pb2.FirmwareRollout) -> Group:
    """The rollout's headline, and its update counts per state per group (and in all)."""
    headline = Text(
        f"rollout {rollout.id}: package {rollout.package_id} ({rollout.version}), {rollout.state},"
        f" {rollout.device_count} devices, next group at {rollout.success_threshold_percent}%"
        f" updated, stops above {rollout.error_threshold_percent}% failed"
    )
    table = Table(box=box.SIMPLE_HEAD)
    for header in ("group", "percent", "state", "devices", *UPDATE_STATES):
        table.add_column(header, justify="left" if header in ("group", "state") else "right")
    for group in rollout.groups:
        counts = [getattr(group.counts, state) for state in UPDATE_STATES]
        table.add_row(
            Text(str(group.index)),
            Text(f"{group.percent}%"),
            Text(group.state),
            Text(str(group.device_count)),
            *(Text(cell_text(count)) for count in counts),
        )
    totals = [getattr(rollout.counts, state) for state in UPDATE_STATES]
    table.add_row(
        Text("all", style="bold"),
        Text(""),
        Text(rollout.state, style="bold"),
        Text(str(rollout.device_count), style="bold"),
        *(Text(str(count), style="bold") for count in totals),
    )
    return Group(headline, table)


def _show(out: Output, rollout: firmware_pb2.FirmwareRollout) -> None:
    if out.as_json:
        out.json(message_dict(rollout))
    else:
        out.console.print(rollout_table(rollout))


@rollout_app.command(
    "create",
    epilog=examples(
        "dh rollout create --package 5",
        "dh rollout create --package 5 --groups 1,10,100 --success-threshold 95"
        " --error-threshold 2 --batch 7",
    ),
)
def create_rollout(
    context: typer.Context,
    package: Annotated[int, typer.Option(help="The package to roll out.", min=1)],
    groups: Annotated[
        str, typer.Option(help="Cumulative group percentages ending at 100, e.g. 1,10,100.")
    ] = "100",
    success_threshold: Annotated[
        int | None,
        typer.Option(
            help="Percent of a group updated before the next starts; default 90.", min=1, max=100
        ),
    ] = None,
    error_threshold: Annotated[
        int | None,
        typer.Option(help="Percent of a group that may fail; default 10.", min=0, max=100),
    ] = None,
    batch: Annotated[
        list[int] | None, typer.Option("--batch", help="Target this batch (repeatable).")
    ] = None,
    device: Annotated[
        list[int] | None, typer.Option("--device", help="Target this device (repeatable).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a rollout of a package and start its first group (admins only).

    Without --batch and --device it targets every device of the package's type.
    """
    session = Session.of(context)
    client = session.signed_in()
    request = firmware_pb2.CreateFirmwareRolloutRequest(
        package_id=package,
        group_percents=percents(groups),
        target=firmware_pb2.FirmwareRolloutTarget(batch_ids=batch or [], device_ids=device or []),
    )
    if success_threshold is not None:
        request.success_threshold_percent = success_threshold
    if error_threshold is not None:
        request.error_threshold_percent = error_threshold
    rollout = session.call(client.firmware.CreateFirmwareRollout, request)
    _show(session.output(as_json), rollout)


@rollout_app.command(
    "status",
    epilog=examples(
        "dh rollout status 3",
        "dh rollout status 3 --watch --interval 5",
        "dh --json rollout status 3",
    ),
)
def rollout_status(
    context: typer.Context,
    rollout_id: RolloutId,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until the rollout is over or Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between refreshes with --watch.", min=0.1)
    ] = 2.0,
    as_json: JsonFlag = False,
) -> None:
    """Show a rollout's update counts per state per group."""
    session = Session.of(context)
    client = session.signed_in()
    out = session.output(as_json)
    request = firmware_pb2.GetFirmwareRolloutRequest(id=rollout_id)

    def current() -> firmware_pb2.FirmwareRollout:
        return session.call(client.firmware.GetFirmwareRollout, request)

    rollout = current()
    if not watch:
        _show(out, rollout)
        return
    try:
        if out.as_json:
            out.json_line(message_dict(rollout))
            while rollout.state not in ENDED_ROLLOUT_STATES:
                time.sleep(interval)
                rollout = current()
                out.json_line(message_dict(rollout))
            return
        with Live(rollout_table(rollout), console=out.console, auto_refresh=False) as live:
            while rollout.state not in ENDED_ROLLOUT_STATES:
                time.sleep(interval)
                rollout = current()
                live.update(rollout_table(rollout), refresh=True)
    except KeyboardInterrupt:
        return


@rollout_app.command("pause", epilog=examples("dh rollout pause 3"))
def pause_rollout(context: typer.Context, rollout_id: RolloutId, as_json: JsonFlag = False) -> None:
    """Pause a running rollout: no group starts and nobody is notified until resumed."""
    session = Session.of(context)
    client = session.signed_in()
    request = firmware_pb2.PauseFirmwareRolloutRequest(id=rollout_id)
    _show(session.output(as_json), session.call(client.firmware.PauseFirmwareRollout, request))


@rollout_app.command("resume", epilog=examples("dh rollout resume 3"))
def resume_rollout(
    context: typer.Context, rollout_id: RolloutId, as_json: JsonFlag = False
) -> None:
    """Resume a paused rollout."""
    session = Session.of(context)
    client = session.signed_in()
    request = firmware_pb2.ResumeFirmwareRolloutRequest(id=rollout_id)
    _show(session.output(as_json), session.call(client.firmware.ResumeFirmwareRollout, request))


@rollout_app.command("cancel", epilog=examples("dh rollout cancel 3"))
def cancel_rollout(
    context: typer.Context, rollout_id: RolloutId, as_json: JsonFlag = False
) -> None:
    """Cancel a rollout that is not over: its updates not yet ended become canceled."""
    session = Session.of(context)
    client = session.signed_in()
    request = firmware_pb2.CancelFirmwareRolloutRequest(id=rollout_id)
    _show(session.output(as_json), session.call(client.firmware.CancelFirmwareRollout, request))


@rollout_app.command("list", epilog=examples("dh rollout list", "dh --json rollout list"))
def list_rollouts(context: typer.Context, as_json: JsonFlag = False) -> None:
    """List rollouts in id order (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    request = firmware_pb2.ListFirmwareRolloutsRequest(page_size=PAGE_SIZE)
    found = session.paginate(client.firmware.ListFirmwareRollouts, request, "rollouts")
    session.output(as_json).items(found, ROLLOUT_COLUMNS)
