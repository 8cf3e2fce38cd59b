"""Messages: sending (REST and gRPC), durable queues, subscriptions (gRPC, SSE, WebSocket),
acknowledgement, expiry, queue bounds, heartbeats and multi-process fan-out."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from devicehub.testing.stack import DEVICEHUB, Stack, free_port, stop_process
from devicehub.v1 import messaging_pb2, messaging_pb2_grpc

from api_client import metadata
from bound_accounts import user_with_bound_device
from streams import (
    MESSAGES,
    STREAM,
    WAIT,
    SseStream,
    Subscription,
    grpc_text,
    send,
    send_text,
    states,
    stored,
    stub_for,
    wait_for_states,
    ws_url,
)

ACK = "/api/device/messages/ack/"
TIMESTAMP_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

TEXT = {"type": "text", "message": {"content": "你好,世界!"}}
WEATHER = {"type": "weather", "message": {"city": "北京"}}
SING = {"type": "sing", "message": {"song": "歌曲名称", "artist": "歌手名称"}}
DANCE = {"type": "dance", "message": {"dance": "舞蹈名称", "style": "舞蹈风格", "duration": "30秒"}}
BEIJING = {
    "city": "北京",
    "weather": "晴",
    "temperature": "25°C",
    "humidity": "50%",
    "wind": "东北风3级",
}


# --- helpers -----------------------------------------------------------------------


def error_body(response: requests.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["status"] == "error", body
    assert isinstance(body["message"], str) and body["message"], body
    return response.status_code, body["status"], body.get("code")


@contextmanager
def subscribed(channel: grpc.Channel, token: str, after_id: int = 0) -> Iterator[Subscription]:
    subscription = Subscription(channel, token, after_id)
    try:
        yield subscription
    finally:
        subscription.cancel()


@dataclass
class ExtraServer:
    target: str
    channel: grpc.Channel

    @property
    def stub(self) -> messaging_pb2_grpc.MessagingServiceStub:
        return stub_for(self.channel)


@contextmanager
def extra_server(stack: Stack, tmp_path, **settings: str) -> Iterator[ExtraServer]:
    """A second ``devicehub serve --no-gateway`` on the stack's database."""
    port = free_port()
    data_dir = tmp_path / uuid.uuid4().hex[:8]
    data_dir.mkdir()
    env = {
        **stack.env,
        "DEVICEHUB_GRPC_PORT": str(port),
        "DEVICEHUB_WS_PORT": str(free_port()),
        "DEVICEHUB_DATA_DIR": str(data_dir),
        **{f"DEVICEHUB_{key.upper()}": value for key, value in settings.items()},
    }
    process = subprocess.Popen(
        [DEVICEHUB, "serve", "--no-gateway"], env=env, stdout=subprocess.PIPE, text=True
    )
    channel = None
    try:
        line = process.stdout.readline()
        assert "gRPC  listening" in line, line
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield ExtraServer(f"127.0.0.1:{port}", channel)
    finally:
        if channel is not None:
            channel.close()
        assert stop_process(process) == 0


def ws_frames(socket, count: int, timeout: float = WAIT) -> list[dict]:
    deadline = time.monotonic() + timeout
    frames = []
    while len(frames) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"received {len(frames)} of {count} frames: {frames}")
        try:
            frames.append(json.loads(socket.recv(timeout=remaining)))
        except TimeoutError:
            pytest.fail(f"received {len(frames)} of {count} frames: {frames}")
    return frames


# --- 1. sending each documented type ------------------------------------------------


def test_text_message_answers_documented_body_and_is_stored(stack):
    account, token = user_with_bound_device(stack)
    response = send(stack, token, TEXT, account["id"])
    assert response.status_code == 200, response.text
    body = response.json()
    timestamp = body["data"].pop("timestamp")
    assert TIMESTAMP_Z.match(timestamp), timestamp
    assert body == {
        "status": "success",
        "message": "消息已发送",
        "data": {
            "type": "text",
            "message": {"content": "你好,世界!"},
            "user_id": str(account["id"]),
        },
    }
    rows = stored(stack, account["id"])
    assert [(t, p, s, sender) for _, t, p, s, sender in rows] == [
        ("text", {"content": "你好,世界!"}, "queued", account["id"])
    ]


