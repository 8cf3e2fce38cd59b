"""How the command fails: one line on standard error and an exit status scripts can test.

Exit statuses: 0 success; 1 the service refused or failed the call (``ApiError``), or the
command found a problem in what the service holds (``CommandFailed``); 2 the command was used
wrongly: typer's own usage errors, and ``UsageProblem`` (not logged in, a CSV that cannot
be used, ...), raised before anything was changed. An interrupted command exits 130.

Every failure prints ``error: ...``; an API error prints ``error: REASON: message``, the
reason being the stable ``ErrorReason`` name (``DEVICE_NOT_FOUND``), or the gRPC code when
the call never reached the service (``UNAVAILABLE``).
"""

from __future__ import annotations

from devicehub_client import ApiError

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandFailed(Exception):
    """The command cannot go on; ``str()`` is the line to print after ``error: ``."""

    exit_code = EXIT_API_ERROR


class UsageProblem(CommandFailed):
    """The command was used wrongly (or before ``dh login``): nothing was changed."""

    exit_code = EXIT_USAGE


def api_error_line(error: ApiError) -> str:
    """``error: REASON: message``, plus the request id a server failure carries (the id to
    quote in a bug report; it names no secret)."""
    reason = error.reason or error.code.name
    line = f"error: {reason}: {error.message}"
    if error.request_id:
        line += f" (request id {error.request_id})"
    return line
