"""Storage of firmware rollouts: the set-based statements a rollout over 100,000 devices needs.

Creating a rollout is three ``INSERT ... SELECT`` statements, whatever the number of
devices: the updates (each device ranked, given its group and, where the rules say so, a
skip reason), their first history events, and the groups with their sizes. The counts
per group and state are one ``GROUP BY`` over the index on (rollout, group, state).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devicehub.storage.db import array_literal, execute, execute_many, is_postgres, named_rows

NOT_ENDED = ("queued", "notified", "downloading", "downloaded", "verified", "updating")
"""States of an update that has not ended."""

# Spreads a rollout's groups over the devices' ids (Knuth's multiplicative hash, varied
# by the rollout id), so that its first percent is not simply the oldest batch. Exact in
# both databases' 64-bit integers for any int32 id.
_SPREAD = "(((d.id + %s) * 2654435761) %% 4294967296)"


@dataclass(frozen=True)
class Target:
    """The devices of one type a rollout covers: all of them, or those of ``batch_ids``
    and those listed in ``device_ids``."""

    device_type_id: int
    batch_ids: Sequence[int]
    device_ids: Sequence[int]


def _id_set(values: Sequence[int]) -> tuple[str, list[object]]:
    """An ``IN`` operand holding ``values`` as one parameter (a device list may have
    100,000 ids: more than SQLite binds as separate parameters)."""
    if is_postgres():
        return "(SELECT unnest(%s::integer[]))", [array_literal(values)]
    return "(SELECT value FROM json_each(%s))", [json.dumps(list(values))]


def _text_set(values: Sequence[str]) -> tuple[str, list[object]]:
    if not values:
        return "(NULL)", []  # matches nothing (x IN (NULL) is never true)
    return "(" + ", ".join("%s" for _ in values) + ")", list(values)


def _target_condition(target: Target) -> tuple[str, list[object]]:
    condition = "d.device_type_id = %s"
    params: list[object] = [target.device_type_id]
    parts: list[str] = []
    if target.batch_ids:
        operand, more = _id_set(target.batch_ids)
        parts.append(f"d.batch_id IN {operand}")
        params += more
    if target.device_ids:
        operand, more = _id_set(target.device_ids)
        parts.append(f"d.id IN {operand}")
        params += more
    if parts:
        condition += " AND (" + " OR ".join(parts) + ")"
    return condition, params


def target_versions(target: Target) -> list[str]:
    """The distinct installed versions among the targeted devices (a handful in practice:
    the version rules are decided per version, in Python, not per device)."""
    condition, params = _target_condition(target)
    cursor = execute(f"SELECT DISTINCT d.firmware_version FROM device d WHERE {condition}", params)
    return [row[0] for row in cursor.fetchall()]


def missing_devices(device_type_id: int, device_ids: Sequence[int]) -> list[int]:
    """Those of ``device_ids`` that are no device of ``device_type_id``, in id order."""
    operand, params = _id_set(device_ids)
    cursor = execute(
        f"SELECT d.id FROM device d WHERE d.id IN {operand} AND d.device_type_id = %s",
        [*params, device_type_id],
    )
    found = {row[0] for row in cursor.fetchall()}
    return sorted(set(device_ids) - found)


def insert_updates(
    rollout_id: int,
    target: Target,
    group_percents: Sequence[int],
    skips: Mapping[str, Sequence[str]],
    now: dt.datetime,
) -> int:
    """Creates one update per targeted device, in one statement; returns how many.

    Devices are ranked by ``_SPREAD``; the first ``ceil(total * p / 100)`` of the ranking
    are in the groups up to the one of cumulative percentage ``p``. A device whose
    installed version is in ``skips[reason]``, or that has an update not ended in another
    rollout, is ``skipped`` with that reason; the others are ``queued``.
    """
    condition, target_params = _target_condition(target)
    group_cases = " ".join(
        f"WHEN ranked.rn <= (ranked.total * {int(p)} + 99) / 100 THEN {i}"
        for i, p in enumerate(group_percents)
    )
    reason_cases: list[str] = []
    reason_params: list[object] = []
    for reason, versions in skips.items():
        operand, params = _text_set(versions)
        reason_cases.append(f"WHEN ranked.firmware_version IN {operand} THEN %s")
        reason_params += [*params, reason]
    not_ended, not_ended_params = _text_set(NOT_ENDED)
    # Uncorrelated, so that it is read once, before the first row is inserted: a per-row
    # lookup could be planned as a scan of the table this statement grows (quadratic: 165 s
    # for 100,000 devices, against 4-5 s now, bench/firmware_rollout.py).
    reason_cases.append(
        "WHEN ranked.id IN (SELECT other.device_id FROM firmware_update other "
        f"WHERE other.rollout_id <> %s AND other.state IN {not_ended}) THEN 'in_another_rollout'"
    )
    reason_params += [rollout_id, *not_ended_params]
    cursor = execute(
        "INSERT INTO firmware_update "
        "(rollout_id, device_id, group_position, state, reason, created_at, updated_at) "
        "SELECT %s, flagged.id, flagged.grp, "
        "CASE WHEN flagged.reason = '' THEN 'queued' ELSE 'skipped' END, flagged.reason, %s, %s "
        "FROM (SELECT ranked.id, "
        f"CASE {group_cases} ELSE {len(group_percents) - 1} END AS grp, "
        f"CASE {' '.join(reason_cases)} ELSE '' END AS reason "
        "FROM (SELECT d.id, d.firmware_version, "
        f"row_number() OVER (ORDER BY {_SPREAD}, d.id) AS rn, count(*) OVER () AS total "
        f"FROM device d WHERE {condition}) ranked) flagged",
        [rollout_id, now, now, *reason_params, rollout_id, *target_params],
    )
    return cursor.rowcount


def insert_first_events(rollout_id: int, now: dt.datetime) -> None:
    """The first history event of every update of the rollout: its state as created."""
    execute(
        "INSERT INTO firmware_update_event (update_id, state, reason, created_at) "
        "SELECT u.id, u.state, u.reason, %s FROM firmware_update u WHERE u.rollout_id = %s",
        [now, rollout_id],
    )


def insert_groups(rollout_id: int, group_percents: Sequence[int]) -> None:
    """The rollout's groups (all ``pending``), each with its number of devices and the
    counts its thresholds are judged by."""
    for position, percent in enumerate(group_percents):
        execute(
            "INSERT INTO firmware_rollout_group "
            "(rollout_id, position, percent, device_count, state, started_at) "
            "VALUES (%s, %s, %s, 0, 'pending', NULL)",
            [rollout_id, position, percent],
        )
    recount_groups(rollout_id)


def _count_of(states: str) -> str:
    return (
        "(SELECT count(*) FROM firmware_update u WHERE u.rollout_id = g.rollout_id "
        f"AND u.group_position = g.position{states})"
    )


def recount_groups(rollout_id: int) -> None:
    """Sets every group's counts from its updates (one index range count each): what the
    reports keep current, made exact again (a deleted device takes its update along)."""
    counts = {
        "device_count": "",
        "skipped_count": " AND u.state = 'skipped'",
        "canceled_count": " AND u.state = 'canceled'",
        "updated_count": " AND u.state = 'updated'",
        "failed_count": " AND u.state = 'failed'",
    }
    assignments = ", ".join(f"{column} = {_count_of(states)}" for column, states in counts.items())
    execute(
        f"UPDATE firmware_rollout_group AS g SET {assignments} WHERE g.rollout_id = %s",
        [rollout_id],
    )


def count_ended(rollout_id: int, position: int, state: str) -> None:
    """Counts one update of the group that ended ``updated`` or ``failed``."""
    column = {"updated": "updated_count", "failed": "failed_count"}[state]
    execute(
        f"UPDATE firmware_rollout_group SET {column} = {column} + 1 "
        "WHERE rollout_id = %s AND position = %s",
        [rollout_id, position],
    )


def state_counts(rollout_id: int) -> dict[int, dict[str, int]]:
    """Per group position: the number of updates in each state (states with none left
    out), for the progress view."""
    counts: dict[int, dict[str, int]] = {}
    for position, state, count in execute(
        "SELECT group_position, state, count(*) FROM firmware_update WHERE rollout_id = %s "
        "GROUP BY group_position, state",
        [rollout_id],
    ):
        counts.setdefault(position, {})[state] = count
    return counts


def has_unended_updates(rollout_id: int) -> bool:
    not_ended, params = _text_set(NOT_ENDED)
    row = execute(
        f"SELECT 1 FROM firmware_update WHERE rollout_id = %s AND state IN {not_ended} LIMIT 1",
        [rollout_id, *params],
    ).fetchone()
    return row is not None


def end_updates(rollout_id: int, state: str, reason: str, now: dt.datetime) -> int:
    """Moves every update of the rollout that has not ended to ``state`` (with history)."""
    not_ended, params = _text_set(NOT_ENDED)
    execute(
        "INSERT INTO firmware_update_event (update_id, state, reason, created_at) "
        f"SELECT id, %s, %s, %s FROM firmware_update WHERE rollout_id = %s "
        f"AND state IN {not_ended}",
        [state, reason, now, rollout_id, *params],
    )
    cursor = execute(
        "UPDATE firmware_update SET state = %s, reason = %s, updated_at = %s "
        f"WHERE rollout_id = %s AND state IN {not_ended}",
        [state, reason, now, rollout_id, *params],
    )
    return cursor.rowcount


def notified_since(since: dt.datetime) -> int:
    """How many updates were notified after ``since`` (the pace's window)."""
    row = execute("SELECT count(*) FROM firmware_update WHERE notified_at > %s", [since]).fetchone()
    return int(row[0])


def take_scheduler_turn() -> bool:
    """Whether this transaction runs the scheduler's turn: on PostgreSQL one process at a
    time across every host (a transaction-level advisory lock, released at its end)."""
    if not is_postgres():
        return True  # SQLite: transactions already run one at a time
    row = execute("SELECT pg_try_advisory_xact_lock(%s)", [_SCHEDULER_LOCK_KEY]).fetchone()
    return bool(row[0])


_SCHEDULER_LOCK_KEY = 0x6677726F6C6C  # "fwroll"


def due_updates(
    rollout_id: int, group_position: int, after_id: int, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` queued updates of one group after ``after_id``, oldest first, each
    with the account its device is bound to (``None``: unbound): read along the index on
    (rollout, group, state, id), so a turn costs the same whatever the rollout's size.
    Locked on PostgreSQL (skipping rows another transaction holds)."""
    lock = " FOR UPDATE OF u SKIP LOCKED" if is_postgres() else ""
    cursor = execute(
        "SELECT u.id AS update_id, u.device_id, b.account_id FROM firmware_update u "
        "LEFT JOIN binding b ON b.device_id = u.device_id "
        "WHERE u.rollout_id = %s AND u.group_position = %s AND u.state = 'queued' "
        f"AND u.id > %s ORDER BY u.id LIMIT %s{lock}",
        [rollout_id, group_position, after_id, limit],
    )
    return named_rows(cursor)


def pending_messages(account_ids: Sequence[int], now: dt.datetime) -> dict[int, int]:
    """Each account's number of pending, unexpired messages (accounts with none left out)."""
    if not account_ids:
        return {}
    operand, params = _id_set(account_ids)
    cursor = execute(
        f"SELECT account_id, count(*) FROM message WHERE account_id IN {operand} "
        "AND state IN ('queued', 'delivered') AND expires_at > %s GROUP BY account_id",
        [*params, now],
    )
    return dict(cursor.fetchall())


def mark_notified(update_ids: Sequence[int], reasons: Sequence[str], now: dt.datetime) -> None:
    """Moves the updates to ``notified`` (each with the reason of its history event)."""
    if not update_ids:
        return
    operand, params = _id_set(update_ids)
    execute(
        "UPDATE firmware_update SET state = 'notified', notified_at = %s, updated_at = %s "
        f"WHERE id IN {operand}",
        [now, now, *params],
    )
    if is_postgres():  # one statement (psycopg2's executemany is a statement per row)
        execute(
            "INSERT INTO firmware_update_event (update_id, state, reason, created_at) "
            "SELECT t.update_id, 'notified', t.reason, %s "
            "FROM unnest(%s::integer[], %s::text[]) AS t (update_id, reason)",
            [now, array_literal(update_ids), list(reasons)],
        )
        return
    execute_many(
        "INSERT INTO firmware_update_event (update_id, state, reason, created_at) "
        "VALUES (%s, 'notified', %s, %s)",
        [(update_id, reason, now) for update_id, reason in zip(update_ids, reasons, strict=True)],
    )
