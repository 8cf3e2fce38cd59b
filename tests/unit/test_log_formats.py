"""Log formats, request ids and the access log settings, without a stack
(tests/stack/test_logs.py runs them in a real one; this file has another name, since
pytest needs unique test module basenames)."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
import yaml

from devicehub.api import call_context
from devicehub.config import Settings
from devicehub.runtime import logs
from devicehub.runtime.gateway import render_config, validate_config


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("devicehub.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def emit(log_format: str, process: str, entry: logging.LogRecord) -> str:
    """What a handler configured like configure_logging's writes for ``entry``."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(log_format, process))
    handler.addFilter(logs.RequestIdFilter())
    handler.addFilter(logs._PidFilter())
    handler.handle(entry)
    return out.getvalue()


@pytest.fixture
def in_call():
    token = call_context.begin("req-123")
    try:
        yield
    finally:
        call_context.end(token)


def test_text_lines_keep_the_earlier_format_outside_a_call():
    line = emit("text", "worker-1", record("hello %s", "there"))
    time, _, rest = line.partition(" INFO ")
    assert len(time) == len("2026-01-01 00:00:00,000")  # logging's asctime
    assert rest == "worker-1 devicehub.test: hello there\n"
    assert emit("text", "serve", record()).endswith(" INFO devicehub.test: hello %s\n")


def test_text_lines_in_a_call_end_with_its_request_id(in_call):
    assert emit("text", "serve", record("x")).endswith(": x request_id=req-123\n")


def test_a_traceback_stays_after_the_line_that_names_the_request_id(in_call):
    try:
        raise ValueError("boom")
    except ValueError:
        entry = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), None)
        entry.exc_info = sys.exc_info()
    first, _, rest = emit("text", "serve", entry).partition("\n")
    assert first.endswith("failed request_id=req-123")
    assert rest.startswith("Traceback") and "ValueError: boom" in rest


def test_json_lines_name_time_level_logger_message_process_and_the_extras(in_call):
    entry = record("call %s", "done", method="/devicehub.v1.X/Y", code="OK", account_id=7)
    line = emit("json", "worker-0", entry)
    assert line.count("\n") == 1
    fields = json.loads(line)
    assert fields["message"] == "call done"
    assert fields["level"] == "INFO"
    assert fields["logger"] == "devicehub.test"
    assert fields["process"] == "worker-0"
    assert isinstance(fields["pid"], int)
    assert fields["request_id"] == "req-123"
    assert fields["time"].endswith("+00:00")  # ISO 8601, UTC
    assert (fields["method"], fields["code"], fields["account_id"]) == (
        "/devicehub.v1.X/Y",
        "OK",
        7,
    )


def test_json_lines_outside_a_call_have_no_request_id():
    assert "request_id" not in json.loads(emit("json", "serve", record()))


def test_json_lines_escape_what_a_message_holds():
    fields = json.loads(emit("json", "serve", record('a\nb "c" 北京')))
    assert fields["message"] == 'a\nb "c" 北京'


def test_configure_logging_replaces_the_handlers_and_sets_the_level():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure_logging(Settings(log_format="json", log_level="warning"), "serve")
        logs.configure_logging(Settings(log_format="json", log_level="warning"), "serve")
        assert len(root.handlers) == 1 and root.level == logging.WARNING
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.parametrize(
    "sent",
    ["d0fac0e9-a3a7-4b08-837f-4c23f76a6060", "my-req.1:2_3", "a" * 128],
)
def test_an_acceptable_client_request_id_is_kept(sent):
    assert call_context.request_id_from([("other", "x"), ("x-request-id", sent)]) == sent


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("x-request-id", "")],
        [("x-request-id", "a" * 129)],
        [("x-request-id", "has space")],
        [("x-request-id", 'bad"quote')],
        [("x-request-id", "北京")],
        [("x-request-id", b"bytes")],
    ],
)
def test_a_missing_or_unfit_request_id_is_replaced_by_a_new_one(metadata):
    first = call_context.request_id_from(metadata)
    second = call_context.request_id_from(metadata)
    assert first != second and len(first) == 32 and first.isalnum()


def test_the_account_is_noted_only_inside_a_call(in_call):
    call_context.note_account(42)
    current = call_context.current()
    assert current is not None and current.account_id == 42


def test_noting_an_account_outside_a_call_does_nothing():
    call_context.note_account(42)
    assert call_context.current() is None


def test_settings_read_the_log_format_and_the_access_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"DEVICEHUB_LOG_FORMAT": " JSON "}).log_format == "json"
    with pytest.raises(SystemExit, match="DEVICEHUB_LOG_FORMAT"):
        Settings.from_env({"DEVICEHUB_LOG_FORMAT": "xml"})
    assert Settings.from_env({}).access_log == "-"
    assert Settings.from_env({"DEVICEHUB_ACCESS_LOG": "off"}).access_log == "off"
    relative = Settings.from_env({"DEVICEHUB_ACCESS_LOG": "logs/access.log"}).access_log
    assert relative == str(tmp_path / "logs" / "access.log")


def rendered(tmp_path: Path, **env: str) -> dict:
    settings = Settings.from_env({"DEVICEHUB_DATA_DIR": str(tmp_path), **env})
    text = render_config(settings)
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    check = validate_config(path)
    assert check.returncode == 0, check.stdout + check.stderr
    return yaml.safe_load(text)


def manager(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]


def test_the_access_log_goes_to_stdout_by_default_and_never_names_secrets(tmp_path):
    config = rendered(tmp_path)
    hcm = manager(config)
    assert hcm["preserve_external_request_id"] is True
    [access_log] = hcm["access_log"]
    assert access_log["name"] == "envoy.access_loggers.stdout"
    fields = access_log["typed_config"]["log_format"]["json_format"]
    assert fields["request_id"] == "%REQ(X-REQUEST-ID)%"
    assert "REQ_WITHOUT_QUERY" in fields["path"]  # the WebSocket's ?token= stays out
    everything = json.dumps(fields).lower()
    assert "authorization" not in everything and "cookie" not in everything
    assert "application_log_config" not in config  # text: Envoy's own format


def test_the_access_log_can_go_to_a_file_or_nowhere(tmp_path):
    path = tmp_path / "access.log"
    [access_log] = manager(rendered(tmp_path, DEVICEHUB_ACCESS_LOG=str(path)))["access_log"]
    assert access_log["name"] == "envoy.access_loggers.file"
    assert access_log["typed_config"]["path"] == str(path)
    assert "json_format" in access_log["typed_config"]["log_format"]
    assert "access_log" not in manager(rendered(tmp_path, DEVICEHUB_ACCESS_LOG="off"))


def test_json_logs_make_envoys_own_lines_json_too(tmp_path):
    config = rendered(tmp_path, DEVICEHUB_LOG_FORMAT="json")
    fields = config["application_log_config"]["log_format"]["json_format"]
    assert fields["process"] == "envoy" and fields["message"] == "%j"
