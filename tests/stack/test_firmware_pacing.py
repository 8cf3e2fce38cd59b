"""Firmware notifications at DEVICEHUB_FIRMWARE_NOTIFY_PER_MINUTE and never beyond an
account's DEVICEHUB_MESSAGE_QUEUE_LIMIT, on a stack of its own with a slow pace."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from devicehub.rollouts import MAX_TURN_SHARE
from devicehub.testing.stack import Stack, start_stack

from api_client import query_database
from firmware_setup import (
    Fleet,
    bind_fleet,
    create_rollout,
    firmware_bytes,
    fleet,
    get_rollout,
    scheduler_turn_passed,
    upload_rest,
)
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env

PER_MINUTE = 120
TICK = 0.5
QUEUE_LIMIT = 3
ACK = "/api/device/messages/ack/"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def paced(request, tmp_path_factory) -> Iterator[Stack]:
    """A stack that notifies 120 devices a minute (one per 0.5 s turn) and holds at most
    3 pending messages per account."""
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"paced-{backend}")
    env = stack_env(tmp, backend_database(request, backend, tmp))
    env.update(
        DEVICEHUB_FIRMWARE_NOTIFY_PER_MINUTE=str(PER_MINUTE),
        DEVICEHUB_FIRMWARE_TICK=str(TICK),
        DEVICEHUB_MESSAGE_QUEUE_LIMIT=str(QUEUE_LIMIT),
    )
    started = start_stack(backend, env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


def allowed(elapsed: float) -> float:
    """The most the pace lets be notified within ``elapsed`` seconds: its rate, plus the
    share an idle scheduler may have saved up (MAX_TURN_SHARE ticks' worth and one)."""
    return PER_MINUTE * (elapsed + MAX_TURN_SHARE * TICK) / 60 + 1


def pending(stack: Stack, account_id: int) -> list[int]:
    """Ids of the account's pending firmware messages."""
    rows = query_database(
        stack,
        "SELECT id FROM message WHERE account_id = ? AND type = 'firmware' "
        "AND state IN ('queued', 'delivered') ORDER BY id",
        (account_id,),
    )
    return [row[0] for row in rows]


def notified_devices(stack: Stack, account_id: int) -> list[int]:
    rows = query_database(
        stack, "SELECT payload FROM message WHERE account_id = ? ORDER BY id", (account_id,)
    )
    return sorted(json.loads(payload)["device_id"] for (payload,) in rows)


def test_notifications_follow_the_pace_and_wait_for_room_in_full_queues(paced):
    """A rollout over 30 devices is notified no faster than 120 a minute and all 27 that
    fit are, while the account holding 6 devices never has more than its 3 pending
    messages: its other devices stay queued over later turns until acks make room."""
    stack = paced
    devices = fleet(stack, 30)
    few, rest = devices.device_ids[:6], devices.device_ids[6:]
    crowded = bind_fleet(stack, Fleet(devices.device_type, devices.batch, few), per_account=6)
    bind_fleet(stack, Fleet(devices.device_type, devices.batch, rest), per_account=QUEUE_LIMIT)
    (account_id,) = set(crowded.accounts.values())
    token = crowded.tokens[devices.device_ids[0]]
    upload = upload_rest(
        stack, stack.admin_token, devices.device_type["id"], "8.0.0", firmware_bytes(2048)
    )
    assert upload.status_code == 200, upload.text

    started = time.monotonic()
    rid = create_rollout(stack, upload.json()["id"])["id"]
    deadline = started + 40
    seen: list[int] = []
    while True:
        elapsed = time.monotonic() - started
        notified = get_rollout(stack, rid)["counts"]["notified"]
        assert notified <= allowed(elapsed), (notified, elapsed)
        assert len(pending(stack, account_id)) <= QUEUE_LIMIT
        seen.append(notified)
        if notified == 27:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)
    assert seen == sorted(seen)
    assert seen[0] < 27  # the pace was seen at work, not only its end

    scheduler_turn_passed(stack)
    rollout = get_rollout(stack, rid)
    assert rollout["counts"]["notified"] == 27 and rollout["counts"]["queued"] == 3
    held = pending(stack, account_id)
    assert len(held) == QUEUE_LIMIT
    assert len(notified_devices(stack, account_id)) == QUEUE_LIMIT

    response = stack.request("POST", ACK, token, json={"ids": held[:2]})
    assert response.json() == {"acked": 2}, response.text
    _wait_notified(stack, rid, 29)
    assert len(pending(stack, account_id)) == QUEUE_LIMIT
    response = stack.request("POST", ACK, token, json={"ids": pending(stack, account_id)})
    assert response.json() == {"acked": QUEUE_LIMIT}, response.text
    _wait_notified(stack, rid, 30)
    assert notified_devices(stack, account_id) == sorted(crowded.device_ids)
    assert get_rollout(stack, rid)["counts"]["queued"] == 0


def _wait_notified(stack: Stack, rollout_id: int, number: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (notified := get_rollout(stack, rollout_id)["counts"]["notified"]) != number:
        assert notified < number and time.monotonic() < deadline, notified
        time.sleep(0.1)
