"""Row-to-message conversion: the hand-written time formats match protobuf's own."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from devicehub.api import converters

TIMES = [
    dt.datetime(2026, 1, 1),
    dt.datetime(2026, 11, 22, 23, 59, 59, 1000),
    dt.datetime(2026, 2, 28, 12, 0, 0, 123456),
    dt.datetime(2000, 2, 29, 0, 0, 0, 999999),
    dt.datetime(1970, 1, 1),
    dt.datetime(1969, 12, 31, 23, 59, 59, 500000),
    dt.datetime(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
]


def protobuf_timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value.replace(tzinfo=dt.UTC))
    return message


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_timestamp_matches_from_datetime(value):
    assert converters.timestamp(value) == protobuf_timestamp(value)


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_rfc3339_matches_to_json_string(value):
    assert converters.rfc3339(value) == protobuf_timestamp(value).ToJsonString()


def test_nullable_time():
    assert converters.nullable_time(None).WhichOneof("kind") == "null_value"
    assert converters.nullable_time(TIMES[1]).string_value == "2026-11-22T23:59:59.001Z"
