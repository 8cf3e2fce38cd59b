"""``movement export``: a Lux device's IMU samples in a time range, as CSV.

MovementService.ListMovementSamples reads one device's samples for one of the caller's
children, a page at a time in timestamp order; the export pages through the whole range,
writing each page as it comes (a day of one sample per second is 86,400 rows, and a month
should not have to fit in memory). The caller is the parent account; ``--child`` can be
left out, the child the device is bound to being found among the caller's children
(BindingService.ListChildDevices).

Columns: ``timestamp`` (Unix seconds), ``time`` (the same in RFC 3339 UTC), ``val``.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer

from devicehub_client.cli.failures import CommandFailed
from devicehub_client.cli.options import examples
from devicehub_client.cli.session import Session
from devicehub_client.v1 import binding_pb2, movement_pb2

movement_app = typer.Typer(
    help="IMU movement samples of Lux devices.",
    no_args_is_help=True,
    epilog=examples(
        "dh movement export --device 42 --from 2024-07-01T00:00:00Z --to 2024-07-02T00:00:00Z"
    ),
)

MAX_PAGE_SIZE = 10000
MAX_TIMESTAMP = 2**32 - 1
CSV_HEADER = ("timestamp", "time", "val")


def unix_seconds(text: str, option: str) -> int:
    """Unix seconds from ``1719792000`` or an ISO 8601 time (``2024-07-01T00:00:00Z``;
    without an offset: UTC)."""
    text = text.strip()
    if text.isdigit():
        return _in_range(int(text), text, option)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither Unix seconds nor an ISO 8601 time", param_hint=option
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _in_range(int(moment.timestamp()), text, option)


def _in_range(seconds: int, text: str, option: str) -> int:
    # The service's timestamps are uint32.
    if not 0 <= seconds <= MAX_TIMESTAMP:
        raise typer.BadParameter(f"{text!r} is outside 1970 to 2106", param_hint=option)
    return seconds


def _child_of_device(session: Session, device_id: int) -> int:
    client = session.client
    rows = session.call(client.binding.ListChildDevices, binding_pb2.ListChildDevicesRequest()).rows
    for row in rows:
        if row.id == device_id:
            return row.real_user_id
    raise CommandFailed(
        f"device {device_id} is bound to none of your children (give --child to name one)"
    )


def _write_samples(
    session: Session, request: movement_pb2.ListMovementSamplesRequest, file: TextIO
) -> int:
    client = session.client
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    written = 0
    for sample in session.paginate(client.movement.ListMovementSamples, request, "samples"):
        moment = datetime.fromtimestamp(sample.timestamp, UTC)
        writer.writerow((sample.timestamp, moment.strftime("%Y-%m-%dT%H:%M:%SZ"), sample.val))
        written += 1
    return written


@movement_app.command(
    "export",
    epilog=examples(
        "dh movement export --device 42 --from 2024-07-01T00:00:00Z --to 2024-07-02T00:00:00Z"
        " --output day.csv",
        "dh movement export --device 42 --child 7 --from 1719792000 --to 1719878400 > day.csv",
    ),
)
def export(
    context: typer.Context,
    device: Annotated[int, typer.Option(help="Device id.", min=1)],
    start: Annotated[
        str, typer.Option("--from", help="First time included: Unix seconds or ISO 8601.")
    ],
    end: Annotated[
        str, typer.Option("--to", help="First time excluded: Unix seconds or ISO 8601.")
    ],
    child: Annotated[
        int | None,
        typer.Option(help="The child the device is bound to; default: found among yours.", min=1),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="CSV file to write; default: standard output.", dir_okay=False),
    ] = None,
    page_size: Annotated[
        int, typer.Option(help="Samples per call.", min=1, max=MAX_PAGE_SIZE)
    ] = MAX_PAGE_SIZE,
) -> None:
    """Export a device's movement samples in a time range to CSV (timestamp,time,val)."""
    first, after_last = unix_seconds(start, "--from"), unix_seconds(end, "--to")
    if after_last <= first:
        raise typer.BadParameter("must be later than --from", param_hint="--to")
    session = Session.of(context)
    session.signed_in()
    real_user_id = child if child is not None else _child_of_device(session, device)
    request = movement_pb2.ListMovementSamplesRequest(
        device_id=device,
        real_user_id=real_user_id,
        start=first,
        end=after_last,
        page_size=page_size,
    )
    out = session.output()
    if output is None:
        written = _write_samples(session, request, sys.stdout)
        sys.stdout.flush()
    else:
        # Written beside it and renamed at the end: a failed export leaves no partial CSV
        # under the name asked for.
        partial = output.with_name(output.name + ".partial")
        try:
            with partial.open("w", newline="", encoding="utf-8") as file:
                written = _write_samples(session, request, file)
            partial.replace(output)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    out.note(f"exported {written} samples of device {device} to {output or 'standard output'}")
