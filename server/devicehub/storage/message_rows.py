"""Storage of messages written in bulk: the rollout scheduler stores one per device it
notifies, up to thousands per turn, in one statement on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from devicehub.storage.db import execute, is_postgres

_COLUMNS = "(account_id, sender_id, type, payload, state, created_at, expires_at)"


def insert_messages(
    message_type: str,
    messages: Sequence[tuple[int, str]],
    created_at: dt.datetime,
    expires_at: dt.datetime,
) -> list[tuple[int, int, str]]:
    """Stores ``(account id, payload JSON)`` pairs as queued messages of ``message_type``
    from the server (no sender); returns each one's ``(id, account id, payload)``."""
    if not messages:
        return []
    if is_postgres():
        cursor = execute(
            f"INSERT INTO message {_COLUMNS} "
            "SELECT t.account_id, NULL, %s, t.payload, 'queued', %s, %s "
            "FROM unnest(%s::integer[], %s::text[]) AS t (account_id, payload) "
            "RETURNING id, account_id, payload",
            [
                message_type,
                created_at,
                expires_at,
                [account_id for account_id, _ in messages],
                [payload for _, payload in messages],
            ],
        )
        return [tuple(row) for row in cursor.fetchall()]
    stored = []
    for account_id, payload in messages:  # SQLite: one process, no bulk path needed
        cursor = execute(
            f"INSERT INTO message {_COLUMNS} VALUES (%s, NULL, %s, %s, 'queued', %s, %s) "
            "RETURNING id",
            [account_id, message_type, payload, created_at, expires_at],
        )
        stored.append((cursor.fetchone()[0], account_id, payload))
    return stored
