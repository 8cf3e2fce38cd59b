"""The logins ``dh login`` keeps: one access and refresh token pair per target.

They live in ``credentials.json`` in the config directory (``--config-dir``, by default the
user's, ``click``'s ``get_app_dir("devicehub")``), keyed by target, so that one engineer can
be logged in to a test and a production service at once. The file holds bearer tokens, so it
is written as the platform's credential files are: mode 0600 in a directory of mode 0700,
replaced atomically (a new file renamed over the old), so that a command interrupted while
saving a refreshed pair never leaves half a file. Its content is never printed or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devicehub_client.cli.failures import UsageProblem

FILE_NAME = "credentials.json"


@dataclass(frozen=True)
class StoredLogin:
    """What ``dh login`` stored for one target."""

    username: str
    # Secrets: never in a repr (a traceback, a debugger).
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)


class CredentialStore:
    """The logins of one config directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME

    def load(self, target: str) -> StoredLogin | None:
        entry = self._read().get(target)
        if entry is None:
            return None
        try:
            return StoredLogin(
                username=str(entry["username"]),
                access_token=str(entry["access_token"]),
                refresh_token=str(entry["refresh_token"]),
            )
        except (KeyError, TypeError):
            raise self._unusable("an entry lacks its tokens") from None

    def save(self, target: str, login: StoredLogin) -> None:
        logins = self._read()
        logins[target] = asdict(login)
        self._write(logins)

    def forget(self, target: str) -> bool:
        """Removes the target's login; whether there was one."""
        logins = self._read()
        if logins.pop(target, None) is None:
            return False
        self._write(logins)
        return True

    def _read(self) -> dict[str, dict]:
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            # The message names the file and the problem, never the content.
            raise self._unusable(type(error).__name__) from None
        logins = content.get("logins") if isinstance(content, dict) else None
        if not isinstance(logins, dict):
            raise self._unusable("no logins object")
        return logins

    def _write(self, logins: dict[str, dict]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.directory / f".{FILE_NAME}.{os.getpid()}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                # The umask can only take bits away from 0600; fchmod also fixes a file
                # left behind by an earlier run under another umask.
                os.fchmod(file.fileno(), 0o600)
                json.dump({"logins": logins}, file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def _unusable(self, problem: str) -> UsageProblem:
        return UsageProblem(
            f"cannot read the logins in {self.path} ({problem}): delete the file and log in again"
        )
