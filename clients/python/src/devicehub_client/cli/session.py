"""One command run's connection to devicehub: the client, the stored login, token refresh.

Commands other than ``login`` act as the account ``dh login`` stored for the target. Access
tokens are short-lived (15 minutes by default) and refresh tokens last days, so a call that
fails with UNAUTHENTICATED ``TOKEN_EXPIRED`` refreshes the pair once with the stored refresh
token (AuthService.RefreshToken), saves the new pair and repeats the call. A refresh token
that is itself expired or revoked (a changed password) means logging in again: a usage
problem, exit status 2. Every call goes through ``call`` or ``retrying`` for that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import typer
from google.protobuf.message import Message

from devicehub_client import ApiError, Client
from devicehub_client.cli.credentials import CredentialStore, StoredLogin
from devicehub_client.cli.failures import UsageProblem
from devicehub_client.cli.output import Output

Result = TypeVar("Result")

# The ErrorReason of an expired token, and the message for servers that give no reason.
_EXPIRED_REASON = "TOKEN_EXPIRED"
_EXPIRED_MESSAGE = "Token is expired"


def token_expired(error: ApiError) -> bool:
    return error.code == grpc.StatusCode.UNAUTHENTICATED and (
        error.reason == _EXPIRED_REASON or error.message == _EXPIRED_MESSAGE
    )


class Session:
    """The global options of one run, and what they connect to."""

    def __init__(
        self,
        target: str,
        tls: bool,
        ca_file: Path | None,
        config_dir: Path,
        as_json: bool,
        timeout: float,
    ) -> None:
        self.target = target
        self.tls = tls or ca_file is not None
        self.ca_file = ca_file
        self.as_json = as_json
        self.timeout = timeout
        self.credentials = CredentialStore(config_dir)
        self._client: Client | None = None
        self._login: StoredLogin | None = None

    @staticmethod
    def of(context: typer.Context) -> Session:
        session = context.obj
        assert isinstance(session, Session), "the root callback sets the session"
        return session

    def output(self, as_json: bool = False) -> Output:
        """The printer; ``as_json``: the command's own ``--json`` (the global one also counts)."""
        return Output(as_json or self.as_json)

    @property
    def client(self) -> Client:
        """The client, connected lazily (``--help`` and usage errors never connect)."""
        if self._client is None:
            root_certificates = self.ca_file.read_bytes() if self.ca_file else None
            self._client = Client(
                self.target,
                tls=self.tls,
                root_certificates=root_certificates,
                timeout=self.timeout,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def signed_in(self) -> Client:
        """The client with the stored login's access token; a usage problem without one."""
        login = self.credentials.load(self.target)
        if login is None:
            raise UsageProblem(f"not logged in to {self.target}: run `dh login` first")
        self._login = login
        client = self.client
        client.token = login.access_token
        return client

    def remember(self, login: StoredLogin) -> None:
        """Stores a new login for the target and uses it from now on."""
        self.credentials.save(self.target, login)
        self._login = login
        self.client.token = login.access_token

    # --- calls ---

    def call(self, method: Callable[..., Result], request: Message) -> Result:
        """``method(request)``, refreshing an expired access token once."""
        return self.retrying(lambda: method(request))

    def retrying(self, operation: Callable[[], Result]) -> Result:
        """Runs ``operation`` (which calls the service through ``self.client``); when the
        access token has expired, refreshes it and runs ``operation`` once more, so it must
        be repeatable from the start (e.g. reopen the file it streams)."""
        try:
            return operation()
        except ApiError as error:
            if not token_expired(error) or self._login is None:
                raise
        self.refresh()
        return operation()

    def paginate(self, method: Callable[..., Any], request: Message, field: str) -> Iterator[Any]:
        """Every item of every page (AIP-158), each page call refreshing as ``call`` does."""

        def page(*args: Any, **kwargs: Any) -> Any:
            return self.retrying(lambda: method(*args, **kwargs))

        return self.client.paginate(page, request, field)

    def refresh(self) -> None:
        """Exchanges the stored refresh token for a new pair and stores it."""
        login = self._login
        if login is None:
            raise UsageProblem(f"not logged in to {self.target}: run `dh login` first")
        try:
            tokens = self.client.refresh(login.refresh_token)
        except ApiError as error:
            if error.code != grpc.StatusCode.UNAUTHENTICATED:
                raise
            raise UsageProblem(
                f"the login to {self.target} as {login.username} is no longer valid"
                f" ({error.message}): run `dh login` again"
            ) from None
        self.remember(
            StoredLogin(
                username=login.username,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token or login.refresh_token,
            )
        )
