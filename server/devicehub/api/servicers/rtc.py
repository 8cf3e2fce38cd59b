"""RtcService: Volcano Engine RTC tokens, and the device secrets that sign ``get_by_mac``."""

from __future__ import annotations

import logging

from devicehub.api.interceptors import client_address, current_caller
from devicehub.rtc_grants import DevicePolicy, DeviceRequest, DeviceSecrets, RtcGrant, RtcIssuer
from devicehub.storage.db import run_db
from devicehub.v1 import rtc_pb2 as pb
from devicehub.v1 import rtc_pb2_grpc

log = logging.getLogger(__name__)


def _response(grant: RtcGrant) -> pb.RtcTokenResponse:
    return pb.RtcTokenResponse(
        status="success",
        message="Token生成成功",
        data=pb.RtcToken(
            token=grant.token,
            room_id=grant.room_id,
            user_id=grant.user_id,
            app_id=grant.app_id,
            expire_time=grant.expire_time,
            task_id=grant.task_id,
            device_code=grant.device_code,
            device_type=grant.device_type,
        ),
    )


class RtcServicer(rtc_pb2_grpc.RtcServiceServicer):
    def __init__(self, issuer: RtcIssuer, policy: DevicePolicy, secrets: DeviceSecrets) -> None:
        self._issuer = issuer
        self._policy = policy
        self._secrets = secrets

    async def GenerateRtcToken(self, request: pb.GenerateRtcTokenRequest, context):
        grant = await run_db(self._issuer.for_user, current_caller(), request.expire_time)
        return _response(grant)

    async def GetRtcTokenByMac(self, request: pb.GetRtcTokenByMacRequest, context):
        device_request = DeviceRequest(
            mac_address=request.mac_address,
            ttl=request.expire_time,
            address=client_address(context),
            timestamp=request.timestamp,
            signature=request.signature,
        )
        grant = await run_db(self._issuer.for_device, device_request, self._policy, self._secrets)
        return _response(grant)

    async def IssueDeviceSecrets(self, request: pb.IssueDeviceSecretsRequest, context):
        caller = current_caller()
        issued = await run_db(
            self._secrets.issue, caller, list(request.device_ids), request.batch_id
        )
        log.info(
            "device secrets issued: account %d, %d devices (ids %d-%d), address %s",
            caller.account_id,
            len(issued),
            issued[0].device.id if issued else 0,
            issued[-1].device.id if issued else 0,
            client_address(context),
        )
        return pb.IssueDeviceSecretsResponse(
            secrets=[
                pb.DeviceSecret(
                    device_id=item.device.id,
                    mac_address=item.device.mac_address,
                    device_code=item.device.device_code,
                    secret=item.secret,
                    generation=item.generation,
                )
                for item in issued
            ]
        )
