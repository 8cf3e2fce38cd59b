"""FirmwareService rollouts against the real stack: staged groups driven by simulated
devices, the automatic stop, pause/resume/cancel, skipping, the transition rules, the
`firmware` notification on every stream, authorization, and concurrent reports."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Callable

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from websockets.sync.client import connect

from devicehub.testing.stack import Stack
from devicehub.v1 import firmware_pb2, firmware_pb2_grpc

from api_client import metadata, query_database
from firmware_setup import (
    DEVICES,
    ROLLOUTS,
    BoundFleet,
    bind_fleet,
    create_rollout,
    firmware_bytes,
    fleet,
    get_rollout,
    scheduler_turn_passed,
    upload_rest,
    wait_for_rollout,
)
from streams import WAIT, SseStream, Subscription, stored, ws_url

STEPS = ("downloading", "downloaded", "verified", "updating", "updated")
HISTORY = ("queued", "notified", *STEPS)
NOT_ALLOWED = "FIRMWARE_TRANSITION_NOT_ALLOWED"
ZERO_COUNTS = dict.fromkeys(
    (
        "queued",
        "notified",
        "downloading",
        "downloaded",
        "verified",
        "updating",
        "updated",
        "failed",
        "skipped",
        "canceled",
    ),
    0,
)


# --- helpers ---------------------------------------------------------------------------


def counts(**nonzero: int) -> dict[str, int]:
    return {**ZERO_COUNTS, **nonzero}


def package(stack: Stack, device_type: int, version: str, size: int = 4096, **query) -> dict:
    response = upload_rest(
        stack, stack.admin_token, device_type, version, firmware_bytes(size, seed=size), **query
    )
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: requests.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"status", "message", "code"}, body
    assert body["status"] == "error" and body["message"], body
    return response.status_code, body["code"]


def progress(
    stack: Stack, token: str, device_id: int, state: str, reason: str = "", http=requests
) -> requests.Response:
    body = {"state": state, **({"reason": reason} if reason else {})}
    return http.request(
        "POST",
        stack.url(f"{DEVICES}/{device_id}/progress"),
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=30,
    )


def reported(stack: Stack, token: str, device_id: int, state: str, reason: str = "") -> dict:
    response = progress(stack, token, device_id, state, reason)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["device_id"], body["state"]) == (device_id, state), body
    return body


def check(stack: Stack, token: str, device_id: int) -> dict:
    response = stack.request("GET", f"{DEVICES}/{device_id}/check", token)
    assert response.status_code == 200, response.text
    return response.json()


def device_updates(stack: Stack, token: str, device_id: int) -> list[dict]:
    response = stack.request("GET", f"{DEVICES}/{device_id}/updates", token)
    assert response.status_code == 200, response.text
    return response.json()


def walk(stack: Stack, token: str, device_id: int, steps=STEPS) -> None:
    """A device that learns of its update by polling and reports each step over REST."""
    available = check(stack, token, device_id)
    assert available["update_available"] is True, available
    for state in steps:
        reported(stack, token, device_id, state)


def walk_grpc(stub, token: str, device_id: int, steps=STEPS) -> None:
    """The same device, over native gRPC."""
    available = stub.CheckFirmwareUpdate(
        firmware_pb2.CheckFirmwareUpdateRequest(device_id=device_id), metadata=metadata(token)
    )
    assert available.update_available and available.update.device_id == device_id
    for state in steps:
        update = stub.ReportFirmwareUpdateProgress(
            firmware_pb2.ReportFirmwareUpdateProgressRequest(device_id=device_id, state=state),
            metadata=metadata(token),
        )
        assert update.state == state


def rollout_updates(stack: Stack, rollout_id: int, **params) -> list[dict]:
    response = stack.request(
        "GET",
        f"{ROLLOUTS}/{rollout_id}/updates",
        stack.admin_token,
        params={"page_size": 1000, **params},
    )
    assert response.status_code == 200, response.text
    return response.json()


def group_devices(stack: Stack, rollout_id: int, group: int) -> list[int]:
    return [u["device_id"] for u in rollout_updates(stack, rollout_id, group=group)]


def group_counts(rollout: dict, index: int) -> dict[str, int]:
    return rollout["groups"][index]["counts"]


def group_states(rollout: dict) -> list[str]:
    return [group["state"] for group in rollout["groups"]]


def notified_in(index: int, number: int) -> Callable[[dict], bool]:
    return lambda rollout: group_counts(rollout, index)["notified"] == number


def firmware_messages(stack: Stack, account_id: int) -> list[dict]:
    return [payload for _, kind, payload, _, _ in stored(stack, account_id) if kind == "firmware"]


def firmware_message_devices(stack: Stack, bound: BoundFleet) -> list[int]:
    """The device ids of every firmware message the fleet's accounts hold, sorted."""
    return sorted(
        payload["device_id"]
        for account_id in set(bound.accounts.values())
        for payload in firmware_messages(stack, account_id)
    )


def expected_payload(device_id: int, pkg: dict) -> dict:
    return {
        "device_id": device_id,
        "package_id": pkg["id"],
        "version": pkg["version"],
        "size_bytes": pkg["size_bytes"],
        "sha256": pkg["sha256"],
        "download_path": f"/api/device/firmware/packages/{pkg['id']}/download",
    }


