"""DeviceService: the device registry."""

from __future__ import annotations

from google.protobuf import empty_pb2

from devicehub import catalog
from devicehub.api import converters
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import send_list_metadata
from devicehub.storage.db import run_db
from devicehub.v1 import device_pb2 as pb
from devicehub.v1 import device_pb2_grpc


class DeviceServicer(device_pb2_grpc.DeviceServiceServicer):
    async def ListDevices(self, request: pb.ListDevicesRequest, context):
        page = await run_db(
            catalog.list_devices,
            current_caller(),
            request.page_size,
            request.page_token,
            batch_id=request.batch,
            mac_address=request.mac_address,
        )
        await send_list_metadata(context, "devices", page.next_page_token)
        return pb.ListDevicesResponse(
            devices=[converters.device(row) for row in page.items],
            next_page_token=page.next_page_token,
        )

    async def CreateDevice(self, request: pb.CreateDeviceRequest, context):
        given = request.device
        row = await run_db(
            catalog.create_device,
            current_caller(),
            given.device_type,
            given.batch,
            given.serial_number,
            given.mac_address,
        )
        return converters.device(row)

    async def BatchCreateDevices(self, request: pb.BatchCreateDevicesRequest, context):
        ids = await run_db(
            catalog.batch_create_devices,
            current_caller(),
            request.device_type,
            request.batch,
            request.start_serial,
            request.count,
            request.mac_prefix,
            [(device.serial_number, device.mac_address) for device in request.devices],
        )
        return pb.BatchCreateDevicesResponse(
            status="success", message=f"成功创建{len(ids)}个设备", data=ids
        )

    async def GetDevice(self, request: pb.GetDeviceRequest, context):
        return converters.device(await run_db(catalog.get_device, request.id, current_caller()))

    async def UpdateDevice(self, request: pb.UpdateDeviceRequest, context):
        given = request.device
        row = await run_db(
            catalog.update_device,
            current_caller(),
            given.id,
            given.device_type,
            given.batch,
            given.serial_number,
            given.mac_address,
        )
        return converters.device(row)

    async def DeleteDevice(self, request: pb.DeleteDeviceRequest, context):
        await run_db(catalog.delete_device, current_caller(), request.id)
        return empty_pb2.Empty()