def test_sing_message_answers_documented_body_without_timestamp(stack):
    account, token = user_with_bound_device(stack)
    response = send(stack, token, SING, account["id"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "success",
        "message": "唱歌指令已发送",
        "data": {
            "type": "sing",
            "message": {"song": "歌曲名称", "artist": "歌手名称"},
            "user_id": str(account["id"]),
        },
    }
    rows = stored(stack, account["id"])
    assert [(t, p, s) for _, t, p, s, _ in rows] == [
        ("sing", {"song": "歌曲名称", "artist": "歌手名称"}, "queued")
    ]


def test_dance_message_answers_documented_body(stack):
    account, token = user_with_bound_device(stack)
    response = send(stack, token, DANCE, account["id"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "success",
        "message": "跳舞指令已发送",
        "data": {
            "type": "dance",
            "message": {"dance": "舞蹈名称", "style": "舞蹈风格", "duration": "30秒"},
            "user_id": str(account["id"]),
        },
    }
    rows = stored(stack, account["id"])
    assert [(t, p, s) for _, t, p, s, _ in rows] == [
        ("dance", {"dance": "舞蹈名称", "style": "舞蹈风格", "duration": "30秒"}, "queued")
    ]


def test_weather_message_answers_the_report_and_stores_it(stack, weather_provider):
    account, token = user_with_bound_device(stack)
    response = send(stack, token, WEATHER, account["id"])
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "message": "天气信息已发送", "data": BEIJING}
    rows = stored(stack, account["id"])
    assert [(t, p, s) for _, t, p, s, _ in rows] == [("weather", BEIJING, "queued")]


def test_send_message_over_grpc_answers_each_type_and_stores_it(stack, weather_provider):
    account, token = user_with_bound_device(stack)
    stub = stub_for(stack.channel())
    user_id = str(account["id"])

    def call(message_type: str, **payload: str) -> messaging_pb2.SendMessageResponse:
        return stub.SendMessage(
            messaging_pb2.SendMessageRequest(
                type=message_type, message=messaging_pb2.MessagePayload(**payload), user_id=user_id
            ),
            metadata=metadata(token),
            timeout=WAIT,
        )

    text = call("text", content="你好")
    assert (text.status, text.message) == ("success", "消息已发送")
    assert (text.data.type, text.data.message.content, text.data.user_id) == (
        "text",
        "你好",
        user_id,
    )
    assert text.data.HasField("timestamp") and text.data.timestamp.seconds > 0

    sing = call("sing", song="歌曲名称", artist="歌手名称")
    assert (sing.message, sing.data.type, sing.data.user_id) == ("唱歌指令已发送", "sing", user_id)
    assert (sing.data.message.song, sing.data.message.artist) == ("歌曲名称", "歌手名称")
    assert not sing.data.HasField("timestamp")

    dance = call("dance", dance="舞蹈名称", style="舞蹈风格", duration="30秒")
    assert (dance.message, dance.data.type) == ("跳舞指令已发送", "dance")
    assert (dance.data.message.dance, dance.data.message.duration) == ("舞蹈名称", "30秒")
    assert not dance.data.HasField("timestamp")

    weather = call("weather", city="北京")
    assert weather.message == "天气信息已发送"
    report = {key: getattr(weather.data, key) for key in BEIJING}
    assert report == BEIJING
    assert not weather.data.HasField("type") and not weather.data.HasField("message")

    rows = stored(stack, account["id"])
    assert [(t, s) for _, t, _, s, _ in rows] == [
        ("text", "queued"),
        ("sing", "queued"),
        ("dance", "queued"),
        ("weather", "queued"),
    ]
    assert rows[3][2] == BEIJING


def test_empty_user_id_sends_to_the_caller(stack):
    account, token = user_with_bound_device(stack)
    response = stack.request("POST", MESSAGES, token, json=TEXT)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["user_id"] == str(account["id"])
    assert len(stored(stack, account["id"])) == 1


def test_token_scheme_authorization_is_accepted(stack):
    account, token = user_with_bound_device(stack)
    response = stack.request(
        "POST",
        MESSAGES,
        headers={"Authorization": f"Token {token}"},
        json={**DANCE, "user_id": str(account["id"])},
    )
    assert response.status_code == 200, response.text
    assert [t for _, t, _, _, _ in stored(stack, account["id"])] == ["dance"]


# --- 2. errors: nothing stored ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"type": "video", "message": {"content": "x"}},
        {"type": "text", "message": {}},
        {"type": "text", "message": {"content": "   "}},
        {"type": "sing", "message": {"artist": "歌手名称"}},
        {"type": "dance", "message": {"style": "舞蹈风格"}},
        {"type": "weather", "message": {}},
        {"type": "text", "message": {"content": "hi", "song": "歌曲名称"}},
        {"type": "sing", "message": {"song": "歌曲名称", "city": "北京"}},
    ],
    ids=[
        "unknown-type",
        "text-without-content",
        "text-blank-content",
        "sing-without-song",
        "dance-without-dance",
        "weather-without-city",
        "text-with-song",
        "sing-with-city",
    ],
)
def test_malformed_message_is_400_and_nothing_stored(stack, body):
    account, token = user_with_bound_device(stack)
    response = send(stack, token, body, account["id"])
    assert error_body(response) == (400, "error", "INVALID_ARGUMENT"), response.text
    assert stored(stack, account["id"]) == []