def installed(stack: Stack, device_ids: list[int]) -> dict[int, tuple[int, str]]:
    marks = ",".join("?" for _ in device_ids)
    rows = query_database(
        stack,
        f"SELECT id, now_firmware_id, firmware_version FROM device WHERE id IN ({marks})",
        tuple(device_ids),
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def history(update: dict) -> list[str]:
    return [event["state"] for event in update["history"]]


def times_in_order(update: dict) -> bool:
    times = [dt.datetime.fromisoformat(event["time"]) for event in update["history"]]
    return times == sorted(times) and times[0] == dt.datetime.fromisoformat(update["created_at"])


def grpc_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    return info.reason


def new_bound_fleet(stack: Stack, count: int, per_account: int) -> BoundFleet:
    return bind_fleet(stack, fleet(stack, count), per_account)


# --- 1. a three-group rollout driven to completion -------------------------------------


def test_three_group_rollout_runs_group_by_group_to_completion(stack):
    """Each group starts only once the one before it reached the success threshold (90%),
    devices report every step (REST and gRPC), and at the end the rollout is completed,
    every device runs the package, each account got one message per device, and every
    device's history lists each state once, in order."""
    bound = new_bound_fleet(stack, 20, per_account=5)
    devices = bound.fleet
    pkg = package(stack, devices.device_type["id"], "2.0.0", size=200_000)
    rollout = create_rollout(
        stack,
        pkg["id"],
        target={"batch_ids": [devices.batch["id"]]},
        group_percents=[10, 50, 100],
    )
    rid = rollout["id"]
    assert (rollout["state"], rollout["device_count"], rollout["version"]) == (
        "running",
        20,
        "2.0.0",
    )
    assert (rollout["success_threshold_percent"], rollout["error_threshold_percent"]) == (90, 10)
    assert [g["device_count"] for g in rollout["groups"]] == [2, 8, 10]
    assert [g["percent"] for g in rollout["groups"]] == [10, 50, 100]
    assert group_states(rollout) == ["running", "pending", "pending"]
    assert "started_at" in rollout["groups"][0] and "started_at" not in rollout["groups"][1]
    groups = [group_devices(stack, rid, index) for index in range(3)]
    assert sorted(d for members in groups for d in members) == sorted(devices.device_ids)

    rollout = wait_for_rollout(stack, rid, notified_in(0, 2))
    assert rollout["counts"] == counts(notified=2, queued=18)
    # Only the started group's accounts were told, one message per device.
    assert firmware_message_devices(stack, bound) == sorted(groups[0])
    first = groups[1][0]
    assert check(stack, bound.tokens[first], first) == {"update_available": False}

    a, b = groups[0]
    offer = check(stack, bound.tokens[a], a)
    assert offer["update_available"] is True
    assert {k: offer["update"][k] for k in ("rollout_id", "device_id", "package_id", "group")} == {
        "rollout_id": rid,
        "device_id": a,
        "package_id": pkg["id"],
        "group": 0,
    }
    assert offer["update"]["state"] == "notified"
    assert {k: offer["package"][k] for k in ("id", "version", "size_bytes", "sha256")} == {
        "id": pkg["id"],
        "version": "2.0.0",
        "size_bytes": 200_000,
        "sha256": hashlib.sha256(firmware_bytes(200_000, seed=200_000)).hexdigest(),
    }
    walk(stack, bound.tokens[a], a)
    rollout = get_rollout(stack, rid)
    assert group_states(rollout) == ["running", "pending", "pending"]  # 1 of 2 < 90%
    assert group_counts(rollout, 0) == counts(updated=1, notified=1)
    assert group_counts(rollout, 1) == counts(queued=8)

    walk(stack, bound.tokens[b], b)
    rollout = get_rollout(stack, rid)
    assert group_states(rollout) == ["succeeded", "running", "pending"]
    assert "started_at" in rollout["groups"][1] and "started_at" not in rollout["groups"][2]

    # Group 1 over gRPC: it needs all 8 (7 of 8 < 90%).
    wait_for_rollout(stack, rid, notified_in(1, 8))
    stub = firmware_pb2_grpc.FirmwareServiceStub(stack.channel())
    for device_id in groups[1][:7]:
        walk_grpc(stub, bound.tokens[device_id], device_id)
    rollout = get_rollout(stack, rid)
    assert group_states(rollout) == ["succeeded", "running", "pending"]
    assert group_counts(rollout, 2) == counts(queued=10)
    assert firmware_message_devices(stack, bound) == sorted(groups[0] + groups[1])
    walk_grpc(stub, bound.tokens[groups[1][7]], groups[1][7])
    assert group_states(get_rollout(stack, rid)) == ["succeeded", "succeeded", "running"]

    # Group 2: 9 of 10 reach the threshold; the rollout completes with the last one.
    wait_for_rollout(stack, rid, notified_in(2, 10))
    for device_id in groups[2][:8]:
        walk(stack, bound.tokens[device_id], device_id)
    assert group_states(get_rollout(stack, rid)) == ["succeeded", "succeeded", "running"]
    walk(stack, bound.tokens[groups[2][8]], groups[2][8])
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == ("running", ["succeeded"] * 3)
    last = groups[2][9]
    walk(stack, bound.tokens[last], last)
    rollout = get_rollout(stack, rid)
    assert rollout["state"] == "completed"
    assert rollout["counts"] == counts(updated=20)

    assert installed(stack, devices.device_ids) == dict.fromkeys(
        devices.device_ids, (pkg["id"], "2.0.0")
    )
    assert firmware_message_devices(stack, bound) == sorted(devices.device_ids)
    for account_id in set(bound.accounts.values()):
        for payload in firmware_messages(stack, account_id):
            assert bound.accounts[payload["device_id"]] == account_id
            assert payload == expected_payload(payload["device_id"], pkg)
    for position, members in enumerate(groups):
        for device_id in members:
            (update,) = device_updates(stack, bound.tokens[device_id], device_id)
            assert (update["rollout_id"], update["group"], update["state"]) == (
                rid,
                position,
                "updated",
            )
            assert history(update) == list(HISTORY)
            assert times_in_order(update), update
            assert check(stack, bound.tokens[device_id], device_id) == {"update_available": False}

    for action in ("pause", "resume", "cancel"):
        response = stack.request("POST", f"{ROLLOUTS}/{rid}/{action}", stack.admin_token)
        assert error_of(response) == (409, "FIRMWARE_ROLLOUT_STATE"), response.text


# --- 2. the automatic stop -------------------------------------------------------------


def test_failures_over_the_error_threshold_stop_the_rollout(stack):
    """Group 0 of 5 may have one failure (20%); the second stops the rollout: group 0 is
    `failed`, group 1 stays pending and is never notified, while devices that had begun
    may still finish. `failed` needs a reason."""
    bound = new_bound_fleet(stack, 10, per_account=5)
    pkg = package(stack, bound.fleet.device_type["id"], "3.1.0")
    rid = create_rollout(stack, pkg["id"], group_percents=[50, 100], error_threshold_percent=20)[
        "id"
    ]
    wait_for_rollout(stack, rid, notified_in(0, 5))
    first, second, third, *_ = group_devices(stack, rid, 0)
    later = group_devices(stack, rid, 1)

    response = progress(stack, bound.tokens[first], first, "failed")
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "message": "reason is required",
        "code": "INVALID_ARGUMENT",
    }
    walk(stack, bound.tokens[first], first, steps=("downloading",))
    failed = reported(stack, bound.tokens[first], first, "failed", "checksum mismatch")
    assert failed["reason"] == "checksum mismatch"
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == ("running", ["running", "pending"])

    reported(stack, bound.tokens[second], second, "failed", "battery low")
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == (
        "stopped_by_failures",
        ["failed", "pending"],
    )
    assert "started_at" not in rollout["groups"][1]
    assert group_counts(rollout, 1) == counts(queued=5)

    # A device already notified may finish; that restarts nothing.
    walk(stack, bound.tokens[third], third)
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == (
        "stopped_by_failures",
        ["failed", "pending"],
    )
    assert rollout["counts"] == counts(failed=2, updated=1, notified=2, queued=5)
    assert installed(stack, [third]) == {third: (pkg["id"], "3.1.0")}

    scheduler_turn_passed(stack)
    assert group_counts(get_rollout(stack, rid), 1) == counts(queued=5)
    assert set(firmware_message_devices(stack, bound)).isdisjoint(later)
    assert check(stack, bound.tokens[later[0]], later[0]) == {"update_available": False}
    (update,) = device_updates(stack, bound.tokens[first], first)
    assert history(update) == ["queued", "notified", "downloading", "failed"]
    assert update["history"][-1]["reason"] == "checksum mismatch"


