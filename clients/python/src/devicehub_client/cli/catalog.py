"""``types``, ``batches``, ``devices``: the catalog's list/get/create/update/delete, and
``devices find``.

The Update RPCs replace every field (REST PUT), so ``update`` reads the resource, changes
the fields given on the command line and writes the whole of it back: an engineer fixing a
typo in a name does not retype the rest. ``devices batch-create`` is in ``provisioning``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from devicehub_client.cli.failures import CommandFailed
from devicehub_client.cli.options import PAGE_SIZE, JsonFlag, examples
from devicehub_client.cli.output import Column
from devicehub_client.cli.session import Session
from devicehub_client.v1 import device_batch_pb2, device_pb2, device_type_pb2

types_app = typer.Typer(
    help="Device types (product models): list, get, create, update, delete.",
    no_args_is_help=True,
    epilog=examples("dh types list", "dh types create --name 'Smart speaker' --code SP01"),
)
batches_app = typer.Typer(
    help="Production batches of a device type: list, get, create, update, delete.",
    no_args_is_help=True,
    epilog=examples(
        "dh batches list", "dh batches create --type 1 --number B2024-07 --date 2024-07-01"
    ),
)
devices_app = typer.Typer(
    help="Registered devices: list, get, find, create, batch-create, update, delete.",
    no_args_is_help=True,
    epilog=examples(
        "dh devices list --batch 7",
        "dh devices find --mac 00:11:22:00:00:64",
        "dh devices batch-create --type 1 --batch 7 --csv serials.csv",
    ),
)

TYPE_COLUMNS = (
    Column("id"),
    Column("code"),
    Column("name"),
    Column("description"),
    Column("created", "created_at"),
)
BATCH_COLUMNS = (
    Column("id"),
    Column("batch number", "batch_number"),
    Column("type", "device_type"),
    Column("type name", "device_type_name"),
    Column("production date", "production_date"),
    Column("quantity"),
    Column("description"),
)
DEVICE_COLUMNS = (
    Column("id"),
    Column("device code", "device_code"),
    Column("type", "device_type_name"),
    Column("batch", "batch_number"),
    Column("serial", "serial_number"),
    Column("MAC address", "mac_address"),
    Column("active", "is_active"),
    Column("activated", "activated_at"),
)

IdArgument = Annotated[int, typer.Argument(help="Id.", min=1)]
TypeOption = Annotated[int, typer.Option("--type", help="Device type id.", min=1)]
BatchOption = Annotated[int, typer.Option("--batch", help="Production batch id.", min=1)]


def _deleted(session: Session, as_json: bool, kind: str, identifier: int) -> None:
    session.output(as_json).fields({"deleted": kind, "id": identifier})


# --- types ---


@types_app.command("list", epilog=examples("dh types list", "dh --json types list"))
def list_types(context: typer.Context, as_json: JsonFlag = False) -> None:
    """List every device type, in id order."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_type_pb2.ListDeviceTypesRequest(page_size=PAGE_SIZE)
    found = session.paginate(client.device_types.ListDeviceTypes, request, "device_types")
    session.output(as_json).items(found, TYPE_COLUMNS)


@types_app.command("get", epilog=examples("dh types get 1"))
def get_type(context: typer.Context, type_id: IdArgument, as_json: JsonFlag = False) -> None:
    """Show one device type."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_type_pb2.GetDeviceTypeRequest(id=type_id)
    session.output(as_json).item(session.call(client.device_types.GetDeviceType, request))


@types_app.command("create", epilog=examples("dh types create --name 'Smart speaker' --code SP01"))
def create_type(
    context: typer.Context,
    name: Annotated[str, typer.Option(help="Display name, 1 to 100 characters.")],
    code: Annotated[str, typer.Option(help="Unique code, e.g. SP01; prefixes device codes.")],
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create a device type (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    device_type = device_type_pb2.DeviceType(name=name, code=code, description=description)
    request = device_type_pb2.CreateDeviceTypeRequest(device_type=device_type)
    session.output(as_json).item(session.call(client.device_types.CreateDeviceType, request))


@types_app.command("update", epilog=examples("dh types update 1 --name 'Smart speaker 2'"))
def update_type(
    context: typer.Context,
    type_id: IdArgument,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    code: Annotated[str | None, typer.Option(help="New code (not while it has devices).")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a device type's name, code or description (admins only); the rest is kept."""
    session = Session.of(context)
    client = session.signed_in()
    get = device_type_pb2.GetDeviceTypeRequest(id=type_id)
    device_type = session.call(client.device_types.GetDeviceType, get)
    if name is not None:
        device_type.name = name
    if code is not None:
        device_type.code = code
    if description is not None:
        device_type.description = description
    request = device_type_pb2.UpdateDeviceTypeRequest(device_type=device_type)
    session.output(as_json).item(session.call(client.device_types.UpdateDeviceType, request))


