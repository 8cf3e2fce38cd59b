"""The NUL rule of every request (api/request_checks.py), on messages built here."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from devicehub.api.request_checks import Rejected, _nul_field, checked_deserializer
from devicehub.v1 import devlog_pb2, movement_pb2


def upload(entries: int = 3) -> devlog_pb2.UploadDevlogsRequest:
    detail = devlog_pb2.DevlogDetail(
        treatment_date="2026-01-02T10:00:00",
        finish_flag=struct_pb2.Value(number_value=1),  # a double: zero bytes on the wire
        treatment_time=600,
    )
    entry = devlog_pb2.DevlogEntry(device_id=7, unique_id="u-1", detail_data=detail)
    return devlog_pb2.UploadDevlogsRequest(log_arrays=[entry] * entries)


def test_a_clean_request_with_zero_bytes_passes():
    request = upload()
    raw = request.SerializeToString()
    assert b"\x00" in raw
    assert _nul_field(request) is None
    assert checked_deserializer(devlog_pb2.UploadDevlogsRequest.FromString)(raw) == request


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda r: setattr(r.log_arrays[2], "unique_id", "a\x00"), "log_arrays[2].unique_id"),
        (
            lambda r: setattr(r.log_arrays[1].detail_data, "log_data", "\x00"),
            "log_arrays[1].detail_data.log_data",
        ),
        (
            lambda r: r.log_arrays[0].detail_data.finish_flag.MergeFrom(
                struct_pb2.Value(string_value="2\x00")
            ),
            "log_arrays[0].detail_data.finish_flag.string_value",
        ),
    ],
)
def test_the_first_nul_is_named_by_its_path(change, path):
    request = upload()
    change(request)
    assert _nul_field(request) == path
    parsed = checked_deserializer(devlog_pb2.UploadDevlogsRequest.FromString)(
        request.SerializeToString()
    )
    assert isinstance(parsed, Rejected)
    assert str(parsed.error) == f"{path} must not contain NUL characters"


def test_map_keys_values_and_nested_structs_are_looked_into():
    struct = struct_pb2.Struct()
    struct.update({"ok": "fine", "inner": {"deep": ["x", "y\x00"]}})
    assert _nul_field(struct) == "fields.struct_value.fields.list_value.values[1].string_value"
    keyed = struct_pb2.Struct()
    keyed.update({"bad\x00key": 1})
    assert _nul_field(keyed) == "fields"


def test_numeric_only_messages_are_not_walked():
    samples = movement_pb2.UploadMovementRequest(
        movement_data=[movement_pb2.MovementSample(val=0, timestamp=1)] * 10
    )
    assert _nul_field(samples) is None