# --- 3. pause, resume, cancel ----------------------------------------------------------


def test_pause_holds_groups_resume_continues_cancel_ends_every_update(stack):
    """A paused rollout starts no group and notifies nobody (a queued device's check says
    no update) while notified devices finish; resuming starts the next group; canceling
    ends every unended update as `canceled` and later reports are refused."""
    bound = new_bound_fleet(stack, 10, per_account=5)
    pkg = package(stack, bound.fleet.device_type["id"], "1.4.0")
    rid = create_rollout(stack, pkg["id"], group_percents=[50, 100], success_threshold_percent=100)[
        "id"
    ]
    wait_for_rollout(stack, rid, notified_in(0, 5))
    early, later = group_devices(stack, rid, 0), group_devices(stack, rid, 1)

    paused = stack.request("POST", f"{ROLLOUTS}/{rid}/pause", stack.admin_token)
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused"
    again = stack.request("POST", f"{ROLLOUTS}/{rid}/pause", stack.admin_token)
    assert again.status_code == 409
    assert again.json() == {
        "status": "error",
        "message": "A rollout that is paused cannot pause; only one that is running",
        "code": "FIRMWARE_ROLLOUT_STATE",
    }
    assert check(stack, bound.tokens[later[0]], later[0]) == {"update_available": False}
    for device_id in early:
        walk(stack, bound.tokens[device_id], device_id)
    scheduler_turn_passed(stack)
    rollout = get_rollout(stack, rid)
    assert rollout["state"] == "paused"
    assert group_states(rollout)[1] == "pending"
    assert group_counts(rollout, 1) == counts(queued=5)
    assert firmware_message_devices(stack, bound) == sorted(early)

    resumed = stack.request("POST", f"{ROLLOUTS}/{rid}/resume", stack.admin_token)
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["state"], group_states(resumed.json())) == (
        "running",
        ["succeeded", "running"],
    )
    again = stack.request("POST", f"{ROLLOUTS}/{rid}/resume", stack.admin_token)
    assert error_of(again) == (409, "FIRMWARE_ROLLOUT_STATE")
    wait_for_rollout(stack, rid, notified_in(1, 5))
    assert firmware_message_devices(stack, bound) == sorted(bound.device_ids)

    halfway, done = later[0], later[1]
    walk(stack, bound.tokens[halfway], halfway, steps=("downloading", "downloaded"))
    walk(stack, bound.tokens[done], done)
    canceled = stack.request("POST", f"{ROLLOUTS}/{rid}/cancel", stack.admin_token)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["state"] == "canceled"
    assert canceled.json()["counts"] == counts(updated=6, canceled=4)

    late = progress(stack, bound.tokens[halfway], halfway, "verified")
    assert late.status_code == 400
    assert late.json() == {
        "status": "error",
        "message": "The update has ended (canceled); it cannot become verified",
        "code": NOT_ALLOWED,
    }
    assert check(stack, bound.tokens[halfway], halfway) == {"update_available": False}
    (update,) = device_updates(stack, bound.tokens[halfway], halfway)
    assert history(update) == ["queued", "notified", "downloading", "downloaded", "canceled"]
    assert (update["state"], update["reason"]) == ("canceled", "rollout canceled")
    assert installed(stack, [halfway, done]) == {halfway: (0, ""), done: (pkg["id"], "1.4.0")}
    for action in ("pause", "resume", "cancel"):
        response = stack.request("POST", f"{ROLLOUTS}/{rid}/{action}", stack.admin_token)
        assert error_of(response) == (409, "FIRMWARE_ROLLOUT_STATE"), response.text


