"""DeviceTypeService: device types of the catalog."""

from __future__ import annotations

from google.protobuf import empty_pb2

from devicehub import catalog
from devicehub.api import converters
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import send_list_metadata
from devicehub.storage.db import run_db
from devicehub.v1 import device_type_pb2 as pb
from devicehub.v1 import device_type_pb2_grpc


class DeviceTypeServicer(device_type_pb2_grpc.DeviceTypeServiceServicer):
    async def ListDeviceTypes(self, request: pb.ListDeviceTypesRequest, context):
        page = await run_db(catalog.list_device_types, request.page_size, request.page_token)
        await send_list_metadata(context, "device_types", page.next_page_token)
        return pb.ListDeviceTypesResponse(
            device_types=[converters.device_type(row) for row in page.items],
            next_page_token=page.next_page_token,
        )

    async def CreateDeviceType(self, request: pb.CreateDeviceTypeRequest, context):
        given = request.device_type
        row = await run_db(
            catalog.create_device_type, current_caller(), given.name, given.code, given.description
        )
        return converters.device_type(row)

    async def GetDeviceType(self, request: pb.GetDeviceTypeRequest, context):
        return converters.device_type(await run_db(catalog.get_device_type, request.id))

    async def UpdateDeviceType(self, request: pb.UpdateDeviceTypeRequest, context):
        given = request.device_type
        row = await run_db(
            catalog.update_device_type,
            current_caller(),
            given.id,
            given.name,
            given.code,
            given.description,
        )
        return converters.device_type(row)

    async def DeleteDeviceType(self, request: pb.DeleteDeviceTypeRequest, context):
        await run_db(catalog.delete_device_type, current_caller(), request.id)
        return empty_pb2.Empty()
