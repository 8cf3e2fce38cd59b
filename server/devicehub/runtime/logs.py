"""Logging for every devicehub process, configured here once (``serve``, each worker).

``DEVICEHUB_LOG_FORMAT``:

- ``text`` (default, for a terminal): ``<time> <LEVEL> [worker-<n> ]<logger>: <message>``,
  as it always was; a line logged while an RPC is served ends with ``request_id=<id>``.
- ``json``: one JSON object per line (python-json-logger): ``time`` (ISO 8601, UTC),
  ``level``, ``logger``, ``message``, ``process`` (``serve`` or ``worker-<n>``), ``pid``,
  ``request_id`` inside an RPC, every ``extra`` field of the record (the call line's
  ``method``, ``code``, ``duration_ms``, ``account_id``, ``via``: api/call_log.py) and
  ``exc_info`` for a traceback.

The request id comes from ``api.call_context``: it is a context variable, so the database
threads (``storage.db.run_db`` runs in a copy of the caller's context) log it too.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from devicehub.api.call_context import current_request_id
from devicehub.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s {process}%(name)s: %(message)s"
# The record's own fields, renamed; python-json-logger adds the extras after them.
JSON_FIELDS = ("levelname", "name", "message")
JSON_RENAMES = {"levelname": "level", "name": "logger"}


class RequestIdFilter(logging.Filter):
    """Gives every record logged while an RPC is served its ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        if request_id is not None:
            record.request_id = request_id
        return True


class TextFormatter(logging.Formatter):
    """Today's text lines, with the request id appended inside an RPC."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return line
        first, newline, rest = line.partition("\n")  # a traceback follows the first line
        return f"{first} request_id={request_id}{newline}{rest}"


def formatter(log_format: str, process_name: str) -> logging.Formatter:
    """The formatter of ``log_format`` for the process ``process_name``."""
    if log_format == "json":
        return JsonFormatter(
            list(JSON_FIELDS),
            rename_fields=JSON_RENAMES,
            static_fields={"process": process_name},
            timestamp="time",
            json_ensure_ascii=False,
        )
    prefix = "" if process_name == "serve" else f"{process_name} "
    return TextFormatter(TEXT_FORMAT.format(process=prefix))


class _PidFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.pid = record.process
        return True


def configure_logging(settings: Settings, process_name: str) -> None:
    """Sends this process's log records to stderr in the configured format and level.

    ``process_name``: ``serve`` for the main process, ``worker-<n>`` for a worker.
    Replaces any handler set before (a worker is spawned afresh, but tests may call twice).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(settings.log_format, process_name))
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.addFilter(_PidFilter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
