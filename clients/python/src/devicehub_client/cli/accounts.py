"""``login``, ``whoami``, ``logout``: the account the other commands act as.

The password is read with hidden input, or from standard input with ``--password-stdin``
(scripts, CI secrets), never from the command line, where ``ps`` and shell histories would
show it. Tokens are stored (``credentials``) and never printed.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from devicehub_client.cli.credentials import StoredLogin
from devicehub_client.cli.failures import UsageProblem
from devicehub_client.cli.options import JsonFlag, examples
from devicehub_client.cli.session import Session
from devicehub_client.v1 import account_pb2


def login(
    context: typer.Context,
    username: Annotated[
        str | None, typer.Argument(help="Account name; asked for when left out.")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from standard input."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Log in and store the tokens for the target in the config directory (mode 0600).

    Later commands use them, and refresh the access token when it expires.
    """
    session = Session.of(context)
    if username is None:
        if password_stdin:
            raise UsageProblem("give the username when the password comes from standard input")
        username = typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise UsageProblem("the password is empty")
    tokens = session.client.sign_in(username, password)
    session.remember(StoredLogin(username, tokens.access_token, tokens.refresh_token))
    session.output(as_json).fields({"target": session.target, "username": username})


login_examples = examples(
    "dh login admin",
    "printf '%s\\n' \"$PASSWORD\" | dh --target devicehub.example.com:443 --tls"
    " login admin --password-stdin",
)


def whoami(context: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the account the stored login acts as (AccountService.GetMyAccount)."""
    session = Session.of(context)
    client = session.signed_in()
    account = session.call(client.accounts.GetMyAccount, account_pb2.GetMyAccountRequest())
    session.output(as_json).item(account)


whoami_examples = examples("dh whoami", "dh --json whoami")


def logout(context: typer.Context, as_json: JsonFlag = False) -> None:
    """Forget the stored login for the target.

    The tokens stay valid until they expire; change the password to revoke them at once.
    """
    session = Session.of(context)
    forgotten = session.credentials.forget(session.target)
    session.output(as_json).fields({"target": session.target, "logged_out": forgotten})


logout_examples = examples("dh logout", "dh --target 10.0.0.5:50051 logout")


def register(app: typer.Typer) -> None:
    app.command("login", epilog=login_examples)(login)
    app.command("whoami", epilog=whoami_examples)(whoami)
    app.command("logout", epilog=logout_examples)(logout)