@types_app.command("delete", epilog=examples("dh types delete 1"))
def delete_type(context: typer.Context, type_id: IdArgument, as_json: JsonFlag = False) -> None:
    """Delete a device type that has no batches and no devices (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_type_pb2.DeleteDeviceTypeRequest(id=type_id)
    session.call(client.device_types.DeleteDeviceType, request)
    _deleted(session, as_json, "device type", type_id)


# --- batches ---


@batches_app.command("list", epilog=examples("dh batches list", "dh --json batches list"))
def list_batches(context: typer.Context, as_json: JsonFlag = False) -> None:
    """List every production batch, in id order."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_batch_pb2.ListDeviceBatchesRequest(page_size=PAGE_SIZE)
    found = session.paginate(client.device_batches.ListDeviceBatches, request, "device_batches")
    session.output(as_json).items(found, BATCH_COLUMNS)


@batches_app.command("get", epilog=examples("dh batches get 7"))
def get_batch(context: typer.Context, batch_id: IdArgument, as_json: JsonFlag = False) -> None:
    """Show one production batch."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_batch_pb2.GetDeviceBatchRequest(id=batch_id)
    session.output(as_json).item(session.call(client.device_batches.GetDeviceBatch, request))


@batches_app.command(
    "create",
    epilog=examples(
        "dh batches create --type 1 --number B2024-07 --date 2024-07-01 --quantity 5000"
    ),
)
def create_batch(
    context: typer.Context,
    device_type: TypeOption,
    number: Annotated[str, typer.Option("--number", help="Unique batch number.")],
    production_date: Annotated[str, typer.Option("--date", help="Production date, YYYY-MM-DD.")],
    quantity: Annotated[int, typer.Option(help="Planned number of devices.", min=0)] = 0,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create a production batch of a device type (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    batch = device_batch_pb2.DeviceBatch(
        device_type=device_type,
        batch_number=number,
        production_date=production_date,
        quantity=quantity,
        description=description,
    )
    request = device_batch_pb2.CreateDeviceBatchRequest(device_batch=batch)
    session.output(as_json).item(session.call(client.device_batches.CreateDeviceBatch, request))


@batches_app.command("update", epilog=examples("dh batches update 7 --quantity 6000"))
def update_batch(
    context: typer.Context,
    batch_id: IdArgument,
    device_type: Annotated[
        int | None, typer.Option("--type", help="New device type id (not once it has devices).")
    ] = None,
    number: Annotated[str | None, typer.Option("--number", help="New batch number.")] = None,
    production_date: Annotated[
        str | None, typer.Option("--date", help="New production date, YYYY-MM-DD.")
    ] = None,
    quantity: Annotated[int | None, typer.Option(help="New planned quantity.", min=0)] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a batch's fields (admins only); the ones not given are kept."""
    session = Session.of(context)
    client = session.signed_in()
    get = device_batch_pb2.GetDeviceBatchRequest(id=batch_id)
    batch = session.call(client.device_batches.GetDeviceBatch, get)
    if device_type is not None:
        batch.device_type = device_type
    if number is not None:
        batch.batch_number = number
    if production_date is not None:
        batch.production_date = production_date
    if quantity is not None:
        batch.quantity = quantity
    if description is not None:
        batch.description = description
    request = device_batch_pb2.UpdateDeviceBatchRequest(device_batch=batch)
    session.output(as_json).item(session.call(client.device_batches.UpdateDeviceBatch, request))


