"""MessagingService: send, subscribe (server streaming), acknowledge."""

from __future__ import annotations

import datetime as dt
from typing import Any

from devicehub import messaging, metrics
from devicehub.api.converters import timestamp
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import is_rest_call
from devicehub.broker import MessageBroker
from devicehub.integrations.weather import WeatherClient
from devicehub.storage.db import run_db
from devicehub.v1 import messaging_pb2 as pb
from devicehub.v1 import messaging_pb2_grpc

_PAYLOAD_FIELDS = tuple(field.name for field in pb.MessagePayload.DESCRIPTOR.fields)


def _payload_dict(message: pb.MessagePayload) -> dict[str, Any]:
    return {name: getattr(message, name) for name in _PAYLOAD_FIELDS if message.HasField(name)}


def payload_message(payload: dict[str, Any]) -> pb.MessagePayload:
    return pb.MessagePayload(**payload)


def device_message(message: dict[str, Any]) -> pb.DeviceMessage:
    return pb.DeviceMessage(
        id=message["id"],
        type=message["type"],
        message=payload_message(message["payload"]),
        user_id=str(message["account_id"]),
        created_at=timestamp(dt.datetime.fromisoformat(message["created_at"])),
        expires_at=timestamp(dt.datetime.fromisoformat(message["expires_at"])),
    )


def _sent(message: dict[str, Any]) -> pb.SentMessage:
    """The documented per-type shape of the send response's ``data``."""
    payload = message["payload"]
    if message["type"] == "weather":
        return pb.SentMessage(**payload)
    sent = pb.SentMessage(
        type=message["type"],
        message=payload_message(payload),
        user_id=str(message["account_id"]),
    )
    if message["type"] == "text":
        sent.timestamp.CopyFrom(timestamp(dt.datetime.fromisoformat(message["created_at"])))
    return sent


class MessagingServicer(messaging_pb2_grpc.MessagingServiceServicer):
    def __init__(
        self,
        broker: MessageBroker,
        weather: WeatherClient,
        policy: messaging.MessagePolicy,
        deliveries: messaging.DeliveryRecorder,
    ) -> None:
        self._broker = broker
        self._deliveries = deliveries
        self._weather = weather
        self._policy = policy

    async def SendMessage(self, request: pb.SendMessageRequest, context):
        message = await messaging.send_message(
            current_caller(),
            request.type,
            _payload_dict(request.message),
            request.user_id,
            weather=self._weather,
            policy=self._policy,
        )
        return pb.SendMessageResponse(
            status="success",
            message=messaging.SENT_MESSAGES[message["type"]],
            data=_sent(message),
        )

    async def SubscribeMessages(self, request: pb.SubscribeMessagesRequest, context):
        account_id = messaging.subscriber_account(current_caller(), request.user_id)
        # The stream is established: say so now (REST clients get their 200 and headers)
        # rather than with the first message or heartbeat, up to a heartbeat later.
        await context.send_initial_metadata(())
        events = messaging.subscribe(
            account_id,
            request.after_id,
            broker=self._broker,
            policy=self._policy,
            deliveries=self._deliveries,
            caller=current_caller(),
        )
        # Through the edge a subscription is a server-sent-event stream.
        transport = "sse" if is_rest_call(context) else "grpc"
        with metrics.SUBSCRIPTIONS.labels(transport).track_inprogress():
            async for event in events:
                if isinstance(event, messaging.HeartbeatEvent):
                    beat = pb.Heartbeat(time=timestamp(event.time))
                    yield pb.SubscribeMessagesResponse(heartbeat=beat)
                else:
                    yield pb.SubscribeMessagesResponse(message=device_message(event))

    async def AckMessages(self, request: pb.AckMessagesRequest, context):
        acked = await run_db(messaging.ack_messages, current_caller(), list(request.ids))
        return pb.AckMessagesResponse(acked=acked)
