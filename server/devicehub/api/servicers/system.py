"""SystemService: liveness of the API itself."""

from __future__ import annotations

from devicehub.v1 import system_pb2, system_pb2_grpc


class SystemServicer(system_pb2_grpc.SystemServiceServicer):
    async def Ping(self, request: system_pb2.PingRequest, context) -> system_pb2.PingResponse:
        return system_pb2.PingResponse(status="ok")
