"""The ``dh`` (also ``devicehub-cli``) command: devicehub for factory and support tooling.

It needs the package's ``cli`` extra (typer and rich). The entry point lives here, apart
from the commands, so that without the extra the command says what to install instead of
failing with a traceback; the commands themselves are in ``devicehub_client.cli.app``.
"""

from __future__ import annotations

import sys

# The top-level modules of the extra: an ImportError naming one of them means the extra
# is missing, any other is a bug to show as such.
_EXTRA_MODULES = frozenset({"typer", "rich"})


def main() -> None:
    """Runs the command line (the ``dh`` and ``devicehub-cli`` entry points)."""
    try:
        from devicehub_client.cli.app import run
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in _EXTRA_MODULES:
            raise
        sys.stderr.write(
            "error: the dh command needs its extra: install devicehub-client[cli]"
            " (pip install 'devicehub-client[cli]')\n"
        )
        sys.exit(2)
    run()


__all__ = ["main"]
