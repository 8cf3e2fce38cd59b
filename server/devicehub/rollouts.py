"""Staged firmware rollouts and each device's update progress.

The rules (README "Firmware"):

- A rollout covers the devices of the package's type (all, some batches, a list), ranked
  and split into groups by cumulative percentage. Its first group starts at once; a later
  group starts when every group before it has reached the success threshold; a started
  group whose failures exceed the error threshold, or that ended below the success
  threshold before the last group, stops the rollout (``stopped_by_failures``). A rollout
  whose updates have all ended is ``completed``.
- An update moves along ``SEQUENCE``; ``failed`` may follow any state after ``queued``.
  A report of the state an update is already in is a retry and changes nothing; any other
  report out of sequence is refused (FailedPrecondition).
- Every change of a rollout's state, or of an update towards an end (``updated``,
  ``failed``), locks the rollout's row first, then the update's: a group start and a
  failure report for it, or two reports for one device, happen one after the other.
  Rollouts of one device type are created one at a time.
- The scheduler (one turn per ``firmware_tick`` in one process at a time) notifies the
  queued devices of started groups at ``notify_per_minute`` across every host, through the
  durable messages, never beyond an account's queue limit.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import semver

from devicehub import catalog, firmware, messaging, metrics, validation
from devicehub.broker import CHANNEL, notify_payload
from devicehub.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from devicehub.pagination import Page, paginate
from devicehub.security import Caller
from devicehub.storage import firmware_rows, message_rows
from devicehub.storage.db import database, is_postgres, notify_many_at_commit
from devicehub.storage.firmware_rows import NOT_ENDED, Target
from devicehub.storage.models import (
    DeviceBatch,
    FirmwarePackage,
    FirmwareRollout,
    FirmwareRolloutGroup,
    FirmwareUpdate,
    FirmwareUpdateEvent,
    utcnow,
)
from devicehub.storage.row_locks import lock_accounts, lock_device_type
from devicehub.v1 import error_pb2 as reasons

log = logging.getLogger(__name__)

MAX_REASON = 500
MAX_GROUPS = 20
MAX_TARGET_DEVICES = 100_000
DEFAULT_SUCCESS_THRESHOLD = 90
DEFAULT_ERROR_THRESHOLD = 10

SEQUENCE = ("queued", "notified", "downloading", "downloaded", "verified", "updating", "updated")
STATES = (*SEQUENCE, "failed", "skipped", "canceled")
ENDED = ("updated", "failed", "skipped", "canceled")
DEVICE_REPORTS = ("downloading", "downloaded", "verified", "updating", "updated", "failed")
"""The states a device reports; ``notified``, ``skipped`` and ``canceled`` are the server's."""

SKIP_ALREADY_ON_VERSION = "already_on_version"
SKIP_BELOW_MIN_VERSION = "below_min_version"
SKIP_UNKNOWN_VERSION = "unknown_version"

PACE_WINDOW = dt.timedelta(minutes=1)
# A turn after a stall (a database restart) notifies at most this many ticks' share at once.
MAX_TURN_SHARE = 5


# --- pure rules ---------------------------------------------------------------------


def skip_reason(installed: str, version: str, min_version: str) -> str:
    """Why a device running ``installed`` is skipped by a rollout of ``version`` (whose
    package needs at least ``min_version``), or ``""`` if it is not."""
    parsed = _semver_or_none(installed)
    if installed == version or (parsed is not None and parsed.compare(version) == 0):
        return SKIP_ALREADY_ON_VERSION
    if not min_version:
        return ""
    if parsed is None:
        return SKIP_UNKNOWN_VERSION
    return SKIP_BELOW_MIN_VERSION if parsed.compare(min_version) < 0 else ""


def _semver_or_none(text: str) -> semver.Version | None:
    try:
        return semver.Version.parse(text.strip())
    except (ValueError, TypeError):
        return None


