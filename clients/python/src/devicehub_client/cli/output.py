"""What commands print: rich tables for people, JSON for scripts (``--json``).

JSON is protobuf's own mapping (``MessageToDict`` with the proto field names), so a script
reads the keys it finds in the ``.proto`` files: a single message is one JSON object, a list
one JSON array, a stream one object per line (JSON lines), written as each item arrives.
Fields at their default value are left out, as protobuf's JSON does, and 64-bit integers
(message ids) are strings. Tables show the columns worth a glance; ``--json`` has every field.

Data goes to standard output, everything else (progress bars, notes) to standard error, so
that ``dh --json ... | jq`` sees only data. Table cells are ``Text``, never markup, so a
device name such as ``[red]`` is shown as it is.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Without a terminal (a pipe, a file) rich would fold tables into 80 columns.
_PIPE_WIDTH = 200


def message_dict(message: Message) -> dict[str, Any]:
    """The message as ``--json`` prints it."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _complete_dict(message: Message) -> dict[str, Any]:
    """Every field, defaults included (the table shows ``false`` and ``0`` too), in the
    order of the ``.proto`` (MessageToDict puts the fields it had to add last)."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _in_field_order(message, data)


def _in_field_order(message: Message, data: dict[str, Any]) -> dict[str, Any]:
    ordered: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        kind = field.message_type
        # Nested messages of this API (not well-known types such as Timestamp, printed as
        # strings, and not maps) are ordered too.
        if (
            kind is not None
            and not kind.full_name.startswith("google.")
            and not (kind.GetOptions().map_entry)
        ):
            nested = getattr(message, field.name)
            if isinstance(value, list):
                pairs = zip(nested, value, strict=True)
                value = [_in_field_order(item, entry) for item, entry in pairs]
            elif isinstance(value, dict):
                value = _in_field_order(nested, value)
        ordered[field.name] = value
    return ordered


@dataclass(frozen=True)
class Column:
    """A table column: its header and the field it shows (a dotted path into the JSON)."""

    header: str
    field: str = ""

    @property
    def path(self) -> str:
        return self.field or self.header


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


class Output:
    """The printer of one command run."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
        self.errors = Console(stderr=True, highlight=False)

    # --- data (standard output) ---

    def item(self, message: Message) -> None:
        """One message: a JSON object, or a table of its fields (nested ones dotted)."""
        if self.as_json:
            self.json(message_dict(message))
            return
        self.fields(_complete_dict(message))

    def items(self, messages: Iterable[Message], columns: Sequence[Column]) -> int:
        """A list: a JSON array, or a table of ``columns``; returns how many there were."""
        if self.as_json:
            listed = [message_dict(message) for message in messages]
            self.json(listed)
            return len(listed)
        table = Table(box=box.SIMPLE_HEAD)
        for column in columns:
            table.add_column(column.header)
        count = 0
        for message in messages:
            data = _complete_dict(message)
            table.add_row(*(Text(cell_text(_lookup(data, c.path))) for c in columns))
            count += 1
        self.console.print(table)
        return count

    def fields(self, data: dict[str, Any]) -> None:
        """A JSON object as a table of field and value (``--json``: the object)."""
        if self.as_json:
            self.json(data)
            return
        table = Table(box=box.SIMPLE, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in _flatten(data):
            table.add_row(Text(key), Text(cell_text(value)))
        self.console.print(table)

    def json(self, data: Any) -> None:
        self.console.file.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        self.console.file.flush()

    def json_line(self, data: Any) -> None:
        """One item of a stream, written at once (a reader of the pipe sees it now)."""
        self.console.file.write(json.dumps(data, ensure_ascii=False) + "\n")
        self.console.file.flush()

    def line(self, text: str) -> None:
        """A line of data for people (a stream item, a result), flushed at once."""
        self.console.print(Text(text), soft_wrap=True)
        self.console.file.flush()

    # --- about the run (standard error) ---

    def note(self, text: str) -> None:
        self.errors.print(Text(text), soft_wrap=True)
