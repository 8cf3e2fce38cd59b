"""NotificationService: the impedance-error Alimtalk against a fake provider on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import fake_alimtalk
import grpc
import pytest

from devicehub import notifications
from devicehub.errors import Conflict
from devicehub.integrations.alimtalk import AlimtalkClient, AlimtalkConfig
from devicehub.security import Caller
from devicehub.testing.stack import unique
from devicehub.v1 import notification_pb2, notification_pb2_grpc

from api_client import metadata, query_database

PATH = "/api/v1/lux/device/alimtalk"


def phone() -> str:
    return "010" + str(abs(hash(unique())))[:8].zfill(8)


def attempts(stack, account_id: int) -> list[tuple]:
    return query_database(
        stack,
        "SELECT outcome, phone, provider_request_id, provider_response FROM alimtalk_attempt "
        "WHERE account_id = ? ORDER BY id",
        (account_id,),
    )


def test_sends_to_the_callers_phone_and_answers_null(stack, alimtalk_provider):
    number = phone()
    account, token = stack.new_user(phone=number)
    response = stack.request("POST", PATH, token)
    assert response.status_code == 200
    assert response.content == b"null"
    assert response.json() is None
    assert response.headers["x-alimtalk-outcome"] == "sent"
    [request] = alimtalk_provider.sent_to(number)
    assert request["path"] == f"/alimtalk/v2.3/appkeys/{fake_alimtalk.APP_KEY}/messages"
    assert request["headers"]["X-Secret-Key"] == fake_alimtalk.SECRET_KEY
    assert request["headers"]["X-NC-API-IDEMPOTENCY-KEY"]
    assert request["body"]["senderKey"] == fake_alimtalk.SENDER_KEY
    assert request["body"]["templateCode"] == fake_alimtalk.TEMPLATE_CODE
    [(outcome, stored_phone, request_id, provider_response)] = attempts(stack, account["id"])
    assert (outcome, stored_phone) == ("sent", number)
    assert request_id and request_id in provider_response


def test_repeated_calls_within_the_window_are_not_sent_again(stack, alimtalk_provider):
    number = phone()
    account, token = stack.new_user(phone=number)
    first = stack.request("POST", PATH, token)
    second = stack.request("POST", PATH, token)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() is None
    assert second.headers["x-alimtalk-outcome"] == "suppressed"
    assert len(alimtalk_provider.sent_to(number)) == 1
    outcomes = [row[0] for row in attempts(stack, account["id"])]
    assert outcomes == ["sent", "suppressed"]


def test_provider_error_is_409_and_recorded(stack, alimtalk_provider):
    account, token = stack.new_user(phone=fake_alimtalk.FAIL_RECIPIENT)
    before = len(alimtalk_provider.requests)
    for _ in range(2):  # a failure does not suppress the next try
        response = stack.request("POST", PATH, token)
        assert response.status_code == 409
        assert response.json() == {"detail": "Alimtalk send failed"}
    assert len(alimtalk_provider.requests) == before + 2
    rows = attempts(stack, account["id"])
    assert [row[0] for row in rows] == ["failed", "failed"]
    assert all('"isSuccessful": false' in row[3] for row in rows)


def test_provider_down_is_409_and_recorded(stack, alimtalk_provider):
    account, token = stack.new_user(phone=phone())
    alimtalk_provider.stop()
    try:
        response = stack.request("POST", PATH, token)
    finally:
        alimtalk_provider.start()
    assert response.status_code == 409
    assert response.json() == {"detail": "Alimtalk send failed"}
    [(outcome, _, _, provider_response)] = attempts(stack, account["id"])
    assert outcome == "failed"
    assert provider_response.startswith("provider unreachable")
    # Once the provider is back, the parent is notified (the failure did not count).
    assert stack.request("POST", PATH, token).status_code == 200


def test_missing_phone_is_403_and_nothing_is_sent(stack, alimtalk_provider):
    account, token = stack.new_user(phone="")
    before = len(alimtalk_provider.requests)
    response = stack.request("POST", PATH, token)
    assert response.status_code == 403
    assert response.json() == {"detail": "Phone number is not found"}
    assert len(alimtalk_provider.requests) == before
    assert [row[0] for row in attempts(stack, account["id"])] == ["no_phone"]


def test_needs_a_token(stack):
    response = stack.request("POST", PATH)
    assert response.status_code == 401
    assert response.json() == {"detail": "Could not validate credentials"}


def test_over_grpc_reports_the_outcome(stack, alimtalk_provider):
    number = phone()
    _, token = stack.new_user(phone=number)
    stub = notification_pb2_grpc.NotificationServiceStub(stack.channel())
    request = notification_pb2.SendImpedanceAlertRequest()
    sent = stub.SendImpedanceAlert(request, metadata=metadata(token))
    assert sent.outcome == notification_pb2.SendImpedanceAlertResponse.OUTCOME_SENT
    assert len(sent.provider_request_id) == 32  # the fake provider's request id (hex uuid)
    again = stub.SendImpedanceAlert(request, metadata=metadata(token))
    assert again.outcome == notification_pb2.SendImpedanceAlertResponse.OUTCOME_SUPPRESSED
    assert again.provider_request_id == sent.provider_request_id
    _, no_phone = stack.new_user(phone="")
    with pytest.raises(grpc.RpcError) as error:
        stub.SendImpedanceAlert(request, metadata=metadata(no_phone))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == "Phone number is not found"


def test_simultaneous_calls_send_one_message(stack, alimtalk_provider):
    number = phone()
    _, token = stack.new_user(phone=number)
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def call() -> None:
        barrier.wait()
        statuses.append(stack.request("POST", PATH, token).status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    assert len(alimtalk_provider.sent_to(number)) == 1


def test_not_configured_is_a_send_failure(stack, in_process_db, alimtalk_provider):
    account, _ = stack.new_user(phone=phone())
    incomplete = AlimtalkClient(AlimtalkConfig(alimtalk_provider.base_url, "", "", "", ""))
    caller = Caller(account_id=account["id"], is_admin=False)
    with pytest.raises(Conflict) as error:
        asyncio.run(
            notifications.send_impedance_alert(caller, incomplete, dt.timedelta(minutes=10))
        )
    assert error.value.message == "Alimtalk send failed"
    assert [row[0] for row in attempts(stack, account["id"])] == ["not_configured"]


def test_after_the_window_an_alert_is_sent_again(stack, in_process_db, alimtalk_provider):
    number = phone()
    account, _ = stack.new_user(phone=number)
    client = AlimtalkClient(
        AlimtalkConfig(
            alimtalk_provider.base_url,
            fake_alimtalk.APP_KEY,
            fake_alimtalk.SECRET_KEY,
            fake_alimtalk.SENDER_KEY,
            fake_alimtalk.TEMPLATE_CODE,
        )
    )
    caller = Caller(account_id=account["id"], is_admin=False)
    no_window = dt.timedelta(0)
    outcomes = [
        asyncio.run(notifications.send_impedance_alert(caller, client, no_window)).outcome
        for _ in range(2)
    ]
    assert outcomes == ["sent", "sent"]
    assert len(alimtalk_provider.sent_to(number)) == 2