def check_transition(current: str, new: str) -> None:
    """FailedPrecondition unless an update in ``current`` may become ``new`` (a device's
    report; the same state again is a retry, handled before)."""
    if current in ENDED:
        raise FailedPrecondition(
            f"The update has ended ({current}); it cannot become {new}",
            reasons.ERROR_REASON_FIRMWARE_TRANSITION_NOT_ALLOWED,
        )
    if current == "queued":
        raise FailedPrecondition(
            "The update is queued: the device has not been notified yet "
            "(CheckFirmwareUpdate tells it once its group has started)",
            reasons.ERROR_REASON_FIRMWARE_TRANSITION_NOT_ALLOWED,
        )
    following = SEQUENCE[SEQUENCE.index(current) + 1]
    if new not in (following, "failed"):
        raise FailedPrecondition(
            f"An update in state {current} cannot become {new}; next is {following} or failed",
            reasons.ERROR_REASON_FIRMWARE_TRANSITION_NOT_ALLOWED,
        )


def group_outcome(counts: dict[str, int], success_threshold: int, error_threshold: int) -> str:
    """Where a started group stands, from the number of its updates in each state:
    ``failed`` (over the error threshold), ``succeeded`` (at the success threshold),
    ``ended`` (every update ended, below the success threshold but within the error
    threshold: it can neither succeed nor fail any more) or ``running``. Skipped and
    canceled updates do not count."""
    eligible = sum(counts.values()) - counts.get("skipped", 0) - counts.get("canceled", 0)
    if eligible <= 0:
        return "succeeded"
    if counts.get("failed", 0) * 100 > error_threshold * eligible:
        return "failed"
    if counts.get("updated", 0) * 100 >= success_threshold * eligible:
        return "succeeded"
    if not any(counts.get(state, 0) for state in NOT_ENDED):
        return "ended"
    return "running"


def validate_group_percents(percents: Sequence[int]) -> list[int]:
    if not percents:
        return [100]
    values = list(percents)
    if len(values) > MAX_GROUPS:
        raise InvalidArgument(f"group_percents takes at most {MAX_GROUPS} groups")
    if any(not 1 <= p <= 100 for p in values):
        raise InvalidArgument("each of group_percents must be 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise InvalidArgument(
            "group_percents must increase (they are cumulative), e.g. [1, 10, 100]"
        )
    if values[-1] != 100:
        raise InvalidArgument(
            "the last of group_percents must be 100, so that every device is in a group"
        )
    return values


@dataclass
class Pace:
    """The notification pace of one scheduler: each turn may notify the pace's share of the
    time that really passed since the last (a credit, so that a share below one device per
    turn still adds up), at most ``MAX_TURN_SHARE`` ticks' worth after a stall."""

    per_minute: int
    tick: float
    credit: float = 0.0

    def share(self, elapsed: float) -> int:
        ceiling = self.per_minute * self.tick * MAX_TURN_SHARE / 60 + 1
        self.credit = min(self.credit + self.per_minute * elapsed / 60, ceiling)
        return int(self.credit)

    def spent(self, notified: int) -> None:
        self.credit -= notified


def notification_budget(share: int, per_minute: int, sent_last_minute: int) -> int:
    """How many devices one turn may notify: its ``share`` of the pace, and never more
    than the last minute leaves of the pace (across every host)."""
    return max(0, min(share, per_minute - sent_last_minute))


# --- rollouts -------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupView:
    group: FirmwareRolloutGroup
    counts: dict[str, int]


@dataclass(frozen=True)
class RolloutView:
    """A rollout with its package's version and its updates counted per group and state."""

    rollout: FirmwareRollout
    version: str
    groups: list[GroupView]

    @property
    def target(self) -> dict[str, list[int]]:
        return json.loads(self.rollout.target)

    @property
    def group_percents(self) -> list[int]:
        return json.loads(self.rollout.group_percents)

    @property
    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for group in self.groups:
            for state, count in group.counts.items():
                total[state] = total.get(state, 0) + count
        return total


