"""DevlogService: usage-log uploads."""

from __future__ import annotations

from google.protobuf import struct_pb2

from devicehub import devlog
from devicehub.api.interceptors import current_caller
from devicehub.storage.db import run_db
from devicehub.v1 import devlog_pb2 as pb
from devicehub.v1 import devlog_pb2_grpc, lux_status_pb2


def _finish_flag(detail: pb.DevlogDetail) -> int | None:
    if not detail.HasField("finish_flag"):
        return None
    value: struct_pb2.Value = detail.finish_flag
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return devlog.parse_finish_flag(value.number_value)
    if kind == "string_value":
        return devlog.parse_finish_flag(value.string_value)
    if kind in (None, "null_value"):
        return None
    return devlog.parse_finish_flag("invalid")


def _entry(message: pb.DevlogEntry) -> devlog.DevlogEntry:
    detail = message.detail_data
    return devlog.DevlogEntry(
        real_user_id=message.real_user_id,
        device_id=message.device_id,
        unique_id=message.unique_id,
        treatment_date=detail.treatment_date,
        finish_flag=_finish_flag(detail),
        last_intensity=detail.last_intensity,
        treatment_time=detail.treatment_time,
        log_file_id=message.log_file_id if message.HasField("log_file_id") else None,
        movement=detail.movement if detail.HasField("movement") else None,
        log_data=detail.log_data if detail.HasField("log_data") else None,
    )


class DevlogServicer(devlog_pb2_grpc.DevlogServiceServicer):
    async def UploadDevlogs(self, request: pb.UploadDevlogsRequest, context):
        entries = [_entry(message) for message in request.log_arrays]
        message = await run_db(devlog.upload_devlogs, current_caller(), entries)
        return lux_status_pb2.LuxStatus(statusCode=200, message=message)
