"""MovementService: IMU sample uploads and reads."""

from __future__ import annotations

from devicehub import movement
from devicehub.api.interceptors import current_caller
from devicehub.storage.db import run_db
from devicehub.v1 import lux_status_pb2, movement_pb2_grpc
from devicehub.v1 import movement_pb2 as pb


class MovementServicer(movement_pb2_grpc.MovementServiceServicer):
    async def UploadMovement(self, request: pb.UploadMovementRequest, context):
        samples = [(sample.timestamp, sample.val) for sample in request.movement_data]
        await run_db(
            movement.upload_movement,
            current_caller(),
            request.real_user_id,
            request.device_id,
            samples,
        )
        return lux_status_pb2.LuxStatus(statusCode=200, message=movement.UPLOADED)

    async def ListMovementSamples(self, request: pb.ListMovementSamplesRequest, context):
        rows, next_page_token = await run_db(
            movement.list_samples,
            current_caller(),
            request.real_user_id,
            request.device_id,
            request.start,
            request.end,
            request.page_size,
            request.page_token,
        )
        return pb.ListMovementSamplesResponse(
            samples=[pb.MovementSample(timestamp=ts, val=val) for ts, val in rows],
            next_page_token=next_page_token,
        )
