"""``devices batch-create``: registering a production run, thousands of devices, resumably.

A run is planned first, in memory, from the flags (consecutive serials from
``--start-serial``, each MAC address derived by the server from ``--mac-prefix``) or from a
CSV of ``serial_number,mac_address``. Before registering anything the command lists the
batch's devices (ListDevices ``batch``) and leaves out every planned serial that is already
registered there, so that a run that was interrupted, or failed halfway, is finished by
running the same command again: no 409 for what the first run created, no duplicate.

The rest goes in BatchCreateDevices calls of at most 1000 devices (the service's limit),
each all or nothing: after any interruption every device is either registered or not, and
the next run sees which. The flag form sends each run of consecutive missing serials as a
range (``start_serial``, ``count``), so the server derives the MAC addresses as it always
does; the CSV form sends explicit lists (``devices``).

A CSV device that the batch has with another MAC address (or a MAC address it has under
another serial) is a conflict that rerunning cannot settle: the command stops before
registering anything.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from devicehub_client.cli.catalog import BatchOption, TypeOption, devices_app
from devicehub_client.cli.failures import EXIT_INTERRUPTED, CommandFailed, UsageProblem
from devicehub_client.cli.options import PAGE_SIZE, JsonFlag, examples
from devicehub_client.cli.output import Output
from devicehub_client.cli.session import Session
from devicehub_client.v1 import device_pb2

MAX_PER_CALL = 1000
"""BatchCreateDevices registers at most this many devices per call."""

CSV_COLUMNS = ("serial_number", "mac_address")


@dataclass(frozen=True)
class PlannedDevice:
    """A device of the run. ``mac_address`` is empty in the flag form (the server derives
    it from the prefix and the serial)."""

    serial_number: str
    mac_address: str = ""


def normal_mac(mac: str) -> str:
    """A MAC address as the service stores it (upper case, ``:``), for comparing."""
    return mac.strip().upper().replace("-", ":")


def consecutive_serials(start_serial: str, count: int) -> list[str]:
    """``count`` serials from ``start_serial``, keeping its width, as the service numbers
    them; a usage problem when the start is no number or the run outgrows the width."""
    if not (start_serial.isascii() and start_serial.isdigit()):
        raise UsageProblem(f"--start-serial must be digits only, e.g. 00001, not {start_serial!r}")
    width = len(start_serial)
    first = int(start_serial)
    if len(str(first + count - 1)) > width:
        raise UsageProblem(f"{count} serial numbers from {start_serial} exceed {width} digits")
    return [str(first + offset).zfill(width) for offset in range(count)]


def check_mac_room(mac_prefix: str, last_serial: str) -> None:
    """A usage problem when the last serial does not fit in the MAC octets the prefix leaves
    (the service would refuse only the call that reaches it, after registering the rest);
    a prefix that is no list of octets is left for the service to refuse, at the first call."""
    octets = [part for part in re.split(r"[:-]", mac_prefix.strip()) if part]
    if 1 <= len(octets) <= 5 and int(last_serial) >= 256 ** (6 - len(octets)):
        raise UsageProblem(
            f"serial {last_serial} does not fit in the {6 - len(octets)} MAC octets after"
            f" {mac_prefix}: use a shorter --mac-prefix"
        )


def range_calls(serials: Sequence[str], limit: int = MAX_PER_CALL) -> list[tuple[str, int]]:
    """(start_serial, count) calls covering ``serials`` (ascending, of one width): each run
    of consecutive numbers, cut into pieces of at most ``limit``."""
    calls: list[tuple[str, int]] = []
    previous: int | None = None
    for serial in serials:
        number = int(serial)
        if previous is not None and number == previous + 1 and calls[-1][1] < limit:
            calls[-1] = (calls[-1][0], calls[-1][1] + 1)
        else:
            calls.append((serial, 1))
        previous = number
    return calls


def chunks(
    devices: Sequence[PlannedDevice], size: int = MAX_PER_CALL
) -> Iterator[list[PlannedDevice]]:
    for start in range(0, len(devices), size):
        yield list(devices[start : start + size])


def read_csv(path: Path) -> list[PlannedDevice]:
    """The devices of a ``serial_number,mac_address`` CSV (a header row, other columns
    ignored, blank lines skipped); a usage problem for a missing value or a serial or MAC
    address listed twice, which the service would refuse anyway, but only per chunk."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            missing = [name for name in CSV_COLUMNS if name not in (reader.fieldnames or ())]
            if missing:
                raise UsageProblem(
                    f"{path}: the first row must name the columns {','.join(CSV_COLUMNS)}"
                    f" (missing: {', '.join(missing)})"
                )
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageProblem(f"{path}: {error}") from None
    devices: list[PlannedDevice] = []
    serials: dict[str, int] = {}
    macs: dict[str, int] = {}
    for line, row in rows:
        serial = (row.get("serial_number") or "").strip()
        mac = (row.get("mac_address") or "").strip()
        if not serial and not mac:
            continue
        if not serial or not mac:
            raise UsageProblem(f"{path}, line {line}: both serial_number and mac_address needed")
        for seen, value, name in (
            (serials, serial, "serial_number"),
            (macs, normal_mac(mac), "mac_address"),
        ):
            if value in seen:
                raise UsageProblem(
                    f"{path}, line {line}: {name} {value} is on line {seen[value]} already"
                )
            seen[value] = line
        devices.append(PlannedDevice(serial, mac))
    if not devices:
        raise UsageProblem(f"{path}: no devices")
    return devices