# --- 4. skipping and targets -----------------------------------------------------------


def test_skipped_devices_carry_their_reason_and_do_not_count(stack):
    """Devices already on the version, below the package's minimum, of unknown version
    (none reported, or not a semantic version) and in another unended rollout are skipped
    with their reason; the others complete the rollout at a 100% success threshold."""
    admin = stack.admin_token
    devices = fleet(stack, 8)
    type_id = devices.device_type["id"]
    older = package(stack, type_id, "1.5.0")
    pkg = package(stack, type_id, "2.0.0", min_version="1.0.0")
    on_version, below, unreported, odd, busy, *eligible = devices.device_ids
    for device_id, version in [
        (on_version, "2.0.0"),
        (below, "0.9.0"),
        (odd, "nightly"),
        (busy, "1.2.0"),
        *[(device_id, "1.2.0") for device_id in eligible],
    ]:
        response = stack.request(
            "POST", f"{DEVICES}/{device_id}/installed", admin, json={"version": version}
        )
        assert response.status_code == 200, response.text
    assert installed(stack, [on_version])[on_version] == (pkg["id"], "2.0.0")

    other = create_rollout(stack, older["id"], target={"device_ids": [busy]})
    assert (other["device_count"], other["target"]) == (1, {"batch_ids": [], "device_ids": [busy]})
    rollout = create_rollout(
        stack,
        pkg["id"],
        target={"batch_ids": [devices.batch["id"]]},
        success_threshold_percent=100,
        error_threshold_percent=0,
    )
    rid = rollout["id"]
    assert rollout["device_count"] == 8
    assert rollout["counts"]["skipped"] == 5
    skipped = {u["device_id"]: u["reason"] for u in rollout_updates(stack, rid, state="skipped")}
    assert skipped == {
        on_version: "already_on_version",
        below: "below_min_version",
        unreported: "unknown_version",
        odd: "unknown_version",
        busy: "in_another_rollout",
    }
    (update,) = [u for u in device_updates(stack, admin, below) if u["rollout_id"] == rid]
    assert [(e["state"], e["reason"]) for e in update["history"]] == [
        ("skipped", "below_min_version")
    ]
    # The busy device's current update is still the other rollout's.
    offer = check(stack, admin, busy)
    assert (offer["update"]["rollout_id"], offer["package"]["version"]) == (other["id"], "1.5.0")
    assert check(stack, admin, on_version) == {"update_available": False}

    wait_for_rollout(stack, rid, notified_in(0, 3))
    for device_id in eligible:
        walk(stack, admin, device_id)
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == ("completed", ["succeeded"])
    assert rollout["counts"] == counts(updated=3, skipped=5)


def test_a_skipped_device_reports_on_its_unended_update(stack):
    """A device skipped by a later rollout (in_another_rollout) still reports its
    progress on the update it is carrying out, which CheckFirmwareUpdate names."""
    admin = stack.admin_token
    devices = fleet(stack, 2)
    type_id = devices.device_type["id"]
    first = create_rollout(stack, package(stack, type_id, "1.1.0")["id"])
    wait_for_rollout(stack, first["id"], notified_in(0, 2))
    second = create_rollout(stack, package(stack, type_id, "1.2.0")["id"])
    assert second["counts"] == counts(skipped=2)
    device_id = devices.device_ids[0]
    assert check(stack, admin, device_id)["update"]["rollout_id"] == first["id"]
    update = reported(stack, admin, device_id, "downloading")
    assert update["rollout_id"] == first["id"]


