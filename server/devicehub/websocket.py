"""The documented WebSocket channel: ``ws://<host>/api/device/messages/{user_id}/?token=``.

A small service (the ``websockets`` library) bridged to the same subscription as the gRPC
and HTTP streams (``messaging.subscribe``). Envoy routes upgrade requests of that path
here. Frames are ``{"type", "message", "user_id", "id"}``; ``id`` is the message id to
resume from (``?after_id=``) and to acknowledge (send ``{"ack": [ids]}``). Idle
connections are kept open by WebSocket pings at the heartbeat interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from devicehub import messaging
from devicehub.broker import MessageBroker
from devicehub.db import run_db
from devicehub.errors import DomainError
from devicehub.security import Caller, TokenSigner

log = logging.getLogger(__name__)

PATH = re.compile(r"^/api/device/messages/(\d+)/?$")


def frame(message: dict[str, Any]) -> str:
    return json.dumps(
        {
            "type": message["type"],
            "message": message["payload"],
            "user_id": str(message["account_id"]),
            "id": message["id"],
        },
        ensure_ascii=False,
    )


class MessageSocketServer:
    def __init__(
        self,
        signer: TokenSigner,
        broker: MessageBroker,
        policy: messaging.MessagePolicy,
        deliveries: messaging.DeliveryRecorder,
        reuse_port: bool = False,
    ) -> None:
        self._signer = signer
        self._reuse_port = reuse_port  # several worker processes share the port
        self._deliveries = deliveries
        self._broker = broker
        self._policy = policy
        self._server: Server | None = None

    def _authorize(self, request: Request) -> tuple[int, int, Caller]:
        """(account id, after id, caller) for a request; DomainError when refused."""
        url = urlsplit(request.path)
        match = PATH.match(url.path)
        if match is None:
            raise LookupError(url.path)
        query = parse_qs(url.query)
        token = (query.get("token") or [""])[0]
        if not token:
            authorization = request.headers.get("authorization", "")
            token = authorization.partition(" ")[2]
        caller = self._signer.verify(token)
        account_id = messaging.subscriber_account(caller, int(match.group(1)))
        after = (query.get("after_id") or ["0"])[0]
        return account_id, int(after) if after.isdigit() else 0, caller

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            self._authorize(request)
        except LookupError:
            return connection.respond(HTTPStatus.NOT_FOUND, "Resource not found\n")
        except DomainError as error:
            return connection.respond(HTTPStatus(error.http_status), error.message + "\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        account_id, after_id, caller = self._authorize(connection.request)
        reader = asyncio.create_task(self._read_acks(connection, caller))
        events = messaging.subscribe(
            account_id,
            after_id,
            broker=self._broker,
            policy=self._policy,
            deliveries=self._deliveries,
        )
        try:
            async for event in events:
                if isinstance(event, messaging.HeartbeatEvent):
                    continue  # the connection's own pings keep it alive
                await connection.send(frame(event))
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_acks(self, connection: ServerConnection, caller: Caller) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in connection:
                try:
                    ids = [int(i) for i in json.loads(raw).get("ack", [])]
                except (ValueError, TypeError, AttributeError):
                    continue
                if ids:
                    await run_db(messaging.ack_messages, caller, ids)

    async def start(self, host: str, port: int) -> None:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            ping_interval=self._policy.heartbeat,
            ping_timeout=self._policy.heartbeat * 2,
            reuse_port=self._reuse_port,
        )
        log.info("WebSocket bridge listening on %s:%d", host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
