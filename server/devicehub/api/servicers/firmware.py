"""FirmwareService: packages, downloads, installed versions, rollouts and device progress."""

from __future__ import annotations

import asyncio
import threading

from google.api import httpbody_pb2
from google.protobuf import empty_pb2

from devicehub import firmware, rollouts
from devicehub.api import converters
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import (
    BODY_LENGTH_HEADER,
    CONTENT_RANGE_HEADER,
    RANGE_HEADER,
    content_range,
    is_rest_call,
    metadata_value,
    requested_range,
    send_list_metadata,
)
from devicehub.errors import InvalidArgument
from devicehub.storage.db import run_db
from devicehub.v1 import firmware_pb2 as pb
from devicehub.v1 import firmware_pb2_grpc

OCTET_STREAM = "application/octet-stream"


def _installed(installed: firmware.Installed) -> pb.InstalledFirmware:
    return pb.InstalledFirmware(
        device_id=installed.device_id,
        now_firmware_id=installed.package_id,
        firmware_version=installed.version,
    )


class FirmwareServicer(firmware_pb2_grpc.FirmwareServiceServicer):
    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    async def UploadFirmwarePackage(self, request_iterator, context):
        upload = firmware.PackageUpload(current_caller(), self._max_bytes)
        described = False
        async for request in request_iterator:
            if not described:
                upload.describe(
                    request.device_type,
                    request.version,
                    request.title,
                    request.release_notes,
                    request.min_version,
                )
                declared = metadata_value(context, BODY_LENGTH_HEADER)  # REST: Content-Length
                size = int(declared) if declared.isascii() and declared.isdigit() else None
                if size is None and request.size_bytes:
                    size = request.size_bytes
                upload.expect(size, request.sha256)
                await run_db(upload.check_free)
                described = True
            upload.add(request.data.data)
        if not described:
            raise InvalidArgument("The upload is empty: its first message names the package")
        # A client that cancels mid-upload ends the request stream as if it were complete
        # (grpc.aio cancels this call only afterwards). A declared size tells for sure; without
        # one, a cancellation that arrives before the commit drops the package.
        abandoned = threading.Event()
        try:
            stored = await run_db(upload.store, abandoned.is_set)
        except asyncio.CancelledError:
            abandoned.set()
            raise
        return converters.firmware_package(stored)

    async def ListFirmwarePackages(self, request: pb.ListFirmwarePackagesRequest, context):
        page = await run_db(
            firmware.list_packages,
            current_caller(),
            request.device_type,
            request.page_size,
            request.page_token,
        )
        await send_list_metadata(context, "packages", page.next_page_token)
        return pb.ListFirmwarePackagesResponse(
            packages=[converters.firmware_package(row) for row in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetFirmwarePackage(self, request: pb.GetFirmwarePackageRequest, context):
        row = await run_db(firmware.get_package, current_caller(), request.id)
        return converters.firmware_package(row)

    async def DeleteFirmwarePackage(self, request: pb.DeleteFirmwarePackageRequest, context):
        await run_db(firmware.delete_package, current_caller(), request.id)
        return empty_pb2.Empty()

    async def DownloadFirmwarePackage(self, request: pb.DownloadFirmwarePackageRequest, context):
        download = await run_db(
            firmware.open_download, current_caller(), request.id, request.offset, request.length
        )
        package = download.package
        headers = [
            ("accept-ranges", "bytes"),
            ("etag", f'"{package.sha256}"'),
            (
                "content-disposition",
                f'attachment; filename="{package.device_type.code}-{package.version}.bin"',
            ),
        ]
        if is_rest_call(context):
            asked = requested_range(metadata_value(context, RANGE_HEADER), package.size_bytes)
            if asked is not None:
                download = download.within(*asked)
            if download.partial:
                headers.append(
                    (
                        CONTENT_RANGE_HEADER,
                        content_range(download.start, download.end, package.size_bytes),
                    )
                )
        await context.send_initial_metadata(headers)
        for start, end in firmware.download_pieces(download):
            data = await run_db(firmware.read_bytes, package.id, package.chunk_size, start, end)
            yield httpbody_pb2.HttpBody(content_type=OCTET_STREAM, data=data)

    async def ReportFirmware(self, request: pb.ReportFirmwareRequest, context):
        installed = await run_db(
            firmware.report_installed,
            current_caller(),
            request.device_id,
            request.version,
            request.package_id,
        )
        return _installed(installed)

    async def GetInstalledFirmware(self, request: pb.GetInstalledFirmwareRequest, context):
        return _installed(await run_db(firmware.get_installed, current_caller(), request.device_id))

    async def CheckFirmwareUpdate(self, request: pb.CheckFirmwareUpdateRequest, context):
        check = await run_db(rollouts.check_update, current_caller(), request.device_id)
        if check.update is None or check.package is None:
            return pb.CheckFirmwareUpdateResponse(update_available=False)
        return pb.CheckFirmwareUpdateResponse(
            update_available=True,
            update=converters.firmware_update(check.update),
            package=converters.firmware_package(check.package),
        )

    async def ReportFirmwareUpdateProgress(
        self, request: pb.ReportFirmwareUpdateProgressRequest, context
    ):
        view = await run_db(
            rollouts.report_progress,
            current_caller(),
            request.device_id,
            request.state,
            request.reason,
            request.update_id,
        )
        return converters.firmware_update(view)

    async def ListDeviceFirmwareUpdates(
        self, request: pb.ListDeviceFirmwareUpdatesRequest, context
    ):
        views, next_page_token = await run_db(
            rollouts.list_device_updates,
            current_caller(),
            request.device_id,
            request.page_size,
            request.page_token,
        )
        await send_list_metadata(context, "updates", next_page_token)
        return pb.ListDeviceFirmwareUpdatesResponse(
            updates=[converters.firmware_update(view) for view in views],
            next_page_token=next_page_token,
        )

    async def CreateFirmwareRollout(self, request: pb.CreateFirmwareRolloutRequest, context):
        view = await run_db(
            rollouts.create_rollout,
            current_caller(),
            request.package_id,
            list(request.target.batch_ids),
            list(request.target.device_ids),
            list(request.group_percents),
            request.success_threshold_percent
            if request.HasField("success_threshold_percent")
            else None,
            request.error_threshold_percent
            if request.HasField("error_threshold_percent")
            else None,
        )
        return converters.firmware_rollout(view)

    async def ListFirmwareRollouts(self, request: pb.ListFirmwareRolloutsRequest, context):
        views, next_page_token = await run_db(
            rollouts.list_rollouts, current_caller(), request.page_size, request.page_token
        )
        await send_list_metadata(context, "rollouts", next_page_token)
        return pb.ListFirmwareRolloutsResponse(
            rollouts=[converters.firmware_rollout(view) for view in views],
            next_page_token=next_page_token,
        )

    async def GetFirmwareRollout(self, request: pb.GetFirmwareRolloutRequest, context):
        view = await run_db(rollouts.get_rollout, current_caller(), request.id)
        return converters.firmware_rollout(view)

    async def PauseFirmwareRollout(self, request: pb.PauseFirmwareRolloutRequest, context):
        return await self._change(request.id, "pause")

    async def ResumeFirmwareRollout(self, request: pb.ResumeFirmwareRolloutRequest, context):
        return await self._change(request.id, "resume")

    async def CancelFirmwareRollout(self, request: pb.CancelFirmwareRolloutRequest, context):
        return await self._change(request.id, "cancel")

    async def _change(self, rollout_id: int, action: str) -> pb.FirmwareRollout:
        view = await run_db(rollouts.change_rollout, current_caller(), rollout_id, action)
        return converters.firmware_rollout(view)

    async def ListFirmwareRolloutUpdates(
        self, request: pb.ListFirmwareRolloutUpdatesRequest, context
    ):
        page = await run_db(
            rollouts.list_rollout_updates,
            current_caller(),
            request.rollout_id,
            request.group if request.HasField("group") else None,
            request.state,
            request.page_size,
            request.page_token,
        )
        views = await run_db(rollouts.rollout_update_views, page.items)
        await send_list_metadata(context, "updates", page.next_page_token)
        return pb.ListFirmwareRolloutUpdatesResponse(
            updates=[converters.firmware_update(view) for view in views],
            next_page_token=page.next_page_token,
        )
