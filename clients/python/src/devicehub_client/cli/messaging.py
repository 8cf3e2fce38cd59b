"""``send text|sing|dance|weather`` and ``subscribe``: messages to an account's devices.

``send`` stores a message for the devices bound to an account (the caller's own, or, for
admins, ``--user``'s). ``subscribe`` is what a device does: it prints the pending messages
after ``--after-id``, then live ones as they arrive, until Ctrl-C or ``--count``. It
acknowledges each message after printing it (unless ``--no-ack``), so an acknowledged
message is never delivered again; a message printed but not acknowledged (the command was
killed in between) comes again to the next subscription, which is the service's at least
once. Acknowledging here rather than in the client's iterator means the last message of a
``--count`` run is acknowledged too, before the command stops reading.
"""

from __future__ import annotations

from typing import Annotated

import typer

from devicehub_client import ApiError
from devicehub_client.cli.options import JsonFlag, examples
from devicehub_client.cli.output import message_dict
from devicehub_client.cli.session import Session, token_expired
from devicehub_client.v1 import messaging_pb2

send_app = typer.Typer(
    help="Send a message (text, sing, dance, weather) to an account's devices.",
    no_args_is_help=True,
    epilog=examples("dh send text 'Dinner is ready'", "dh send weather --city 北京 --user 42"),
)

UserOption = Annotated[
    int | None,
    typer.Option("--user", help="Recipient account id (admins only); default: yourself.", min=1),
]


def _send(
    context: typer.Context,
    kind: str,
    payload: messaging_pb2.MessagePayload,
    user: int | None,
    as_json: bool,
) -> None:
    session = Session.of(context)
    client = session.signed_in()
    request = messaging_pb2.SendMessageRequest(
        type=kind, message=payload, user_id=str(user) if user else ""
    )
    session.output(as_json).item(session.call(client.messaging.SendMessage, request))


@send_app.command(
    "text", epilog=examples("dh send text 'Dinner is ready'", "dh send text hi --user 42")
)
def send_text(
    context: typer.Context,
    content: Annotated[str, typer.Argument(help="The text the device speaks.")],
    user: UserOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Send a text for the devices to speak."""
    _send(context, "text", messaging_pb2.MessagePayload(content=content), user, as_json)


@send_app.command(
    "sing", epilog=examples("dh send sing --song 'Moon River' --artist 'Audrey Hepburn'")
)
def send_sing(
    context: typer.Context,
    song: Annotated[str, typer.Option(help="Song title.")],
    artist: Annotated[str, typer.Option(help="Artist.")] = "",
    user: UserOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask the devices to sing a song."""
    payload = messaging_pb2.MessagePayload(song=song, artist=artist)
    _send(context, "sing", payload, user, as_json)


@send_app.command(
    "dance", epilog=examples("dh send dance --dance Robot --style electronic --duration 30秒")
)
def send_dance(
    context: typer.Context,
    dance: Annotated[str, typer.Option(help="Dance name.")],
    style: Annotated[str, typer.Option(help="Dance style.")] = "",
    duration: Annotated[str, typer.Option(help="Duration as text, e.g. 30秒.")] = "",
    user: UserOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask the devices to dance."""
    payload = messaging_pb2.MessagePayload(dance=dance, style=style, duration=duration)
    _send(context, "dance", payload, user, as_json)


@send_app.command("weather", epilog=examples("dh send weather --city 北京"))
def send_weather(
    context: typer.Context,
    city: Annotated[str, typer.Option(help="City; the service looks its weather up.")],
    user: UserOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Send a city's current weather (looked up by the service) for the devices to tell."""
    _send(context, "weather", messaging_pb2.MessagePayload(city=city), user, as_json)


def _summary(message: messaging_pb2.DeviceMessage) -> str:
    """One line per message for people: id, time, type, recipient, the payload's fields."""
    payload = message_dict(message.message)
    fields = " ".join(f"{key}={value}" for key, value in payload.items())
    created = message.created_at.ToJsonString() if message.HasField("created_at") else "-"
    return f"{message.id}  {created}  {message.type}  user={message.user_id}  {fields}"


def subscribe(
    context: typer.Context,
    after_id: Annotated[
        int, typer.Option(help="Deliver pending messages with a larger id; 0: all.", min=0)
    ] = 0,
    user: Annotated[
        int, typer.Option("--user", help="Whose messages (admins only); 0: yours.", min=0)
    ] = 0,
    count: Annotated[
        int, typer.Option(help="Stop after this many messages; 0: until Ctrl-C.", min=0)
    ] = 0,
    ack: Annotated[bool, typer.Option("--ack/--no-ack", help="Acknowledge each message.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Print the account's messages as they arrive, acknowledging each.

    Pending messages after --after-id come first, then live ones, until Ctrl-C or --count
    messages; --json prints one JSON object per line.
    """
    session = Session.of(context)
    client = session.signed_in()
    out = session.output(as_json)
    received = 0
    last_id = after_id
    refreshed_since_last_message = False
    try:
        while True:
            try:
                for message in client.subscribe(after_id=last_id, user_id=user, ack=False):
                    refreshed_since_last_message = False
                    if out.as_json:
                        out.json_line(message_dict(message))
                    else:
                        out.line(_summary(message))
                    last_id = message.id
                    if ack:
                        session.call(
                            client.messaging.AckMessages,
                            messaging_pb2.AckMessagesRequest(ids=[message.id]),
                        )
                    received += 1
                    if count and received >= count:
                        return
                return
            except ApiError as error:
                # A stream that outlives the access token: refresh once, resume after the
                # last message printed.
                if not token_expired(error) or refreshed_since_last_message:
                    raise
                session.refresh()
                refreshed_since_last_message = True
    except KeyboardInterrupt:
        return


def register(app: typer.Typer) -> None:
    app.add_typer(send_app, name="send")
    app.command(
        "subscribe",
        epilog=examples(
            "dh subscribe",
            "dh --json subscribe --after-id 120 --count 10",
            "dh subscribe --user 42 --no-ack   (admins: watch an account's queue)",
        ),
    )(subscribe)
