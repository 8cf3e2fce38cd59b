"""Fixed-window counters in the database, shared by every server process.

Rules:

- One row per ``(scope, subject)`` in ``throttle_window``: the end of its current window
  (Unix seconds) and the hits counted in it. A scope names what is counted
  (``login-address``, ``rtc-address-misses``, ...), the subject (key) whose hits they are:
  an address, a username, a MAC.
- A hit is one atomic upsert on SQLite and PostgreSQL: it opens a new window when the
  stored one is over (the row is reused, so a key costs one row however long it lives),
  else adds one, and returns the count; every worker process counts in the same row.
- Windows are fixed and aligned (``floor(now / length) * length``), so every process
  agrees on them without coordination and ``Retry-After`` is the time to the window's end.
- Keys that are long or not plain printable ASCII (usernames are caller input: NUL,
  surrogates, megabytes) are stored as their SHA-256, so no caller input reaches the
  table unbounded or in a form the database refuses.
- Rows whose window is over are deleted by a sweep that each process runs at most every
  ``SWEEP_SECONDS`` within a check, so keys that stopped (random MACs, one-off addresses)
  do not grow the table without bound.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from devicehub.errors import ResourceExhausted
from devicehub.storage import throttle_windows
from devicehub.v1 import error_pb2

SWEEP_SECONDS = 60.0
_PLAIN_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")

_last_sweep = 0.0


class Throttled(ResourceExhausted):
    """A limit of a window was reached; ``retry_after`` is the seconds until it ends.

    The error interceptor sends it as ``retry-after`` metadata, which the REST edge
    answers as the ``Retry-After`` header.
    """

    def __init__(self, message: str, retry_after: int, reason: int | None = None) -> None:
        super().__init__(message, error_pb2.ERROR_REASON_RATE_LIMITED if reason is None else reason)
        self.retry_after = max(1, retry_after)


def stored_key(key: str) -> str:
    """``key`` as stored: itself if short plain ASCII, else ``#`` + its SHA-256."""
    if _PLAIN_KEY.match(key):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return "#" + digest


def _sweep(now: float) -> None:
    global _last_sweep
    if now - _last_sweep < SWEEP_SECONDS:
        return
    _last_sweep = now
    throttle_windows.delete_ended(int(now))


@dataclass(frozen=True)
class Window:
    """Hits of one key in its current window."""

    hits: int
    ends: int

    def retry_after(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return max(1, math.ceil(self.ends - now))


@dataclass(frozen=True)
class Limit:
    """At most ``hits`` per ``seconds``-long fixed window, per key of ``scope``."""

    scope: str
    hits: int
    seconds: int

    def window_ends(self, now: float) -> int:
        return (int(now) // self.seconds + 1) * self.seconds

    def hit(self, key: str, now: float | None = None) -> Window:
        """Counts one hit of ``key`` (one upsert) and returns its window."""
        now = time.time() if now is None else now
        return count(self.scope, key, self.window_ends(now), now)

    def peek(self, keys: Iterable[str], now: float | None = None) -> dict[str, Window]:
        """The current windows of ``keys`` that have hits (one read), without counting."""
        return peek(self.scope, keys, now)

    def over(self, window: Window | None) -> bool:
        return window is not None and window.hits > self.hits


def count(scope: str, key: str, window_ends: int, now: float | None = None) -> Window:
    """Counts one hit of ``(scope, key)`` in the window ending at ``window_ends``.

    A row whose window ended before ``window_ends`` starts again at 1. Callers with
    windows of their own (a signature valid until a given time) pass its end directly.
    """
    now = time.time() if now is None else now
    _sweep(now)
    stored = throttle_windows.hit(scope, stored_key(key), int(window_ends))
    return Window(hits=int(stored.hits), ends=int(stored.window_ends))


def peek(scope: str, keys: Iterable[str], now: float | None = None) -> dict[str, Window]:
    """The windows of ``keys`` in ``scope`` that are still running, by key (one read)."""
    return {key: window for (_, key), window in current([(scope, k) for k in keys], now).items()}


def current(
    subjects: Iterable[tuple[str, str]], now: float | None = None
) -> dict[tuple[str, str], Window]:
    """The running windows of ``(scope, key)`` pairs that have hits, by pair (one read)."""
    now = time.time() if now is None else now
    by_stored = {(scope, stored_key(key)): (scope, key) for scope, key in subjects}
    if not by_stored:
        return {}
    return {
        by_stored[(stored.scope, stored.subject)]: Window(int(stored.hits), int(stored.window_ends))
        for stored in throttle_windows.running(list(by_stored), int(now))
    }


def undo(subjects: Iterable[tuple[str, str]], now: float | None = None) -> None:
    """Takes back one hit of each ``(scope, key)`` pair whose window is still running.

    For counts taken before the outcome is known (a login attempt is counted as failed
    before its password is checked, so concurrent attempts cannot all pass the check),
    undone when it succeeds (one statement).
    """
    now = time.time() if now is None else now
    pairs = [(scope, stored_key(key)) for scope, key in subjects]
    if not pairs:
        return
    throttle_windows.take_back(pairs, int(now))