def _rollout(rollout_id: int, *, lock: bool = False) -> FirmwareRollout:
    query = FirmwareRollout.select().where(FirmwareRollout.id == rollout_id)
    if lock and is_postgres():
        query = query.for_update()
    rollout = query.first()
    if rollout is None:
        raise NotFound(
            "Firmware rollout not found", reasons.ERROR_REASON_FIRMWARE_ROLLOUT_NOT_FOUND
        )
    return rollout


def _view(rollout: FirmwareRollout) -> RolloutView:
    counts = firmware_rows.state_counts(rollout.id)
    groups = (
        FirmwareRolloutGroup.select()
        .where(FirmwareRolloutGroup.rollout == rollout.id)
        .order_by(FirmwareRolloutGroup.position)
    )
    version = (
        FirmwarePackage.select(FirmwarePackage.version)
        .where(FirmwarePackage.id == rollout.package_id)
        .scalar()
    )
    return RolloutView(
        rollout,
        version or "",
        [GroupView(group, counts.get(group.position, {})) for group in groups],
    )


def _threshold(name: str, value: int | None, default: int, lowest: int) -> int:
    if value is None:
        return default
    if not lowest <= value <= 100:
        raise InvalidArgument(f"{name} must be {lowest} to 100")
    return value


def create_rollout(
    caller: Caller,
    package_id: int,
    batch_ids: Sequence[int] = (),
    device_ids: Sequence[int] = (),
    group_percents: Sequence[int] = (),
    success_threshold: int | None = None,
    error_threshold: int | None = None,
) -> RolloutView:
    """Creates a rollout (set-based, whatever the number of devices) and starts it."""
    catalog.require_admin(caller)
    percents = validate_group_percents(group_percents)
    success = _threshold(
        "success_threshold_percent", success_threshold, DEFAULT_SUCCESS_THRESHOLD, 1
    )
    errors = _threshold("error_threshold_percent", error_threshold, DEFAULT_ERROR_THRESHOLD, 0)
    batch_ids = sorted(set(batch_ids))
    device_ids = sorted(set(device_ids))
    if len(device_ids) > MAX_TARGET_DEVICES:
        raise InvalidArgument(f"target.device_ids takes at most {MAX_TARGET_DEVICES} devices")
    if any(i <= 0 for i in (*batch_ids, *device_ids)):
        raise InvalidArgument("target ids must be positive")
    with database.atomic():
        package = firmware.find_package(validation.positive_id("package_id", package_id))
        lock_device_type(package.device_type_id)  # one rollout of a type created at a time
        target = Target(package.device_type_id, batch_ids, device_ids)
        _check_target(target)
        now = utcnow()
        rollout = FirmwareRollout.create(
            package=package.id,
            state="running",
            target=json.dumps({"batch_ids": batch_ids, "device_ids": device_ids}),
            group_percents=json.dumps(percents),
            success_threshold=success,
            error_threshold=errors,
            device_count=0,
            created_at=now,
            updated_at=now,
            created_by=caller.account_id,
        )
        skips: dict[str, list[str]] = {}
        for installed in firmware_rows.target_versions(target):
            reason = skip_reason(installed, package.version, package.min_version)
            if reason:
                skips.setdefault(reason, []).append(installed)
        count = firmware_rows.insert_updates(rollout.id, target, percents, skips, now)
        firmware_rows.insert_first_events(rollout.id, now)
        firmware_rows.insert_groups(rollout.id, percents)
        FirmwareRollout.update(device_count=count).where(FirmwareRollout.id == rollout.id).execute()
        _advance(_rollout(rollout.id, lock=True), now)
        return _view(_rollout(rollout.id))