def not_yet_registered(
    planned: Sequence[PlannedDevice], registered: dict[str, str]
) -> list[PlannedDevice]:
    """The planned devices whose serial the batch does not have yet. ``registered`` maps
    the batch's serials to their MAC addresses. In the CSV form a listed device that the
    batch has with another MAC address, or whose MAC address the batch has under another
    serial, is a conflict no rerun settles: CommandFailed, naming the first few."""
    serial_of_mac = {mac: serial for serial, mac in registered.items()}
    conflicts: list[str] = []
    for device in planned:
        if not device.mac_address:
            continue
        mac = normal_mac(device.mac_address)
        if registered.get(device.serial_number, mac) != mac:
            conflicts.append(
                f"serial {device.serial_number} has {registered[device.serial_number]}, not {mac}"
            )
        elif serial_of_mac.get(mac, device.serial_number) != device.serial_number:
            conflicts.append(f"{mac} is serial {serial_of_mac[mac]}'s, not {device.serial_number}")
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise CommandFailed(
            f"the batch already has these devices otherwise: {'; '.join(conflicts[:3])}{more};"
            " nothing was registered"
        )
    return [device for device in planned if device.serial_number not in registered]


def _registered_in_batch(session: Session, batch: int) -> dict[str, str]:
    client = session.client
    request = device_pb2.ListDevicesRequest(batch=batch, page_size=PAGE_SIZE)
    return {
        device.serial_number: device.mac_address
        for device in session.paginate(client.devices.ListDevices, request, "devices")
    }


def _requests(
    device_type: int, batch: int, mac_prefix: str, missing: list[PlannedDevice], from_csv: bool
) -> list[tuple[device_pb2.BatchCreateDevicesRequest, int]]:
    """The BatchCreateDevices calls that register ``missing``, each with its size."""
    if from_csv:
        return [
            (
                device_pb2.BatchCreateDevicesRequest(
                    device_type=device_type,
                    batch=batch,
                    devices=[
                        device_pb2.BatchDevice(
                            serial_number=d.serial_number, mac_address=d.mac_address
                        )
                        for d in chunk
                    ],
                ),
                len(chunk),
            )
            for chunk in chunks(missing)
        ]
    return [
        (
            device_pb2.BatchCreateDevicesRequest(
                device_type=device_type,
                batch=batch,
                start_serial=start,
                count=count,
                mac_prefix=mac_prefix,
            ),
            count,
        )
        for start, count in range_calls([device.serial_number for device in missing])
    ]


@devices_app.command(
    "batch-create",
    epilog=examples(
        "dh devices batch-create --type 1 --batch 7 --start-serial 00001 --count 5000"
        " --mac-prefix 00:11:22",
        "dh devices batch-create --type 1 --batch 7 --csv serials.csv",
        "(rerun the same command after an interruption: registered devices are skipped)",
    ),
)
def batch_create(
    context: typer.Context,
    device_type: TypeOption,
    batch: BatchOption,
    start_serial: Annotated[
        str | None, typer.Option(help="First serial number, digits; its width is kept.")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Number of devices.", min=1)] = None,
    mac_prefix: Annotated[
        str | None,
        typer.Option(help="First 1 to 5 MAC octets; the serial in hex follows, e.g. 00:11:22."),
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="CSV with the columns serial_number,mac_address, instead of the range.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register many devices of one batch (admins only), with a progress bar.

    Either a range (--start-serial, --count, --mac-prefix) or --csv. Calls register at most
    1000 devices each; devices the batch already has are skipped, so rerunning an
    interrupted run finishes it.
    """
    session = Session.of(context)
    out = session.output(as_json)
    range_given = [start_serial is not None, count is not None, mac_prefix is not None]
    if csv_file is not None:
        if any(range_given):
            raise UsageProblem("give either --csv or --start-serial/--count/--mac-prefix, not both")
        planned = read_csv(csv_file)
    elif all(range_given):
        assert start_serial is not None and count is not None and mac_prefix is not None
        serials = consecutive_serials(start_serial, count)
        check_mac_room(mac_prefix, serials[-1])
        planned = [PlannedDevice(serial) for serial in serials]
    else:
        raise UsageProblem("give --start-serial, --count and --mac-prefix, or --csv")
    session.signed_in()
    missing = not_yet_registered(planned, _registered_in_batch(session, batch))
    skipped = len(planned) - len(missing)
    calls = _requests(device_type, batch, mac_prefix or "", missing, csv_file is not None)
    created = _register(session, out, calls, total=len(planned), skipped=skipped)
    summary: dict[str, object] = {
        "batch": batch,
        "planned": len(planned),
        "skipped": skipped,
        "created": len(created),
    }
    if out.as_json:
        summary["device_ids"] = created
    out.fields(summary)


def _register(
    session: Session,
    out: Output,
    calls: list[tuple[device_pb2.BatchCreateDevicesRequest, int]],
    total: int,
    skipped: int,
) -> list[int]:
    """Sends the calls in order under a progress bar (standard error); the new ids."""
    client = session.client
    created: list[int] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out.errors,
    )
    try:
        with progress:
            task = progress.add_task("registering devices", total=total, completed=skipped)
            for request, size in calls:
                response = session.call(client.devices.BatchCreateDevices, request)
                created.extend(response.data)
                progress.advance(task, size)
    except KeyboardInterrupt:
        out.note(
            f"interrupted after registering {len(created)} devices:"
            " run the same command again to register the rest"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception:
        if created:
            out.note(
                f"registered {len(created)} devices before the error:"
                " the same command skips them when run again"
            )
        raise
    return created
