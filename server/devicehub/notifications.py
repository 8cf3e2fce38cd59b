"""Impedance-error notifications: who gets one, when one is suppressed, what is recorded.

Every call records an ``alimtalk_attempt`` row (who, when, outcome, provider response).
An account that was sent an alert within the suppression window is not sent another;
the call still succeeds, with the outcome ``suppressed``. A ``pending`` attempt (being
sent right now) counts too, so two simultaneous calls send one message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from devicehub import binding
from devicehub.errors import Conflict, PermissionDenied, Unauthenticated
from devicehub.integrations.alimtalk import AlimtalkClient
from devicehub.security import Caller
from devicehub.storage.db import database, run_db
from devicehub.storage.models import Account, AlimtalkAttempt, utcnow
from devicehub.v1 import error_pb2 as reasons

SENT = "sent"
SUPPRESSED = "suppressed"
PENDING = "pending"
FAILED = "failed"
NOT_CONFIGURED = "not_configured"
NO_PHONE = "no_phone"
# A pending attempt older than this was cut off (a crash mid-send) and no longer counts.
PENDING_EXPIRY = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class AlertResult:
    outcome: str
    provider_request_id: str


def _send_failed() -> Conflict:
    return Conflict("Alimtalk send failed", reasons.ERROR_REASON_ALIMTALK_SEND_FAILED)


def _begin(caller: Caller, window: dt.timedelta) -> tuple[AlimtalkAttempt, AlimtalkAttempt | None]:
    """Records the attempt; returns it and the earlier one that suppresses it, if any."""
    with database.atomic():
        binding.lock_account(caller.account_id)
        account = Account.get_or_none(Account.id == caller.account_id)
        if account is None:
            raise Unauthenticated("User is None", reasons.ERROR_REASON_ACCOUNT_NOT_FOUND)
        now = utcnow()
        if not account.phone:
            attempt = AlimtalkAttempt.create(account=account, outcome=NO_PHONE, finished_at=now)
            return attempt, None
        recent = (
            AlimtalkAttempt.select()
            .where(
                (AlimtalkAttempt.account == account)
                & (
                    (
                        (AlimtalkAttempt.outcome == SENT)
                        & (AlimtalkAttempt.created_at > now - window)
                    )
                    | (
                        (AlimtalkAttempt.outcome == PENDING)
                        & (AlimtalkAttempt.created_at > now - PENDING_EXPIRY)
                    )
                )
            )
            .order_by(AlimtalkAttempt.id.desc())
            .first()
        )
        outcome = SUPPRESSED if recent is not None else PENDING
        attempt = AlimtalkAttempt.create(
            account=account,
            phone=account.phone,
            outcome=outcome,
            provider_request_id=recent.provider_request_id if recent else "",
            finished_at=now if recent else None,
        )
        return attempt, recent


def _finish(attempt_id: int, outcome: str, request_id: str, response: str) -> None:
    AlimtalkAttempt.update(
        outcome=outcome,
        provider_request_id=request_id,
        provider_response=response,
        finished_at=utcnow(),
    ).where(AlimtalkAttempt.id == attempt_id).execute()


async def send_impedance_alert(
    caller: Caller, client: AlimtalkClient, window: dt.timedelta
) -> AlertResult:
    """Sends the impedance-error Alimtalk to the caller's phone, at most once per window."""
    attempt, recent = await run_db(_begin, caller, window)
    if attempt.outcome == NO_PHONE:
        raise PermissionDenied(
            "Phone number is not found", reasons.ERROR_REASON_PHONE_NUMBER_MISSING
        )
    if recent is not None:
        return AlertResult(SUPPRESSED, attempt.provider_request_id)
    if not client.config.complete:
        await run_db(_finish, attempt.id, NOT_CONFIGURED, "", "provider not configured")
        raise _send_failed()
    result = await client.send(attempt.phone, {"occurredAt": utcnow().strftime("%Y-%m-%d %H:%M")})
    await run_db(
        _finish, attempt.id, SENT if result.ok else FAILED, result.request_id, result.response
    )
    if not result.ok:
        raise _send_failed()
    return AlertResult(SENT, result.request_id)