def _check_target(target: Target) -> None:
    if target.batch_ids:
        batches = list(DeviceBatch.select().where(DeviceBatch.id.in_(list(target.batch_ids))))
        missing = sorted(set(target.batch_ids) - {batch.id for batch in batches})
        if missing:
            raise NotFound(
                f"Device batch not found: {missing[0]}", reasons.ERROR_REASON_DEVICE_BATCH_NOT_FOUND
            )
        other = [batch.id for batch in batches if batch.device_type_id != target.device_type_id]
        if other:
            raise InvalidArgument(
                f"batch {other[0]} belongs to another device type than the package",
                reasons.ERROR_REASON_BATCH_TYPE_MISMATCH,
            )
    if target.device_ids:
        missing = firmware_rows.missing_devices(target.device_type_id, target.device_ids)
        if missing:
            raise InvalidArgument(
                f"device {missing[0]} is no device of the package's type "
                f"({len(missing)} such device{'s' if len(missing) > 1 else ''})"
            )


def _advance(rollout: FirmwareRollout, now: dt.datetime) -> None:
    """Moves a running rollout (its row locked) as far as its groups' counts allow: groups
    that reached the success threshold let the next one start, a group over the error
    threshold stops it, and a rollout whose updates have all ended is completed."""
    if rollout.state != "running":
        return
    groups = list(
        FirmwareRolloutGroup.select()
        .where(FirmwareRolloutGroup.rollout == rollout.id)
        .order_by(FirmwareRolloutGroup.position)
    )
    state = "running"
    for group in groups:
        if group.state == "pending":
            group.state, group.started_at = "running", now
            group.save()
        outcome = group_outcome(
            _threshold_counts(group), rollout.success_threshold, rollout.error_threshold
        )
        # A group before the last that ended below the success threshold can never let
        # the next one start: the rollout stops, as over the error threshold.
        if outcome == "failed" or (outcome == "ended" and group is not groups[-1]):
            group.state = "failed"
            group.save()
            state = "stopped_by_failures"
            break
        if group.state == "succeeded":
            continue
        if outcome == "succeeded":
            group.state = "succeeded"
            group.save()
            continue
        break  # still running (or the last group, ended): the groups after it wait
    # Every update ended: completed (the last group too may have ended below the success
    # threshold, within the error threshold; its counts say so).
    if state == "running" and not firmware_rows.has_unended_updates(rollout.id):
        state = "completed"
    if state != rollout.state:
        FirmwareRollout.update(state=state, updated_at=now).where(
            FirmwareRollout.id == rollout.id
        ).execute()
        metrics.FIRMWARE_ROLLOUTS_ENDED.labels(state).inc()
        log.info("firmware rollout %d is %s", rollout.id, state)


def _threshold_counts(group: FirmwareRolloutGroup) -> dict[str, int]:
    """A group's counts as ``group_outcome`` judges them, from the group's own counters
    (the updates not ended, whatever their state, count as ``queued``)."""
    counted = {
        "updated": group.updated_count,
        "failed": group.failed_count,
        "skipped": group.skipped_count,
        "canceled": group.canceled_count,
    }
    return {**counted, "queued": max(0, group.device_count - sum(counted.values()))}


def list_rollouts(
    caller: Caller, page_size: int = 0, page_token: str = ""
) -> tuple[list[RolloutView], str]:
    catalog.require_admin(caller)
    page = paginate(
        FirmwareRollout.select(),
        FirmwareRollout,
        firmware.page_size_or_default(page_size),
        page_token,
    )
    return [_view(rollout) for rollout in page.items], page.next_page_token


def get_rollout(caller: Caller, rollout_id: int) -> RolloutView:
    catalog.require_admin(caller)
    return _view(_rollout(rollout_id))


_ROLLOUT_CHANGES = {
    # action: (states it applies to, state it leaves)
    "pause": (("running",), "paused"),
    "resume": (("paused",), "running"),
    "cancel": (("running", "paused", "stopped_by_failures"), "canceled"),
}


