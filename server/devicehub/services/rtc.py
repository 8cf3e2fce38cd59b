"""RtcService: Volcano Engine RTC tokens."""

from __future__ import annotations

from devicehub.db import run_db
from devicehub.interceptors import current_caller
from devicehub.v1 import rtc_pb2 as pb
from devicehub.v1 import rtc_pb2_grpc
from devicehub.voice import MacRateLimiter, RtcGrant, RtcIssuer


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
    def __init__(self, issuer: RtcIssuer, limiter: MacRateLimiter) -> None:
        self._issuer = issuer
        self._limiter = limiter

    async def GenerateRtcToken(self, request: pb.GenerateRtcTokenRequest, context):
        grant = await run_db(self._issuer.for_user, current_caller(), request.expire_time)
        return _response(grant)

    async def GetRtcTokenByMac(self, request: pb.GetRtcTokenByMacRequest, context):
        grant = await run_db(
            self._issuer.for_device, request.mac_address, request.expire_time, self._limiter
        )
        return _response(grant)
