"""``bind``, ``unbind``, ``set-primary``, ``bindings``: the logged-in account's devices
(BindingService's user-devices RPCs, the speaker API's binding).

A binding is between a device and the caller, so support staff run these logged in as the
user. ``unbind`` and ``set-primary`` take the binding id (``bind`` prints it, ``bindings``
lists them), which is not the device id.
"""

from __future__ import annotations

from typing import Annotated

import typer

from devicehub_client.cli.options import JsonFlag, examples
from devicehub_client.cli.output import Column
from devicehub_client.cli.session import Session
from devicehub_client.v1 import binding_pb2

BINDING_COLUMNS = (
    Column("binding", "id"),
    Column("device"),
    Column("device code", "device_code"),
    Column("type", "device_type"),
    Column("nickname"),
    Column("primary", "is_primary"),
    Column("bound", "bound_at"),
)

BindingId = Annotated[int, typer.Argument(help="Binding id (see `dh bindings`).", min=1)]


def bind(
    context: typer.Context,
    mac: Annotated[str, typer.Argument(help="The device's MAC address.")],
    nickname: Annotated[str, typer.Option(help="Name shown in the app.")] = "",
    primary: Annotated[bool, typer.Option("--primary", help="Make it the primary device.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Bind a registered device to the logged-in account (the first one becomes primary)."""
    session = Session.of(context)
    client = session.signed_in()
    request = binding_pb2.BindUserDeviceRequest(
        mac_address=mac, nickname=nickname, is_primary=primary
    )
    session.output(as_json).item(session.call(client.binding.BindUserDevice, request))


def unbind(context: typer.Context, binding_id: BindingId, as_json: JsonFlag = False) -> None:
    """Unbind a device from the logged-in account; its history is kept."""
    session = Session.of(context)
    client = session.signed_in()
    request = binding_pb2.UnbindUserDeviceRequest(id=binding_id)
    session.call(client.binding.UnbindUserDevice, request)
    session.output(as_json).fields({"unbound": binding_id})


def set_primary(context: typer.Context, binding_id: BindingId, as_json: JsonFlag = False) -> None:
    """Make a binding the account's primary device (the previous one stops being it)."""
    session = Session.of(context)
    client = session.signed_in()
    request = binding_pb2.SetPrimaryUserDeviceRequest(id=binding_id)
    response = session.call(client.binding.SetPrimaryUserDevice, request)
    session.output(as_json).item(response.data)


def bindings(context: typer.Context, as_json: JsonFlag = False) -> None:
    """List the devices bound to the logged-in account."""
    session = Session.of(context)
    client = session.signed_in()
    response = session.call(client.binding.ListUserDevices, binding_pb2.ListUserDevicesRequest())
    session.output(as_json).items(response.user_devices, BINDING_COLUMNS)


def register(app: typer.Typer) -> None:
    app.command(
        "bind",
        epilog=examples("dh bind 00:11:22:00:00:64 --nickname 'Living room' --primary"),
    )(bind)
    app.command("unbind", epilog=examples("dh unbind 12"))(unbind)
    app.command("set-primary", epilog=examples("dh set-primary 12"))(set_primary)
    app.command("bindings", epilog=examples("dh bindings", "dh --json bindings"))(bindings)
