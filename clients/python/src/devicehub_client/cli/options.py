"""What every command shares: the ``--json`` flag, the example in its help, page sizes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json", help="Print JSON (protobuf field names) instead of a table; also global."
    ),
]

# Lists are read in pages of this many items: the largest page the list methods take.
PAGE_SIZE = 1000


def examples(*lines: str) -> str:
    """The epilog of a command's ``--help``: one example command per line. (Help text is
    rich markup, where ``[cli]`` would vanish, so the examples are escaped.)"""
    return "Example:\n" + "\n".join(f"  {escape(line)}" for line in lines)