def test_rollout_targets_are_checked(stack):
    """Batches and devices must be of the package's type (400), batches and packages must
    exist (404), and group percentages and thresholds must be well formed (400); a refused
    rollout leaves nothing behind."""
    admin = stack.admin_token
    devices = fleet(stack, 2)
    stranger = fleet(stack, 1)
    pkg = package(stack, devices.device_type["id"], "1.0.0")

    def refused(body: dict) -> tuple[int, str, str]:
        response = stack.request("POST", ROLLOUTS, admin, json={"package_id": pkg["id"], **body})
        status, code = error_of(response)
        return status, code, response.json()["message"]

    batch = stranger.batch["id"]
    assert refused({"target": {"batch_ids": [devices.batch["id"], batch]}}) == (
        400,
        "BATCH_TYPE_MISMATCH",
        f"batch {batch} belongs to another device type than the package",
    )
    device = stranger.device_ids[0]
    assert refused({"target": {"device_ids": [devices.device_ids[0], device]}}) == (
        400,
        "INVALID_ARGUMENT",
        f"device {device} is no device of the package's type (1 such device)",
    )
    assert refused({"target": {"batch_ids": [2_000_000_000]}})[:2] == (
        404,
        "DEVICE_BATCH_NOT_FOUND",
    )
    for percents in ([50, 40, 100], [10, 50], [0, 100], [50, 101], list(range(80, 101))):
        assert refused({"group_percents": percents})[:2] == (400, "INVALID_ARGUMENT"), percents
    assert refused({"success_threshold_percent": 0})[:2] == (400, "INVALID_ARGUMENT")
    assert refused({"error_threshold_percent": 101})[:2] == (400, "INVALID_ARGUMENT")
    missing = stack.request("POST", ROLLOUTS, admin, json={"package_id": 2_000_000_000})
    assert error_of(missing) == (404, "FIRMWARE_PACKAGE_NOT_FOUND")
    assert query_database(
        stack, "SELECT count(*) FROM firmware_rollout WHERE package_id = ?", (pkg["id"],)
    ) == [(0,)]

    listed = create_rollout(stack, pkg["id"], target={"device_ids": [devices.device_ids[1]]})
    assert [u["device_id"] for u in rollout_updates(stack, listed["id"])] == [devices.device_ids[1]]


def test_a_rollout_whose_updates_all_ended_is_completed(stack):
    """A group that ends below the success threshold without exceeding the error
    threshold (one of two failed, 50% allowed) leaves a rollout with every update ended:
    it is completed."""
    admin = stack.admin_token
    devices = fleet(stack, 2)
    pkg = package(stack, devices.device_type["id"], "1.0.1")
    rid = create_rollout(
        stack, pkg["id"], success_threshold_percent=100, error_threshold_percent=50
    )["id"]
    wait_for_rollout(stack, rid, notified_in(0, 2))
    failing, updating = devices.device_ids
    reported(stack, admin, failing, "failed", "flash error")
    assert get_rollout(stack, rid)["state"] == "running"
    walk(stack, admin, updating)
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], rollout["counts"]) == ("completed", counts(updated=1, failed=1))


def test_a_group_before_the_last_that_ended_below_the_success_threshold_stops_it(stack):
    """Group 0 (2 of 4 devices) ends with one updated and one failed: within the error
    threshold (50%), below the success threshold (100%). It can never let group 1 start,
    so the rollout stops instead of waiting for ever; group 1 stays pending."""
    admin = stack.admin_token
    devices = fleet(stack, 4)
    pkg = package(stack, devices.device_type["id"], "1.0.2")
    rid = create_rollout(
        stack,
        pkg["id"],
        group_percents=[50, 100],
        success_threshold_percent=100,
        error_threshold_percent=50,
    )["id"]
    wait_for_rollout(stack, rid, notified_in(0, 2))
    first_group = [
        update["device_id"]
        for update in stack.request(
            "GET", f"{ROLLOUTS}/{rid}/updates", admin, params={"group": 0}
        ).json()
    ]
    failing, updating = first_group
    reported(stack, admin, failing, "failed", "flash error")
    assert get_rollout(stack, rid)["state"] == "running"
    walk(stack, admin, updating)
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == (
        "stopped_by_failures",
        ["failed", "pending"],
    )
    assert rollout["groups"][1]["counts"] == counts(queued=2)


# --- 5. the transition rules -----------------------------------------------------------


