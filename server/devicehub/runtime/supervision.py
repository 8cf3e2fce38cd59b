"""Supervising child processes (the workers, Envoy): when a dead one starts again, when a
crash loop stops the service, and how a child dies with its supervisor.

The rules themselves are stated with the worker pool (``workers.py``); Envoy follows the
same ones (``gateway.Gateway``).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import os
import signal
import time
from collections.abc import Callable

from devicehub.config import Settings

_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """When a supervised process (a worker, Envoy) that died is started again."""

    limit: int = 5  # this many deaths within ``window`` seconds stop the service
    window: float = 60.0
    first_delay: float = 0.5
    max_delay: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(limit=settings.restart_limit, window=settings.restart_window)


class RestartTracker:
    """The recent deaths of one supervised process, and the delay before its next start."""

    def __init__(self, name: str, policy: RestartPolicy) -> None:
        self.name = name
        self.policy = policy
        self._deaths: collections.deque[float] = collections.deque()

    def record_death(self, now: float | None = None) -> float | None:
        """Seconds to wait before starting the process again; None: a crash loop, give up."""
        now = time.monotonic() if now is None else now
        while self._deaths and now - self._deaths[0] > self.policy.window:
            self._deaths.popleft()
        self._deaths.append(now)
        recent = len(self._deaths)
        if recent >= self.policy.limit:
            return None
        return min(self.policy.max_delay, self.policy.first_delay * 2 ** (recent - 1))

    def crash_loop_message(self) -> str:
        return (
            f"{self.name} died {len(self._deaths)} times within {self.policy.window:g} s "
            f"(DEVICEHUB_RESTART_LIMIT={self.policy.limit}); stopping the service"
        )


def describe_exit(exitcode: int | None) -> str:
    """``exit status 3`` or ``killed by SIGKILL``, from a multiprocessing/asyncio exit code."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def _prctl() -> Callable[..., int] | None:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    return None


def die_with_parent(parent: int, prctl: Callable[..., int] | None = None) -> None:
    """Asks Linux to SIGTERM this process when its parent dies without stopping it.

    Linux sends the signal when the parent's *thread* that started this process ends:
    the supervisor starts its children from its main thread. A parent that died before
    the request was made is caught by comparing the parent's pid.
    """
    prctl = prctl or _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def pdeathsig_preexec() -> Callable[[], None]:
    """A ``preexec_fn`` for a child process other than a worker (Envoy): it dies with us.

    prctl is looked up here, in the parent: after ``fork`` in a process with threads, the
    child must not load libraries (the loader's lock may be held by a thread that is gone).
    """
    parent, prctl = os.getpid(), _prctl()
    return lambda: die_with_parent(parent, prctl)