@batches_app.command("delete", epilog=examples("dh batches delete 7"))
def delete_batch(context: typer.Context, batch_id: IdArgument, as_json: JsonFlag = False) -> None:
    """Delete a batch that has no devices (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_batch_pb2.DeleteDeviceBatchRequest(id=batch_id)
    session.call(client.device_batches.DeleteDeviceBatch, request)
    _deleted(session, as_json, "device batch", batch_id)


# --- devices ---


@devices_app.command("list", epilog=examples("dh devices list", "dh --json devices list --batch 7"))
def list_devices(
    context: typer.Context,
    batch: Annotated[int, typer.Option(help="Only this batch's devices; 0: all.", min=0)] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List devices in id order: every device for admins, the bound ones for others."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_pb2.ListDevicesRequest(page_size=PAGE_SIZE, batch=batch)
    found = session.paginate(client.devices.ListDevices, request, "devices")
    session.output(as_json).items(found, DEVICE_COLUMNS)


@devices_app.command("get", epilog=examples("dh devices get 42"))
def get_device(context: typer.Context, device_id: IdArgument, as_json: JsonFlag = False) -> None:
    """Show one device."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_pb2.GetDeviceRequest(id=device_id)
    session.output(as_json).item(session.call(client.devices.GetDevice, request))


@devices_app.command(
    "find",
    epilog=examples(
        "dh devices find --mac 00:11:22:00:00:64", "dh devices find --mac 00-11-22-00-00-64"
    ),
)
def find_device(
    context: typer.Context,
    mac: Annotated[str, typer.Option(help="MAC address, with : or -, either case.")],
    as_json: JsonFlag = False,
) -> None:
    """Find the device with a MAC address (exit status 1 when there is none)."""
    session = Session.of(context)
    client = session.signed_in()
    request = device_pb2.ListDevicesRequest(mac_address=mac)
    response = session.call(client.devices.ListDevices, request)
    if not response.devices:
        raise CommandFailed(f"DEVICE_NOT_FOUND: no device has the MAC address {mac}")
    session.output(as_json).items(response.devices, DEVICE_COLUMNS)


@devices_app.command(
    "create",
    epilog=examples("dh devices create --type 1 --batch 7 --serial 00001 --mac 00:11:22:00:00:01"),
)
def create_device(
    context: typer.Context,
    device_type: TypeOption,
    batch: BatchOption,
    serial: Annotated[str, typer.Option(help="Serial number within the type, e.g. 00001.")],
    mac: Annotated[str, typer.Option(help="MAC address, e.g. 00:11:22:00:00:01.")],
    as_json: JsonFlag = False,
) -> None:
    """Register one device (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    device = device_pb2.Device(
        device_type=device_type, batch=batch, serial_number=serial, mac_address=mac
    )
    request = device_pb2.CreateDeviceRequest(device=device)
    session.output(as_json).item(session.call(client.devices.CreateDevice, request))


@devices_app.command("update", epilog=examples("dh devices update 42 --mac 00:11:22:00:00:2A"))
def update_device(
    context: typer.Context,
    device_id: IdArgument,
    device_type: Annotated[int | None, typer.Option("--type", help="New device type id.")] = None,
    batch: Annotated[int | None, typer.Option(help="New batch id.")] = None,
    serial: Annotated[str | None, typer.Option(help="New serial number.")] = None,
    mac: Annotated[str | None, typer.Option(help="New MAC address.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a device's type, batch, serial number or MAC address (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    device = session.call(client.devices.GetDevice, device_pb2.GetDeviceRequest(id=device_id))
    if device_type is not None:
        device.device_type = device_type
    if batch is not None:
        device.batch = batch
    if serial is not None:
        device.serial_number = serial
    if mac is not None:
        device.mac_address = mac
    request = device_pb2.UpdateDeviceRequest(device=device)
    session.output(as_json).item(session.call(client.devices.UpdateDevice, request))


@devices_app.command("delete", epilog=examples("dh devices delete 42"))
def delete_device(context: typer.Context, device_id: IdArgument, as_json: JsonFlag = False) -> None:
    """Delete a device (admins only)."""
    session = Session.of(context)
    client = session.signed_in()
    session.call(client.devices.DeleteDevice, device_pb2.DeleteDeviceRequest(id=device_id))
    _deleted(session, as_json, "device", device_id)
