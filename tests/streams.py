"""Messages through a running stack: sending them (REST and gRPC), reading what was stored,
and the three ways of subscribing (a gRPC SubscribeMessages call, the REST SSE stream
through Envoy, the WebSocket URL), for the message tests and the tests that need messages
flowing (workers, revocation, faults)."""

from __future__ import annotations

import json
import queue
import threading
import time

import grpc
import pytest
import requests

from devicehub.testing.stack import Stack
from devicehub.v1 import messaging_pb2, messaging_pb2_grpc

from api_client import metadata, query_database

MESSAGES = "/api/device/messages/"
STREAM = "/api/device/messages/stream/"
WAIT = 15.0


def send(stack: Stack, token: str, body: dict, user_id) -> requests.Response:
    return stack.request("POST", MESSAGES, token, json={**body, "user_id": str(user_id)})


def send_text(stack: Stack, token: str, user_id, content: str) -> int:
    """Sends a text message over REST; returns its stored id."""
    before = {row[0] for row in stored(stack, int(user_id))}
    response = send(stack, token, {"type": "text", "message": {"content": content}}, user_id)
    assert response.status_code == 200, response.text
    (new,) = [row for row in stored(stack, int(user_id)) if row[0] not in before]
    return new[0]


def stored(stack: Stack, account_id: int) -> list[tuple]:
    """(id, type, payload dict, state, sender_id) of the account's messages, by id."""
    rows = query_database(
        stack,
        "SELECT id, type, payload, state, sender_id FROM message WHERE account_id = ? ORDER BY id",
        (account_id,),
    )
    return [(i, t, json.loads(p), s, sender) for i, t, p, s, sender in rows]


def states(stack: Stack, ids: list[int]) -> dict[int, str]:
    marks = ",".join("?" for _ in ids)
    rows = query_database(stack, f"SELECT id, state FROM message WHERE id IN ({marks})", tuple(ids))
    return dict(rows)


def wait_for_states(stack: Stack, expected: dict[int, str], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        current = states(stack, list(expected))
        if current == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert current == expected


def stub_for(channel: grpc.Channel) -> messaging_pb2_grpc.MessagingServiceStub:
    return messaging_pb2_grpc.MessagingServiceStub(channel)


def grpc_text(stub, token: str, user_id, content: str) -> messaging_pb2.SendMessageResponse:
    return stub.SendMessage(
        messaging_pb2.SendMessageRequest(
            type="text",
            message=messaging_pb2.MessagePayload(content=content),
            user_id=str(user_id),
        ),
        metadata=metadata(token),
        timeout=WAIT,
    )


class Subscription:
    """A gRPC SubscribeMessages call read by a background thread into a queue."""

    def __init__(self, channel: grpc.Channel, token: str, after_id: int = 0) -> None:
        self.call = stub_for(channel).SubscribeMessages(
            messaging_pb2.SubscribeMessagesRequest(after_id=after_id), metadata=metadata(token)
        )
        self.events: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as error:
            self.events.put(error)

    def next_event(self, timeout: float = WAIT) -> messaging_pb2.SubscribeMessagesResponse:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no event within {timeout} s")
        if isinstance(event, grpc.RpcError):
            pytest.fail(f"subscription ended: {event.code()} {event.details()}")
        return event

    def messages(self, count: int, timeout: float = WAIT) -> list[messaging_pb2.DeviceMessage]:
        """The next ``count`` message events (heartbeats skipped)."""
        deadline = time.monotonic() + timeout
        received = []
        while len(received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"received {len(received)} of {count} messages: {received}")
            event = self.next_event(remaining)
            if event.WhichOneof("event") == "message":
                received.append(event.message)
        return received

    def messages_until(self, last_id: int, timeout: float = WAIT) -> list[int]:
        """Ids of every message event up to and including ``last_id`` (a sentinel)."""
        deadline = time.monotonic() + timeout
        ids: list[int] = []
        while not ids or ids[-1] != last_id:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"sentinel {last_id} not received; got {ids}")
            event = self.next_event(remaining)
            if event.WhichOneof("event") == "message":
                ids.append(event.message.id)
        return ids

    def cancel(self) -> None:
        self.call.cancel()
        self._thread.join(WAIT)


class SseStream:
    """A REST SubscribeMessages stream through Envoy, read line by line in a thread."""

    def __init__(self, stack: Stack, token: str, after_id: int | None = None) -> None:
        params = {} if after_id is None else {"after_id": str(after_id)}
        self.response = requests.get(
            stack.url(STREAM),
            headers={"Authorization": f"Bearer {token}"},
            params=params,
            stream=True,
            timeout=(5, 60),
        )
        self.events: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    self.events.put(json.loads(line.removeprefix("data:").strip()))
        except Exception as error:  # closed by the test, or broken
            self.events.put(error)

    def messages(self, count: int, timeout: float = WAIT) -> list[dict]:
        deadline = time.monotonic() + timeout
        received: list[dict] = []
        while len(received) < count:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"received {len(received)} of {count} SSE messages: {received}")
            if isinstance(event, Exception):
                pytest.fail(f"SSE stream ended: {event!r}")
            if "message" in event:
                received.append(event["message"])
        return received

    def close(self) -> None:
        # Closing blocks until the reader thread's pending read returns (the next
        # heartbeat); let it finish in the background.
        threading.Thread(target=self.response.close, daemon=True).start()


def ws_url(stack: Stack, user_id, token: str, after_id: int | None = None) -> str:
    url = (
        stack.rest_url.replace("http://", "ws://")
        + f"/api/device/messages/{user_id}/?token={token}"
    )
    return url if after_id is None else url + f"&after_id={after_id}"