def test_malformed_message_is_invalid_argument_over_grpc(stack):
    account, token = user_with_bound_device(stack)
    stub = stub_for(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.SendMessage(
            messaging_pb2.SendMessageRequest(
                type="text", message=messaging_pb2.MessagePayload(content="hi", song="x")
            ),
            metadata=metadata(token),
            timeout=WAIT,
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored(stack, account["id"]) == []


def test_sending_to_another_account_is_403_for_non_admins(stack):
    _, token = user_with_bound_device(stack)
    other, _ = user_with_bound_device(stack)
    response = send(stack, token, TEXT, other["id"])
    assert error_body(response) == (403, "error", "PERMISSION_DENIED"), response.text
    assert stored(stack, other["id"]) == []


def test_admin_may_send_to_another_account(stack):
    other, _ = user_with_bound_device(stack)
    response = send(stack, stack.admin_token, SING, other["id"])
    assert response.status_code == 200, response.text
    assert response.json()["data"]["user_id"] == str(other["id"])
    rows = stored(stack, other["id"])
    assert [(t, s) for _, t, _, s, _ in rows] == [("sing", "queued")]
    admin_id = stack.request("GET", "/api/v1/accounts/me", stack.admin_token).json()["id"]
    assert rows[0][4] == admin_id


def test_recipient_without_bound_device_is_409(stack):
    account, token = stack.new_user()
    response = send(stack, token, TEXT, account["id"])
    assert error_body(response) == (409, "error", "NO_BOUND_DEVICE"), response.text
    assert stored(stack, account["id"]) == []
    with pytest.raises(grpc.RpcError) as error:
        grpc_text(stub_for(stack.channel()), token, account["id"], "hi")
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_unknown_city_is_404_city_not_found(stack, weather_provider):
    account, token = user_with_bound_device(stack)
    response = send(
        stack, token, {"type": "weather", "message": {"city": "亚特兰蒂斯"}}, account["id"]
    )
    assert error_body(response) == (404, "error", "CITY_NOT_FOUND"), response.text
    assert stored(stack, account["id"]) == []


def test_weather_provider_down_is_503_and_nothing_stored(stack, weather_provider):
    account, token = user_with_bound_device(stack)
    weather_provider.stop()
    try:
        response = send(stack, token, WEATHER, account["id"])
    finally:
        weather_provider.start()
    assert error_body(response) == (503, "error", "WEATHER_UNAVAILABLE"), response.text
    assert stored(stack, account["id"]) == []


def test_sending_without_token_is_401(stack):
    account, _ = user_with_bound_device(stack)
    response = stack.request("POST", MESSAGES, json={**TEXT, "user_id": str(account["id"])})
    assert response.status_code == 401, response.text
    assert response.json()["status"] == "error"
    assert stored(stack, account["id"]) == []


def test_bad_user_id_and_oversized_field_are_400(stack):
    account, token = user_with_bound_device(stack)
    for body, user_id in (
        (TEXT, "abc"),
        ({"type": "text", "message": {"content": "x" * 2001}}, account["id"]),
    ):
        response = send(stack, token, body, user_id)
        assert error_body(response) == (400, "error", "INVALID_ARGUMENT"), response.text
    assert stored(stack, account["id"]) == []


def test_admin_sending_to_a_missing_account_is_404(stack):
    response = send(stack, stack.admin_token, TEXT, 99_999_999)
    assert error_body(response) == (404, "error", "ACCOUNT_NOT_FOUND"), response.text


def test_ack_without_ids_is_400_and_without_token_401(stack):
    _, token = user_with_bound_device(stack)
    response = stack.request("POST", ACK, token, json={"ids": []})
    assert error_body(response) == (400, "error", "INVALID_ARGUMENT"), response.text
    response = stack.request("POST", ACK, json={"ids": [1]})
    assert response.status_code == 401, response.text


# --- 3. gRPC subscription: backlog then live, each once ----------------------------


def test_subscription_replays_backlog_in_order_then_streams_live(stack):
    account, token = user_with_bound_device(stack)
    backlog = [send_text(stack, token, account["id"], f"backlog {i}") for i in range(3)]
    with subscribed(stack.channel(), token) as subscription:
        replayed = subscription.messages(3)
        assert [m.id for m in replayed] == backlog
        assert [m.message.content for m in replayed] == [f"backlog {i}" for i in range(3)]
        assert {(m.type, m.user_id) for m in replayed} == {("text", str(account["id"]))}
        assert all(m.expires_at.seconds - m.created_at.seconds == 3600 for m in replayed)
        live = send_text(stack, token, account["id"], "live")
        (message,) = subscription.messages(1)
        assert (message.id, message.message.content) == (live, "live")
        sentinel = send_text(stack, token, account["id"], "sentinel")
        assert subscription.messages_until(sentinel) == [sentinel]


def test_two_concurrent_subscriptions_each_get_every_message_once(stack):
    account, token = user_with_bound_device(stack)
    backlog = [send_text(stack, token, account["id"], f"m{i}") for i in range(2)]
    with (
        subscribed(stack.channel(), token) as first,
        subscribed(stack.channel(), token) as second,
    ):
        assert [m.id for m in first.messages(2)] == backlog
        assert [m.id for m in second.messages(2)] == backlog
        live = [send_text(stack, token, account["id"], f"live{i}") for i in range(3)]
        assert first.messages_until(live[-1]) == live
        assert second.messages_until(live[-1]) == live


def test_subscription_through_envoy_streams_backlog_and_live(stack):
    account, token = user_with_bound_device(stack)
    first = send_text(stack, token, account["id"], "first")
    with subscribed(stack.channel(via_envoy=True), token) as subscription:
        assert [m.id for m in subscription.messages(1)] == [first]
        live = send_text(stack, token, account["id"], "live")
        assert [m.id for m in subscription.messages(1)] == [live]


def test_only_admins_subscribe_to_another_account(stack):
    account, token = user_with_bound_device(stack)
    _, stranger = user_with_bound_device(stack)
    message_id = send_text(stack, token, account["id"], "for admin eyes")
    call = stub_for(stack.channel()).SubscribeMessages(
        messaging_pb2.SubscribeMessagesRequest(user_id=account["id"]), metadata=metadata(stranger)
    )
    with pytest.raises(grpc.RpcError) as error:
        next(iter(call))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin_call = stub_for(stack.channel()).SubscribeMessages(
        messaging_pb2.SubscribeMessagesRequest(user_id=account["id"]),
        metadata=metadata(stack.admin_token),
    )
    try:
        event = next(iter(admin_call))
        assert (event.message.id, event.message.user_id) == (message_id, str(account["id"]))
    finally:
        admin_call.cancel()


def test_rest_stream_without_token_is_401(stack):
    response = requests.get(stack.url(STREAM), stream=True, timeout=WAIT)
    try:
        assert response.status_code == 401
    finally:
        response.close()


# --- 4. reconnect with after_id; acknowledgement ------------------------------------


def test_resubscribing_after_last_seen_id_receives_exactly_the_missed(stack):
    account, token = user_with_bound_device(stack)
    seen = [send_text(stack, token, account["id"], f"seen {i}") for i in range(3)]
    with subscribed(stack.channel(), token) as subscription:
        assert [m.id for m in subscription.messages(3)] == seen
    missed = [send_text(stack, token, account["id"], f"missed {i}") for i in range(2)]
    with subscribed(stack.channel(), token, after_id=seen[-1]) as subscription:
        received = subscription.messages(2)
        assert [m.id for m in received] == missed
        assert [m.message.content for m in received] == ["missed 0", "missed 1"]
        sentinel = send_text(stack, token, account["id"], "sentinel")
        assert subscription.messages_until(sentinel) == [sentinel]


def test_acked_messages_are_never_replayed_and_states_are_recorded(stack):
    account, token = user_with_bound_device(stack)
    ids = [send_text(stack, token, account["id"], f"m{i}") for i in range(4)]
    assert set(states(stack, ids).values()) == {"queued"}
    with subscribed(stack.channel(), token) as subscription:
        assert [m.id for m in subscription.messages(4)] == ids
    wait_for_states(stack, dict.fromkeys(ids, "delivered"))

    response = stack.request("POST", ACK, token, json={"ids": ids[:2]})
    assert response.status_code == 200, response.text
    assert response.json() == {"acked": 2}
    wait_for_states(
        stack, {**dict.fromkeys(ids[:2], "acked"), **dict.fromkeys(ids[2:], "delivered")}
    )

    with subscribed(stack.channel(), token, after_id=0) as subscription:
        sentinel = send_text(stack, token, account["id"], "sentinel")
        assert subscription.messages_until(sentinel) == [*ids[2:], sentinel]


def test_ack_counts_only_the_callers_pending_messages(stack):
    account, token = user_with_bound_device(stack)
    other, other_token = user_with_bound_device(stack)
    mine = send_text(stack, token, account["id"], "mine")
    theirs = send_text(stack, other_token, other["id"], "theirs")
    response = stack.request("POST", ACK, token, json={"ids": [mine, theirs]})
    assert response.json() == {"acked": 1}
    assert states(stack, [mine, theirs]) == {mine: "acked", theirs: "queued"}
    again = stack.request("POST", ACK, token, json={"ids": [mine]})
    assert again.json() == {"acked": 0}


# --- 5. REST stream (SSE) through Envoy ---------------------------------------------


def test_rest_stream_sends_backlog_then_live_messages(stack):
    account, token = user_with_bound_device(stack)
    backlog = [send_text(stack, token, account["id"], f"b{i}") for i in range(2)]
    stream = SseStream(stack, token)
    try:
        assert stream.response.status_code == 200
        first = stream.messages(2)
        assert [int(m["id"]) for m in first] == backlog
        assert first[0]["type"] == "text"
        assert first[0]["message"] == {"content": "b0"}
        assert first[0]["user_id"] == str(account["id"])
        live = send_text(stack, token, account["id"], "live")
        (message,) = stream.messages(1)
        assert (int(message["id"]), message["message"]) == (live, {"content": "live"})
    finally:
        stream.close()


def test_rest_stream_is_established_before_any_event(stack):
    """An idle stream answers 200 at once, not with the first message or heartbeat (15 s
    here): clients, and proxies counting streams, know it is open."""
    _, token = user_with_bound_device(stack)
    response = requests.get(
        stack.url(STREAM),
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=(5, 5),  # well under the heartbeat: no event can have answered for it
    )
    try:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    finally:
        threading.Thread(target=response.close, daemon=True).start()


def test_rest_stream_resumes_after_id(stack):
    account, token = user_with_bound_device(stack)
    ids = [send_text(stack, token, account["id"], f"m{i}") for i in range(3)]
    stream = SseStream(stack, token, after_id=ids[0])
    try:
        assert [int(m["id"]) for m in stream.messages(2)] == ids[1:]
    finally:
        stream.close()


# --- 6. WebSocket through Envoy -----------------------------------------------------


def test_websocket_receives_backlog_then_live_frames(stack):
    account, token = user_with_bound_device(stack)
    user_id = str(account["id"])
    backlog = send_text(stack, token, user_id, "backlog")
    with connect(ws_url(stack, user_id, token), open_timeout=WAIT) as socket:
        (frame,) = ws_frames(socket, 1)
        assert frame == {
            "type": "text",
            "message": {"content": "backlog"},
            "user_id": user_id,
            "id": backlog,
        }
        response = send(stack, token, SING, user_id)
        assert response.status_code == 200, response.text
        (live,) = ws_frames(socket, 1)
        assert live["id"] > backlog
        assert {k: live[k] for k in ("type", "message", "user_id")} == {
            "type": "sing",
            "message": {"song": "歌曲名称", "artist": "歌手名称"},
            "user_id": user_id,
        }


def test_websocket_resumes_after_id(stack):
    account, token = user_with_bound_device(stack)
    ids = [send_text(stack, token, account["id"], f"m{i}") for i in range(3)]
    with connect(ws_url(stack, account["id"], token, after_id=ids[1]), open_timeout=WAIT) as socket:
        assert [f["id"] for f in ws_frames(socket, 1)] == ids[2:]


def test_websocket_refuses_a_bad_token(stack):
    account, _ = user_with_bound_device(stack)
    with pytest.raises(InvalidStatus) as error:
        connect(ws_url(stack, account["id"], "not-a-token"), open_timeout=WAIT)
    assert error.value.response.status_code == 401


def test_websocket_refuses_another_users_channel(stack):
    _, token = user_with_bound_device(stack)
    other, _ = user_with_bound_device(stack)
    with pytest.raises(InvalidStatus) as error:
        connect(ws_url(stack, other["id"], token), open_timeout=WAIT)
    assert error.value.response.status_code == 403


def test_websocket_ack_frame_acknowledges_the_message(stack):
    account, token = user_with_bound_device(stack)
    message_id = send_text(stack, token, account["id"], "ack me")
    with connect(ws_url(stack, account["id"], token), open_timeout=WAIT) as socket:
        (frame,) = ws_frames(socket, 1)
        assert frame["id"] == message_id
        socket.send(json.dumps({"ack": [message_id]}))
        wait_for_states(stack, {message_id: "acked"})


# --- 7-9. TTL, queue bound and heartbeats (extra servers) ---------------------------


def test_expired_message_is_never_delivered_and_marked_expired(stack, tmp_path):
    account, token = user_with_bound_device(stack)
    with extra_server(stack, tmp_path, message_ttl="1", stream_heartbeat="0.3") as server:
        sent_at = time.monotonic()
        grpc_text(server.stub, token, account["id"], "short-lived")
        (row,) = stored(stack, account["id"])
        while time.monotonic() < sent_at + 1.5:  # let the 1 s TTL elapse
            time.sleep(0.05)
        with subscribed(server.channel, token) as subscription:
            first = subscription.next_event()
            assert first.WhichOneof("event") == "heartbeat"
        wait_for_states(stack, {row[0]: "expired"}, timeout=5)


def test_full_queue_refuses_with_resource_exhausted_until_acked(stack, tmp_path):
    account, token = user_with_bound_device(stack)
    with extra_server(stack, tmp_path, message_queue_limit="3") as server:
        accepted = [grpc_text(server.stub, token, account["id"], f"m{i}") for i in range(3)]
        assert [r.status for r in accepted] == ["success"] * 3
        with pytest.raises(grpc.RpcError) as error:
            grpc_text(server.stub, token, account["id"], "one too many")
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        rows = stored(stack, account["id"])
        assert [p["content"] for _, _, p, _, _ in rows] == ["m0", "m1", "m2"]

        acked = server.stub.AckMessages(
            messaging_pb2.AckMessagesRequest(ids=[rows[0][0]]), metadata=metadata(token)
        )
        assert acked.acked == 1
        grpc_text(server.stub, token, account["id"], "fits again")
        assert [p["content"] for _, _, p, _, _ in stored(stack, account["id"])] == [
            "m0",
            "m1",
            "m2",
            "fits again",
        ]


def test_full_queue_is_429_queue_full_over_rest(stack):
    account, token = user_with_bound_device(stack)
    stub = stub_for(stack.channel())
    for i in range(100):  # the stack's queue limit
        grpc_text(stub, token, account["id"], f"m{i}")
    response = send(stack, token, TEXT, account["id"])
    assert error_body(response) == (429, "error", "QUEUE_FULL"), response.text
    assert len(stored(stack, account["id"])) == 100


def test_idle_subscription_receives_heartbeats(stack, tmp_path):
    _, token = user_with_bound_device(stack)
    with (
        extra_server(stack, tmp_path, stream_heartbeat="0.3") as server,
        subscribed(server.channel, token) as subscription,
    ):
        beats = [subscription.next_event() for _ in range(3)]
        assert [b.WhichOneof("event") for b in beats] == ["heartbeat"] * 3
        assert all(b.heartbeat.time.seconds > 0 for b in beats)


# --- 10. multi-process fan-out (PostgreSQL) -----------------------------------------


def _fan_out(stack: Stack, subscribe_channel, other_stub) -> None:
    account, token = user_with_bound_device(stack)
    stack_stub = stub_for(stack.channel())
    ready = send_text(stack, token, account["id"], "ready")
    with subscribed(subscribe_channel, token) as subscription:
        assert [m.id for m in subscription.messages(1)] == [ready]

        def burst(stub, label: str) -> None:
            for i in range(20):
                grpc_text(stub, token, account["id"], f"{label} {i}")

        threads = [
            threading.Thread(target=burst, args=(stack_stub, "stack")),
            threading.Thread(target=burst, args=(other_stub, "extra")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        sent = [row[0] for row in stored(stack, account["id"]) if row[0] != ready]
        assert len(sent) == 40
        sentinel = grpc_text(other_stub, token, account["id"], "sentinel")
        assert sentinel.status == "success"
        sentinel_id = max(row[0] for row in stored(stack, account["id"]))
        received = subscription.messages_until(sentinel_id, timeout=30)
        assert len(received) == len(set(received)) == 41
        assert sorted(received) == sorted([*sent, sentinel_id])


def test_messages_sent_through_another_process_reach_subscribers(stack, tmp_path):
    with extra_server(stack, tmp_path) as server:
        _fan_out(stack, stack.channel(), server.stub)


def test_subscribers_of_another_process_receive_messages_sent_here(stack, tmp_path):
    with extra_server(stack, tmp_path) as server:
        _fan_out(stack, server.channel, stub_for(stack.channel()))