def test_out_of_sequence_reports_are_refused_and_retries_change_nothing(stack):
    """Skipping a step, going back and reporting on a queued update are 400
    FIRMWARE_TRANSITION_NOT_ALLOWED (gRPC FAILED_PRECONDITION); the state an update is
    already in is accepted unchanged, with no new history entry."""
    bound = new_bound_fleet(stack, 10, per_account=10)
    pkg = package(stack, bound.fleet.device_type["id"], "5.0.0")
    rid = create_rollout(stack, pkg["id"], group_percents=[10, 100])["id"]
    wait_for_rollout(stack, rid, notified_in(0, 1))
    (device_id,) = group_devices(stack, rid, 0)
    queued = group_devices(stack, rid, 1)[0]
    token = bound.tokens[device_id]

    response = progress(stack, token, queued, "downloading")
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "message": "The update is queued: the device has not been notified yet "
        "(CheckFirmwareUpdate tells it once its group has started)",
        "code": NOT_ALLOWED,
    }
    skipping = progress(stack, token, device_id, "verified")
    assert skipping.status_code == 400
    assert skipping.json() == {
        "status": "error",
        "message": "An update in state notified cannot become verified; "
        "next is downloading or failed",
        "code": NOT_ALLOWED,
    }
    for state in ("notified", "queued", "skipped", "canceled", "done"):
        assert error_of(progress(stack, token, device_id, state)) == (400, "INVALID_ARGUMENT")

    first = reported(stack, token, device_id, "downloading")
    retry = reported(stack, token, device_id, "downloading")
    assert retry == first
    assert history(retry) == ["queued", "notified", "downloading"]
    reported(stack, token, device_id, "downloaded")
    assert error_of(progress(stack, token, device_id, "downloading")) == (400, NOT_ALLOWED)

    stub = firmware_pb2_grpc.FirmwareServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.ReportFirmwareUpdateProgress(
            firmware_pb2.ReportFirmwareUpdateProgressRequest(device_id=device_id, state="updating"),
            metadata=metadata(token),
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == (
        "An update in state downloaded cannot become updating; next is verified or failed"
    )
    assert grpc_reason(error.value) == NOT_ALLOWED

    for state in ("verified", "updating", "updated"):
        reported(stack, token, device_id, state)
    done = reported(stack, token, device_id, "updated")  # a retried last report
    assert done["history"] == device_updates(stack, token, device_id)[0]["history"]
    ended = progress(stack, token, device_id, "failed", "too late")
    assert ended.status_code == 400
    assert ended.json()["message"] == "The update has ended (updated); it cannot become failed"
    assert error_of(ended) == (400, NOT_ALLOWED)
    (update,) = device_updates(stack, token, device_id)
    assert history(update) == list(HISTORY)
    assert update["state"] == "updated"
    rollout = get_rollout(stack, rid)
    assert group_counts(rollout, 0) == counts(updated=1)
    assert group_states(rollout) == ["succeeded", "running"]

    fresh = new_bound_fleet(stack, 1, per_account=1)
    (lonely,) = fresh.device_ids
    missing = progress(stack, fresh.tokens[lonely], lonely, "downloading")
    assert error_of(missing) == (404, "FIRMWARE_UPDATE_NOT_FOUND")


# --- 6. the notification on every stream -----------------------------------------------


def test_group_start_notifies_the_account_on_grpc_sse_and_websocket(stack):
    """When its device's group starts, the account receives one `firmware` message with
    the package's facts, live on a gRPC subscription, the SSE stream and the WebSocket."""
    bound = new_bound_fleet(stack, 1, per_account=1)
    (device_id,) = bound.device_ids
    token, account_id = bound.tokens[device_id], bound.accounts[device_id]
    pkg = package(stack, bound.fleet.device_type["id"], "7.0.1", size=10_000)
    payload = expected_payload(device_id, pkg)
    subscription = Subscription(stack.channel(), token)
    sse = SseStream(stack, token)
    try:
        with connect(ws_url(stack, account_id, token), open_timeout=WAIT) as socket:
            rid = create_rollout(stack, pkg["id"])["id"]
            (message,) = subscription.messages(1)
            assert message.type == "firmware"
            assert message.user_id == str(account_id)
            got = message.message
            assert {
                "device_id": got.device_id,
                "package_id": got.package_id,
                "version": got.version,
                "size_bytes": got.size_bytes,
                "sha256": got.sha256,
                "download_path": got.download_path,
            } == payload
            assert not got.HasField("content")
            (event,) = sse.messages(1)
            assert (int(event["id"]), event["type"], event["message"]) == (
                message.id,
                "firmware",
                payload,
            )
            frame = socket.recv(timeout=WAIT)
            assert json.loads(frame) == {
                "type": "firmware",
                "message": payload,
                "user_id": str(account_id),
                "id": message.id,
            }
    finally:
        subscription.cancel()
        sse.close()
    assert get_rollout(stack, rid)["counts"] == counts(notified=1)
    assert [(t, p) for _, t, p, _, _ in stored(stack, account_id)] == [("firmware", payload)]


# --- 7. authorization ------------------------------------------------------------------


def test_packages_and_rollouts_are_admin_only(stack, user):
    """Every package and rollout endpoint is 403 PERMISSION_DENIED to a non-admin."""
    _, token = user
    devices = fleet(stack, 1)
    pkg = package(stack, devices.device_type["id"], "1.0.0")
    rid = create_rollout(stack, pkg["id"])["id"]
    calls = [
        ("GET", "/api/device/firmware/packages", None),
        ("GET", f"/api/device/firmware/packages/{pkg['id']}", None),
        ("DELETE", f"/api/device/firmware/packages/{pkg['id']}", None),
        ("POST", ROLLOUTS, {"package_id": pkg["id"]}),
        ("GET", ROLLOUTS, None),
        ("GET", f"{ROLLOUTS}/{rid}", None),
        ("GET", f"{ROLLOUTS}/{rid}/updates", None),
        ("POST", f"{ROLLOUTS}/{rid}/pause", {}),
        ("POST", f"{ROLLOUTS}/{rid}/resume", {}),
        ("POST", f"{ROLLOUTS}/{rid}/cancel", {}),
    ]
    for method, path, body in calls:
        response = stack.request(method, path, token, json=body)
        assert error_of(response) == (403, "PERMISSION_DENIED"), (method, path, response.text)
    upload = upload_rest(stack, token, devices.device_type["id"], "1.0.1", b"firmware")
    assert error_of(upload) == (403, "PERMISSION_DENIED")
    rollout = get_rollout(stack, rid)
    assert rollout["state"] == "running" and rollout["device_count"] == 1
    assert stack.request("GET", ROLLOUTS).status_code == 401


def test_a_foreign_account_sees_no_device_updates(stack):
    """Check, progress, updates and installed on a device bound to someone else are 404
    DEVICE_NOT_FOUND (REST and gRPC) and change nothing; the bound account is answered."""
    bound = new_bound_fleet(stack, 1, per_account=1)
    (device_id,) = bound.device_ids
    _, stranger = stack.new_user()
    pkg = package(stack, bound.fleet.device_type["id"], "1.0.0")
    rid = create_rollout(stack, pkg["id"])["id"]
    wait_for_rollout(stack, rid, notified_in(0, 1))
    calls = [
        ("GET", f"{DEVICES}/{device_id}/check", None),
        ("GET", f"{DEVICES}/{device_id}/updates", None),
        ("POST", f"{DEVICES}/{device_id}/progress", {"state": "downloading"}),
        ("POST", f"{DEVICES}/{device_id}/installed", {"version": "9.9.9"}),
    ]
    for method, path, body in calls:
        response = stack.request(method, path, stranger, json=body)
        assert error_of(response) == (404, "DEVICE_NOT_FOUND"), (method, path, response.text)
    stub = firmware_pb2_grpc.FirmwareServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.CheckFirmwareUpdate(
            firmware_pb2.CheckFirmwareUpdateRequest(device_id=device_id),
            metadata=metadata(stranger),
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert grpc_reason(error.value) == "DEVICE_NOT_FOUND"
    (update,) = device_updates(stack, bound.tokens[device_id], device_id)
    assert (update["state"], history(update)) == ("notified", ["queued", "notified"])
    assert installed(stack, [device_id]) == {device_id: (0, "")}


# --- 8. concurrency --------------------------------------------------------------------


def run_together(actions: list[Callable[[], object]]) -> list[object]:
    """Runs the actions in threads released at once by a barrier; their results (or
    raised exceptions) in order."""
    barrier = threading.Barrier(len(actions))
    results: list[object] = [None] * len(actions)

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[index] = actions[index]()
        except Exception as error:  # returned to the test to assert on
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def rest_report(stack: Stack, token: str, device_id: int, state: str, reason: str = ""):
    """A report over its own HTTP session, as (status code, code or state)."""

    def act() -> tuple[int, str]:
        with requests.Session() as session:
            response = progress(stack, token, device_id, state, reason, http=session)
        body = response.json()
        return response.status_code, body.get("code") or body["state"]

    return act


def grpc_report(stack: Stack, token: str, device_id: int, state: str, reason: str = ""):
    """The same over its own gRPC channel, as (200 or 400, reason or state)."""

    def act() -> tuple[int, str]:
        with grpc.insecure_channel(stack.grpc_target) as channel:
            stub = firmware_pb2_grpc.FirmwareServiceStub(channel)
            try:
                update = stub.ReportFirmwareUpdateProgress(
                    firmware_pb2.ReportFirmwareUpdateProgressRequest(
                        device_id=device_id, state=state, reason=reason
                    ),
                    metadata=metadata(token),
                    timeout=30,
                )
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
                return 400, grpc_reason(error)
        return 200, update.state

    return act


def test_two_reports_for_one_device_at_once_make_one_transition(stack):
    """Two identical reports at once: both succeed, one transition, one history entry.
    `updated` against `failed` at once: exactly one wins, the other is refused, and the
    update, its history, the device's version and the rollout's counts all agree."""
    bound = new_bound_fleet(stack, 6, per_account=6)
    pkg = package(stack, bound.fleet.device_type["id"], "4.2.0")
    rid = create_rollout(stack, pkg["id"], error_threshold_percent=100)["id"]
    wait_for_rollout(stack, rid, notified_in(0, 6))
    winners = {}
    for device_id in bound.device_ids:
        token = bound.tokens[device_id]
        same = run_together(
            [
                rest_report(stack, token, device_id, "downloading"),
                grpc_report(stack, token, device_id, "downloading"),
            ]
        )
        assert same == [(200, "downloading"), (200, "downloading")]
        for state in ("downloaded", "verified", "updating"):
            reported(stack, token, device_id, state)
        ends = run_together(
            [
                rest_report(stack, token, device_id, "updated"),
                grpc_report(stack, token, device_id, "failed", "power lost"),
            ]
        )
        assert sorted(ends) in (
            [(200, "updated"), (400, NOT_ALLOWED)],
            [(200, "failed"), (400, NOT_ALLOWED)],
        ), ends
        (winner,) = [state for status, state in ends if status == 200]
        winners[device_id] = winner
        (update,) = device_updates(stack, token, device_id)
        assert update["state"] == winner
        assert history(update) == ["queued", "notified", *STEPS[:4], winner]
    rollout = get_rollout(stack, rid)
    updated = [d for d, state in winners.items() if state == "updated"]
    assert rollout["counts"] == counts(updated=len(updated), failed=6 - len(updated))
    assert rollout["state"] == "completed"
    assert installed(stack, bound.device_ids) == {
        d: ((pkg["id"], "4.2.0") if d in updated else (0, "")) for d in bound.device_ids
    }


def _group_zero_updating(stack: Stack, bound: BoundFleet, **thresholds) -> tuple[int, list, list]:
    pkg = package(stack, bound.fleet.device_type["id"], "6.0.0")
    rid = create_rollout(stack, pkg["id"], group_percents=[50, 100], **thresholds)["id"]
    wait_for_rollout(stack, rid, notified_in(0, 10))
    first, later = group_devices(stack, rid, 0), group_devices(stack, rid, 1)
    for device_id in first:
        for state in STEPS[:4]:
            reported(stack, bound.tokens[device_id], device_id, state)
    return rid, first, later


def _ends(stack: Stack, bound: BoundFleet, first: list[int], failures: int) -> list[object]:
    actions = []
    for position, device_id in enumerate(first):
        token = bound.tokens[device_id]
        report = grpc_report if position % 2 else rest_report
        if position < failures:
            actions.append(report(stack, token, device_id, "failed", "flash error"))
        else:
            actions.append(report(stack, token, device_id, "updated"))
    return run_together(actions)


def test_failures_racing_the_threshold_stop_the_rollout_before_any_group_starts(stack):
    """Group 0's ten devices end at once, two failing (over the 10% error threshold,
    and 8 updated is below the 90% success threshold): whatever the order, the rollout
    stops and group 1 never starts nor is notified."""
    bound = new_bound_fleet(stack, 20, per_account=10)
    rid, first, _ = _group_zero_updating(stack, bound)
    results = _ends(stack, bound, first, failures=2)
    assert sorted(results) == [(200, "failed")] * 2 + [(200, "updated")] * 8
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == (
        "stopped_by_failures",
        ["failed", "pending"],
    )
    assert group_counts(rollout, 0) == counts(updated=8, failed=2)
    assert group_counts(rollout, 1) == counts(queued=10)
    scheduler_turn_passed(stack)
    assert group_counts(get_rollout(stack, rid), 1) == counts(queued=10)
    assert firmware_message_devices(stack, bound) == sorted(first)


def test_a_group_start_racing_a_failure_starts_the_next_group_once(stack):
    """Group 0's ten devices end at once, nine updated and one failed (the 90% success
    threshold reached, 10% failures allowed): group 1 starts exactly once and each of its
    devices is notified once, with one message."""
    bound = new_bound_fleet(stack, 20, per_account=10)
    rid, first, later = _group_zero_updating(stack, bound)
    results = _ends(stack, bound, first, failures=1)
    assert sorted(results) == [(200, "failed")] + [(200, "updated")] * 9
    rollout = get_rollout(stack, rid)
    assert (rollout["state"], group_states(rollout)) == ("running", ["succeeded", "running"])
    assert group_counts(rollout, 0) == counts(updated=9, failed=1)
    wait_for_rollout(stack, rid, notified_in(1, 10))
    assert firmware_message_devices(stack, bound) == sorted(first + later)
    for device_id in later:
        (update,) = device_updates(stack, bound.tokens[device_id], device_id)
        assert history(update) == ["queued", "notified"]


def test_two_rollouts_created_at_once_never_share_a_device(stack):
    """Two rollouts of one type's devices created at the same moment: each device is
    queued in one of them and skipped (in_another_rollout) in the other, never in both
    (rollout creations of a type take turns)."""
    admin = stack.admin_token
    devices = fleet(stack, 12)
    first = package(stack, devices.device_type["id"], "4.0.0")
    second = package(stack, devices.device_type["id"], "4.1.0")

    def create(package_id: int) -> Callable[[], dict]:
        def act() -> dict:
            with requests.Session() as session:
                response = session.post(
                    stack.url(ROLLOUTS),
                    json={"package_id": package_id},
                    headers={"authorization": f"Bearer {admin}"},
                    timeout=30,
                )
            assert response.status_code == 200, response.text
            return response.json()

        return act

    created = run_together([create(first["id"]), create(second["id"])])
    assert all(isinstance(rollout, dict) for rollout in created), created
    states: dict[int, list[str]] = {device: [] for device in devices.device_ids}
    for rollout in created:
        response = stack.request(
            "GET", f"{ROLLOUTS}/{rollout['id']}/updates", admin, params={"page_size": 100}
        )
        assert response.status_code == 200, response.text
        for update in response.json():
            states[update["device_id"]].append(
                update["state"] if update["state"] != "skipped" else update["reason"]
            )
    for device, seen in states.items():
        assert sorted(seen) in (
            ["in_another_rollout", "queued"],
            ["in_another_rollout", "notified"],
        ), (
            device,
            seen,
        )
