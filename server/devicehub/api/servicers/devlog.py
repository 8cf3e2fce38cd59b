"""DevlogService: usage-log uploads."""

from __future__ import annotations

from google.protobuf import struct_pb2

from devicehub import devlog
from devicehub.api.interceptors import current_caller
from devicehub.storage.db import run_db
from devicehub.v1 import devlog_pb2 as pb
from devicehub.v1 import devlog_pb2_grpc, lux_status_pb2

# The finish flags firmware sends as numbers, decided without parsing each.
_NUMBER_FLAGS = {float(flag): flag for flag in devlog.FINISH_FLAGS}


def _finish_flag(detail: pb.DevlogDetail) -> int | None:
    # An absent finish_flag reads as an empty Value: no kind, like null.
    value: struct_pb2.Value = detail.finish_flag
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number in _NUMBER_FLAGS:
            return _NUMBER_FLAGS[number]
        return devlog.parse_finish_flag(number)
    if kind == "string_value":
        return devlog.parse_finish_flag(value.string_value)
    if kind in (None, "null_value"):
        return None
    return devlog.parse_finish_flag("invalid")


def _upload(request: pb.UploadDevlogsRequest) -> devlog.DevlogUpload:
    """The request's entries as columns (``devlog.DevlogUpload``).

    One pass over the entries fills every column: each pass over a repeated field makes
    a Python object per entry again, so a comprehension per column cost twice as much.
    """
    upload = devlog.DevlogUpload([], [], [], [], [], [], [], [], [], [])
    for log in request.log_arrays:
        detail = log.detail_data
        upload.real_user_ids.append(log.real_user_id)
        upload.device_ids.append(log.device_id)
        upload.unique_ids.append(log.unique_id)
        upload.treatment_dates.append(detail.treatment_date)
        upload.finish_flags.append(_finish_flag(detail))
        upload.last_intensities.append(detail.last_intensity)
        upload.treatment_times.append(detail.treatment_time)
        upload.log_file_ids.append(log.log_file_id if log.HasField("log_file_id") else None)
        upload.movements.append(detail.movement if detail.HasField("movement") else None)
        upload.log_data.append(detail.log_data if detail.HasField("log_data") else None)
    return upload


class DevlogServicer(devlog_pb2_grpc.DevlogServiceServicer):
    async def UploadDevlogs(self, request: pb.UploadDevlogsRequest, context):
        upload = _upload(request)
        message = await run_db(devlog.upload_devlogs, current_caller(), upload)
        return lux_status_pb2.LuxStatus(statusCode=200, message=message)
