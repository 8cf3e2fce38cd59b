"""DeviceBatchService: production batches of the catalog."""

from __future__ import annotations

from google.protobuf import empty_pb2

from devicehub import catalog
from devicehub.api import converters
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import send_list_metadata
from devicehub.storage.db import run_db
from devicehub.v1 import device_batch_pb2 as pb
from devicehub.v1 import device_batch_pb2_grpc


class DeviceBatchServicer(device_batch_pb2_grpc.DeviceBatchServiceServicer):
    async def ListDeviceBatches(self, request: pb.ListDeviceBatchesRequest, context):
        page = await run_db(catalog.list_device_batches, request.page_size, request.page_token)
        await send_list_metadata(context, "device_batches", page.next_page_token)
        return pb.ListDeviceBatchesResponse(
            device_batches=[converters.device_batch(row) for row in page.items],
            next_page_token=page.next_page_token,
        )

    async def CreateDeviceBatch(self, request: pb.CreateDeviceBatchRequest, context):
        given = request.device_batch
        row = await run_db(
            catalog.create_device_batch,
            current_caller(),
            given.device_type,
            given.batch_number,
            given.production_date,
            given.quantity,
            given.description,
        )
        return converters.device_batch(row)

    async def GetDeviceBatch(self, request: pb.GetDeviceBatchRequest, context):
        return converters.device_batch(await run_db(catalog.get_device_batch, request.id))

    async def UpdateDeviceBatch(self, request: pb.UpdateDeviceBatchRequest, context):
        given = request.device_batch
        row = await run_db(
            catalog.update_device_batch,
            current_caller(),
            given.id,
            given.device_type,
            given.batch_number,
            given.production_date,
            given.quantity,
            given.description,
        )
        return converters.device_batch(row)

    async def DeleteDeviceBatch(self, request: pb.DeleteDeviceBatchRequest, context):
        await run_db(catalog.delete_device_batch, current_caller(), request.id)
        return empty_pb2.Empty()
