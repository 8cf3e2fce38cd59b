"""The ``throttle_window`` table: one fixed-window counter per ``(scope, subject)``.

Every statement is one atomic statement on SQLite and PostgreSQL, so the server
processes count in the same rows without other coordination (``throttle.py`` has the
rules).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from devicehub.storage.db import execute, named_rows


@dataclass(frozen=True)
class StoredWindow:
    """A counter as stored: its hits and the end of its window (Unix seconds)."""

    scope: str
    subject: str
    hits: int
    window_ends: int


# A new window when the stored one is over (the row is reused), else one hit more.
_HIT = (
    "INSERT INTO throttle_window (scope, subject, window_ends, hits) VALUES (%s, %s, %s, 1)"
    " ON CONFLICT (scope, subject) DO UPDATE SET"
    " hits = CASE WHEN throttle_window.window_ends >= excluded.window_ends"
    " THEN throttle_window.hits + 1 ELSE 1 END,"
    " window_ends = CASE WHEN throttle_window.window_ends >= excluded.window_ends"
    " THEN throttle_window.window_ends ELSE excluded.window_ends END"
    " RETURNING scope, subject, hits, window_ends"
)
_DELETE_ENDED = "DELETE FROM throttle_window WHERE window_ends < %s"


def hit(scope: str, subject: str, window_ends: int) -> StoredWindow:
    """Counts one hit in the window ending at ``window_ends``; a row whose window ended
    before it starts again at 1."""
    (row,) = named_rows(execute(_HIT, (scope, subject, window_ends)))
    return StoredWindow(**row)


def delete_ended(now: int) -> None:
    """Deletes the rows whose window ended before ``now``."""
    execute(_DELETE_ENDED, (now,))


def _any_of(pairs: Collection[tuple[str, str]]) -> str:
    return " OR ".join("(scope = %s AND subject = %s)" for _ in pairs)


def running(pairs: Collection[tuple[str, str]], now: int) -> list[StoredWindow]:
    """The stored ``(scope, subject)`` pairs whose window is still running at ``now``."""
    cursor = execute(
        "SELECT scope, subject, hits, window_ends FROM throttle_window"
        f" WHERE ({_any_of(pairs)}) AND window_ends > %s",
        (*(value for pair in pairs for value in pair), now),
    )
    return [StoredWindow(**row) for row in named_rows(cursor)]


def take_back(pairs: Collection[tuple[str, str]], now: int) -> None:
    """One hit less for each pair whose window is still running at ``now`` (never below 0)."""
    execute(
        f"UPDATE throttle_window SET hits = hits - 1 WHERE ({_any_of(pairs)})"
        " AND window_ends > %s AND hits > 0",
        (*(value for pair in pairs for value in pair), now),
    )
