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
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from devicehub import messaging, metrics, validation
from devicehub.api.errors import http_status
from devicehub.broker import MessageBroker
from devicehub.errors import DomainError, Unauthenticated
from devicehub.security import Caller, TokenSigner, TokenVersionCheck
from devicehub.storage.db import run_db

log = logging.getLogger(__name__)

# ASCII digits: ``\d`` (and ``str.isdigit``) also match digits ``int`` reads differently
# or refuses (``²``).
# Any id segment reaches the bridge (Envoy routes every upgrade of this shape here), so a
# malformed one gets a clear 400 rather than Envoy's empty 403 for an unroutable upgrade.
PATH = re.compile(r"^/api/device/messages/([^/]+)/?$")


def ack_ids(raw: str | bytes) -> list[int]:
    """The ids of an ``{"ack": [ids]}`` frame: integers, or strings of ASCII digits (which
    devices have always been able to send). Any other frame (not JSON, too deep, ids that
    are not of a message id's range, such as ``1e400``) gives ``[]``: it is ignored and
    the connection's reader goes on."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return []
    ids = data.get("ack") if isinstance(data, dict) else None
    if not isinstance(ids, list):
        return []
    parsed = []
    for value in ids:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
            value = int(value)
        if type(value) is not int or not 0 < value <= validation.INT64_MAX:
            return []
        parsed.append(value)
    return parsed


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
        *,
        token_versions: TokenVersionCheck,
    ) -> None:
        self._signer = signer
        self._token_versions = token_versions  # a revoked token is refused like a bad one
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
        user_id = validation.ascii_number("user_id", match.group(1))
        account_id = messaging.subscriber_account(caller, user_id)
        after = (query.get("after_id") or ["0"])[0]
        after_id = validation.ascii_number("after_id", after, maximum=validation.INT64_MAX)
        return account_id, after_id, caller

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        try:
            _, _, caller = self._authorize(request)
            await self._token_versions.check(caller)
        except LookupError:
            return connection.respond(HTTPStatus.NOT_FOUND, "Resource not found\n")
        except DomainError as error:
            return connection.respond(HTTPStatus(http_status(error)), error.message + "\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        account_id, after_id, caller = self._authorize(connection.request)
        try:
            # Again: the token may have been revoked during the handshake, before the
            # subscription below could hear of it.
            await self._token_versions.check(caller)
        except Unauthenticated as error:
            await connection.close(CloseCode.POLICY_VIOLATION, error.message)
            return
        reader = asyncio.create_task(self._read_acks(connection, caller))
        events = messaging.subscribe(
            account_id,
            after_id,
            broker=self._broker,
            policy=self._policy,
            deliveries=self._deliveries,
            caller=caller,
        )
        subscriptions = metrics.SUBSCRIPTIONS.labels("websocket")
        subscriptions.inc()
        try:
            async for event in events:
                if isinstance(event, messaging.HeartbeatEvent):
                    # The connection's own pings keep it alive. A client that went away
                    # (its reader ended) is noticed here, within a heartbeat, rather than
                    # holding the subscription until a message for it fails to send.
                    if reader.done():
                        break
                    continue
                await connection.send(frame(event))
        except ConnectionClosed:
            pass
        except Unauthenticated as error:  # the account was deleted or its tokens revoked
            await connection.close(CloseCode.POLICY_VIOLATION, error.message)
        finally:
            subscriptions.dec()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_acks(self, connection: ServerConnection, caller: Caller) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in connection:
                ids = ack_ids(raw)
                if not ids:
                    continue
                try:
                    await run_db(messaging.ack_messages, caller, ids)
                except Exception:  # e.g. the database is restarting: the device acks again
                    log.warning("acknowledging %d messages failed", len(ids), exc_info=True)

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