def change_rollout(caller: Caller, rollout_id: int, action: str) -> RolloutView:
    """Pauses, resumes or cancels a rollout."""
    catalog.require_admin(caller)
    applies_to, new_state = _ROLLOUT_CHANGES[action]
    with database.atomic():
        rollout = _rollout(rollout_id, lock=True)
        if rollout.state not in applies_to:
            raise Conflict(
                f"A rollout that is {rollout.state} cannot {action}; "
                f"only one that is {' or '.join(applies_to)}",
                reasons.ERROR_REASON_FIRMWARE_ROLLOUT_STATE,
            )
        now = utcnow()
        FirmwareRollout.update(state=new_state, updated_at=now).where(
            FirmwareRollout.id == rollout_id
        ).execute()
        if new_state == "canceled":
            firmware_rows.end_updates(rollout_id, "canceled", "rollout canceled", now)
            firmware_rows.recount_groups(rollout_id)
            metrics.FIRMWARE_ROLLOUTS_ENDED.labels("canceled").inc()
        elif new_state == "running":
            rollout.state = "running"
            firmware_rows.recount_groups(rollout_id)
            _advance(rollout, now)
        log.info("firmware rollout %d: %s by account %d", rollout_id, action, caller.account_id)
        return _view(_rollout(rollout_id))


