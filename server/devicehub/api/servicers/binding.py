"""BindingService: the Lux device API and the user-devices API."""

from __future__ import annotations

from google.protobuf import empty_pb2

from devicehub import binding
from devicehub.api import converters
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import send_list_metadata
from devicehub.storage.db import run_db
from devicehub.v1 import binding_pb2 as pb
from devicehub.v1 import binding_pb2_grpc, lux_status_pb2


class BindingServicer(binding_pb2_grpc.BindingServiceServicer):
    async def GetChildDevice(self, request: pb.GetChildDeviceRequest, context):
        bound = await run_db(binding.get_child_device, current_caller(), request.real_user_id)
        return converters.lux_device(bound)

    async def ListChildDevices(self, request, context):
        rows = await binding.list_child_devices(current_caller())
        # Over REST a bare array: envoy.yaml's route for the method says so.
        response = pb.ListChildDevicesResponse()
        converters.child_device_rows(rows, into=response.rows)
        return response

    async def ConnectDevice(self, request: pb.ConnectDeviceRequest, context):
        await run_db(
            binding.connect_device,
            current_caller(),
            request.serial_code,
            request.mac_id,
            request.unique_id,
            request.real_user_id,
        )
        return pb.ConnectDeviceResponse(statuscode=200, message="device connected")

    async def DisconnectDevice(self, request: pb.DisconnectDeviceRequest, context):
        await run_db(
            binding.disconnect_device, current_caller(), request.unique_id, request.real_user_id
        )
        return lux_status_pb2.LuxStatus(statusCode=200, message="device unconnected")

    async def CheckDevice(self, request: pb.CheckDeviceRequest, context):
        detail, bound = await run_db(binding.check_device, current_caller(), request.unique_id)
        return pb.CheckDeviceResponse(detail=detail, device_data=converters.lux_device(bound))

    async def UpdateDeviceAlias(self, request: pb.UpdateDeviceAliasRequest, context):
        bound = await run_db(
            binding.update_device_alias,
            current_caller(),
            request.device_id,
            request.real_user_id,
            request.device_alias,
        )
        return converters.lux_device(bound)

    async def ListUserDevices(self, request, context):
        rows = await run_db(binding.list_user_devices, current_caller())
        await send_list_metadata(context, "user_devices", "")
        return pb.ListUserDevicesResponse(
            user_devices=[converters.user_device(row) for row in rows]
        )

    async def BindUserDevice(self, request: pb.BindUserDeviceRequest, context):
        row = await run_db(
            binding.bind_user_device,
            current_caller(),
            request.mac_address,
            request.nickname,
            request.is_primary,
        )
        return converters.user_device(row)

    async def SetPrimaryUserDevice(self, request: pb.SetPrimaryUserDeviceRequest, context):
        row = await run_db(binding.set_primary, current_caller(), request.id)
        return pb.SetPrimaryUserDeviceResponse(
            status="success", message="成功设置主要设备", data=converters.user_device(row)
        )

    async def UnbindUserDevice(self, request: pb.UnbindUserDeviceRequest, context):
        await run_db(binding.unbind_user_device, current_caller(), request.id)
        return empty_pb2.Empty()