def list_rollout_updates(
    caller: Caller,
    rollout_id: int,
    group: int | None = None,
    state: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> Page[FirmwareUpdate]:
    catalog.require_admin(caller)
    _rollout(rollout_id)
    query = FirmwareUpdate.select().where(FirmwareUpdate.rollout == rollout_id)
    if group is not None:
        query = query.where(FirmwareUpdate.group_position == group)
    if state:
        if state not in STATES:
            raise InvalidArgument(f"state must be one of {', '.join(STATES)}")
        query = query.where(FirmwareUpdate.state == state)
    return paginate(query, FirmwareUpdate, firmware.page_size_or_default(page_size), page_token)


# --- a device's updates ----------------------------------------------------------------


@dataclass(frozen=True)
class UpdateView:
    update: FirmwareUpdate
    package_id: int
    version: str
    history: list[FirmwareUpdateEvent]


def _update_views(updates: list[FirmwareUpdate], *, history: bool) -> list[UpdateView]:
    if not updates:
        return []
    rows: Any = (
        FirmwareRollout.select(FirmwareRollout.id, FirmwareRollout.package, FirmwarePackage.version)
        .join(FirmwarePackage)
        .where(FirmwareRollout.id.in_({u.rollout_id for u in updates}))
        .tuples()
    )
    rollouts = {rollout_id: (package_id, version) for rollout_id, package_id, version in rows}
    events: dict[int, list[FirmwareUpdateEvent]] = {}
    if history:
        for event in (
            FirmwareUpdateEvent.select()
            .where(FirmwareUpdateEvent.firmware_update.in_([u.id for u in updates]))
            .order_by(FirmwareUpdateEvent.id)
        ):
            events.setdefault(event.update_id, []).append(event)
    return [
        UpdateView(update, *rollouts[update.rollout_id], events.get(update.id, []))
        for update in updates
    ]


def rollout_update_views(updates: list[FirmwareUpdate]) -> list[UpdateView]:
    return _update_views(updates, history=False)


def list_device_updates(
    caller: Caller, device_id: int, page_size: int = 0, page_token: str = ""
) -> tuple[list[UpdateView], str]:
    catalog.get_device(device_id, caller)
    page = paginate(
        FirmwareUpdate.select().where(FirmwareUpdate.device == device_id),
        FirmwareUpdate,
        firmware.page_size_or_default(page_size),
        page_token,
    )
    return _update_views(page.items, history=True), page.next_page_token


def _current_update(device_id: int, update_id: int) -> FirmwareUpdate:
    query = FirmwareUpdate.select().where(FirmwareUpdate.device == device_id)
    if update_id:
        query = query.where(FirmwareUpdate.id == update_id)
    ordered = query.order_by(FirmwareUpdate.id.desc())
    # The current update is the newest one the device takes part in: a later rollout may
    # have skipped it (in_another_rollout) while it carries out an earlier one's.
    update = None if update_id else ordered.where(FirmwareUpdate.state != "skipped").first()
    update = update or ordered.first()
    if update is None:
        raise NotFound(
            "The device has no such firmware update"
            if update_id
            else "The device has no firmware update",
            reasons.ERROR_REASON_FIRMWARE_UPDATE_NOT_FOUND,
        )
    return update


def _lock_update(update_id: int) -> FirmwareUpdate:
    query = FirmwareUpdate.select().where(FirmwareUpdate.id == update_id)
    if is_postgres():
        query = query.for_update()
    return query.get()


def _enter(update: FirmwareUpdate, state: str, reason: str, now: dt.datetime) -> None:
    FirmwareUpdate.update(state=state, reason=reason, updated_at=now).where(
        FirmwareUpdate.id == update.id
    ).execute()
    FirmwareUpdateEvent.create(
        firmware_update=update.id, state=state, reason=reason, created_at=now
    )
    update.state, update.reason, update.updated_at = state, reason, now


@dataclass(frozen=True)
class Check:
    """What CheckFirmwareUpdate answers: the update to carry out and its package, if any."""

    update: UpdateView | None
    package: FirmwarePackage | None


def check_update(caller: Caller, device_id: int) -> Check:
    """The device's current update if it should be carried out now: not ended, in a
    rollout that is running (or, once notified, paused or stopped: what a device has begun
    it may finish), in a group that has started. A queued one becomes notified here."""
    with database.atomic():
        catalog.get_device(device_id, caller)
        update = (
            FirmwareUpdate.select()
            .where((FirmwareUpdate.device == device_id) & FirmwareUpdate.state.in_(NOT_ENDED))
            .order_by(FirmwareUpdate.id.desc())
            .first()
        )
        if update is None:
            return Check(None, None)
        rollout = _rollout(update.rollout_id)
        group = FirmwareRolloutGroup.get(
            (FirmwareRolloutGroup.rollout == rollout.id)
            & (FirmwareRolloutGroup.position == update.group_position)
        )
        if update.state == "queued":
            if rollout.state != "running" or group.state == "pending":
                return Check(None, None)
            update = _lock_update(update.id)
            if update.state in ENDED:  # canceled meanwhile
                return Check(None, None)
            if update.state == "queued":
                _enter(update, "notified", "checked by the device", utcnow())
        package = firmware.find_package(rollout.package_id)
        return Check(_update_views([update], history=True)[0], package)


def report_progress(
    caller: Caller, device_id: int, state: str, reason: str = "", update_id: int = 0
) -> UpdateView:
    """A device's report of its progress on its current update (or on ``update_id``)."""
    if state not in DEVICE_REPORTS:
        raise InvalidArgument(
            f"state must be one of {', '.join(DEVICE_REPORTS)}; got {state[:32]!r}"
        )
    reason = validation.text("reason", reason, max_length=MAX_REASON, required=state == "failed")
    with database.atomic():
        catalog.get_device(device_id, caller)
        update = _current_update(device_id, update_id)
        ends = state in ("updated", "failed")
        # Lock order: the rollout, then the update (as the scheduler and cancel take them).
        rollout = _rollout(update.rollout_id, lock=ends)
        update = _lock_update(update.id)
        if update.state == state:
            return _update_views([update], history=True)[0]  # a retried report
        check_transition(update.state, state)
        now = utcnow()
        _enter(update, state, reason, now)
        metrics.FIRMWARE_UPDATE_REPORTS.labels(state).inc()
        if state == "updated":
            package = firmware.find_package(rollout.package_id)
            firmware.set_installed(device_id, package.id, package.version)
        if ends:  # O(1): the group's counters, not a count of its updates
            firmware_rows.count_ended(rollout.id, update.group_position, state)
            _advance(rollout, now)
        return _update_views([update], history=True)[0]


# --- the scheduler --------------------------------------------------------------------


@dataclass(frozen=True)
class NotifyPolicy:
    per_minute: int
    queue_limit: int
    message_ttl: dt.timedelta


MAX_PAGES_PER_GROUP = 4
"""Pages of due updates one turn reads per group, so that devices whose accounts' queues
are full cannot hold up the rest of the group for ever."""


def scheduler_turn(policy: NotifyPolicy, share: int) -> int:
    """One turn of the rollout scheduler: advances every running rollout, then notifies
    up to ``share`` of the devices that are due (``Pace.share``), never more than the pace
    allows in the last minute, oldest rollout and group first; returns how many were
    notified. On PostgreSQL one process at a time takes a turn (the others skip it)."""
    with database.atomic():
        if not firmware_rows.take_scheduler_turn():
            return 0
        now = utcnow()
        for rollout in FirmwareRollout.select().where(FirmwareRollout.state == "running"):
            locked = _rollout(rollout.id, lock=True)
            firmware_rows.recount_groups(rollout.id)  # exact again, once per turn
            _advance(locked, now)
        budget = notification_budget(
            share, policy.per_minute, firmware_rows.notified_since(now - PACE_WINDOW)
        )
        notified = 0
        started_groups = (
            FirmwareRolloutGroup.select(FirmwareRolloutGroup, FirmwareRollout)
            .join(FirmwareRollout)
            .where(
                (FirmwareRollout.state == "running")
                & FirmwareRolloutGroup.state.in_(("running", "succeeded"))
            )
            .order_by(FirmwareRollout.id, FirmwareRolloutGroup.position)
        )
        for group in started_groups if budget else ():
            package = firmware.find_package(group.rollout.package_id)
            after_id = 0
            for _ in range(MAX_PAGES_PER_GROUP):
                if notified >= budget:
                    break
                due = firmware_rows.due_updates(
                    group.rollout_id, group.position, after_id, budget - notified
                )
                if not due:
                    break
                notified += _notify(due, package, policy, now)
                after_id = due[-1]["update_id"]
        metrics.FIRMWARE_NOTIFICATIONS.inc(notified)
        return notified


def _notify(
    due: list[dict[str, Any]], package: FirmwarePackage, policy: NotifyPolicy, now: dt.datetime
) -> int:
    """Notifies the due updates whose account has room in its message queue (the others
    wait for a later turn); returns how many."""
    accounts = sorted({row["account_id"] for row in due if row["account_id"] is not None})
    lock_accounts(accounts)  # in id order, as every other writer of a queue
    pending = firmware_rows.pending_messages(accounts, now)
    room = {account_id: policy.queue_limit - pending.get(account_id, 0) for account_id in accounts}
    notified: list[int] = []
    notes: list[str] = []
    messages: list[tuple[int, str]] = []
    for row in due:
        account_id = row["account_id"]
        if account_id is None:
            notified.append(row["update_id"])
            notes.append("device not bound: no message sent")
            continue
        if room[account_id] <= 0:
            continue  # the account's queue is full: a later turn
        room[account_id] -= 1
        messages.append((account_id, json.dumps(_firmware_payload(row["device_id"], package))))
        notified.append(row["update_id"])
        notes.append("")
    _send(messages, now, policy.message_ttl)
    firmware_rows.mark_notified(notified, notes, now)
    return len(notified)


def _firmware_payload(device_id: int, package: FirmwarePackage) -> dict[str, Any]:
    """The ``firmware`` message for one device (MessagePayload's firmware fields)."""
    return {
        "device_id": device_id,
        "package_id": package.id,
        "version": package.version,
        "size_bytes": package.size_bytes,
        "sha256": package.sha256,
        "download_path": firmware.download_path(package.id),
    }


def _send(messages: list[tuple[int, str]], now: dt.datetime, ttl: dt.timedelta) -> None:
    """Stores the messages (one statement) and announces them to every server process at
    commit (one NOTIFY statement), as ``messaging`` does for one."""
    stored = message_rows.insert_messages("firmware", messages, now, now + ttl)
    notify_many_at_commit(
        CHANNEL,
        [
            notify_payload(
                messaging.event(
                    message_id, account_id, "firmware", json.loads(payload), now, now + ttl
                )
            )
            for message_id, account_id, payload in stored
        ],
    )
    metrics.MESSAGES.labels("queued").inc(len(stored))
