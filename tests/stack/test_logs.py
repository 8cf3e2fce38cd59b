"""Structured logs against the real stack: one JSON call line per RPC with its request id,
Envoy's JSON access log with the same id, the id in a 5xx, and no secret in any log.

The stack runs with ``DEVICEHUB_LOG_FORMAT=json`` at INFO and two workers; its serve log
(every worker's lines and Envoy's) is the file ``start_stack`` writes, the access log a file
of its own. Its weather provider is a port nothing listens on, so sending a weather message
is an honest 5xx of the service (503 ``WEATHER_UNAVAILABLE``, gRPC ``UNAVAILABLE``).
Logs are backend-independent: SQLite only.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devicehub.testing.stack import DEVICEHUB, Stack, start_stack, stop_process, unique
from devicehub.v1 import account_pb2, account_pb2_grpc, messaging_pb2, messaging_pb2_grpc

from api_client import metadata
from stack_settings import ADMIN_PASSWORD, stack_env

WAIT = 30.0  # seconds any log line may take to appear (Envoy flushes its file every second)
GET_MY_ACCOUNT = "/devicehub.v1.AccountService/GetMyAccount"
SEND_MESSAGE = "/devicehub.v1.MessagingService/SendMessage"


@pytest.fixture(scope="module")
def logged_stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("logs")
    env = {
        **stack_env(tmp, f"sqlite:///{tmp / 'devicehub.sqlite3'}"),
        "DEVICEHUB_LOG_FORMAT": "json",
        "DEVICEHUB_LOG_LEVEL": "INFO",
        "DEVICEHUB_WORKERS": "2",
        "DEVICEHUB_ACCESS_LOG": str(tmp / "access.log"),
    }
    stack = start_stack("sqlite", env, tmp / "serve.log", admin_password=ADMIN_PASSWORD)
    try:
        yield stack
    finally:
        stack.stop()


def access_log(stack: Stack) -> Path:
    return Path(stack.env["DEVICEHUB_ACCESS_LOG"])


def json_lines(path: Path) -> list[dict]:
    """The JSON objects of ``path``, one a line (``serve`` also prints a few text lines)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))  # every line that looks like JSON must be JSON
    return found


def wait_for(path: Path, match: Callable[[dict], bool], count: int = 1) -> list[dict]:
    """Waits until ``path`` has ``count`` JSON lines that ``match``; returns all of them."""
    deadline = time.monotonic() + WAIT
    while True:
        found = [entry for entry in json_lines(path) if match(entry)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def call_lines(stack: Stack, request_id: str, count: int = 1) -> list[dict]:
    return wait_for(
        stack.log_path,
        lambda e: e.get("logger") == "devicehub.calls" and e.get("request_id") == request_id,
        count,
    )


def access_lines(stack: Stack, request_id: str) -> list[dict]:
    return wait_for(access_log(stack), lambda e: e.get("request_id") == request_id)


def new_id() -> str:
    return "test-" + uuid.uuid4().hex


def my_account_id(stack: Stack) -> int:
    return stack.request("GET", "/api/v1/accounts/me", stack.admin_token).json()["id"]


def test_a_rest_call_logs_one_call_line_and_one_access_line_with_its_id(logged_stack):
    stack = logged_stack
    request_id = new_id()
    response = stack.request(
        "GET", "/api/v1/accounts/me", stack.admin_token, headers={"x-request-id": request_id}
    )
    assert response.status_code == 200
    assert "request_id" not in response.json()
    [line] = call_lines(stack, request_id)
    assert line["method"] == GET_MY_ACCOUNT and line["code"] == "OK"
    assert line["account_id"] == response.json()["id"]
    assert line["via"] == "rest" and line["level"] == "INFO"
    assert line["process"] in ("worker-0", "worker-1") and isinstance(line["pid"], int)
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    assert line["time"] and line["message"].startswith(GET_MY_ACCOUNT + " OK ")
    [access] = access_lines(stack, request_id)
    assert (access["method"], access["path"], access["status"]) == (
        "GET",
        "/api/v1/accounts/me",
        200,
    )
    assert access["upstream"].startswith("@devicehub-") and access["user_agent"]
    for key in ("time", "duration_ms", "bytes_sent", "bytes_received", "protocol"):
        assert access[key] is not None, key


def test_a_rest_call_without_an_id_gets_envoys_in_both_logs(logged_stack):
    stack = logged_stack
    marker = unique("ua-")  # finds the access line: the id is Envoy's
    response = stack.request("GET", "/api/v1/ping", headers={"user-agent": marker})
    assert response.status_code == 200
    [access] = wait_for(access_log(stack), lambda e: e.get("user_agent") == marker)
    request_id = access["request_id"]
    assert uuid.UUID(request_id)  # generated by Envoy
    [line] = call_lines(stack, request_id)
    assert line["method"] == "/devicehub.v1.SystemService/Ping" and line["account_id"] is None


def test_a_native_grpc_call_logs_the_id_it_sent(logged_stack):
    stack = logged_stack
    for via_envoy, via in ((False, "direct"), (True, "edge")):
        request_id = new_id()
        stub = account_pb2_grpc.AccountServiceStub(stack.channel(via_envoy=via_envoy))
        stub.GetMyAccount(
            account_pb2.GetMyAccountRequest(),
            metadata=(*metadata(stack.admin_token), ("x-request-id", request_id)),
            timeout=WAIT,
        )
        [line] = call_lines(stack, request_id)
        assert (line["method"], line["code"], line["via"]) == (GET_MY_ACCOUNT, "OK", via)
        assert line["account_id"] == my_account_id(stack)
        if via_envoy:
            [access] = access_lines(stack, request_id)
            assert access["path"] == GET_MY_ACCOUNT and access["grpc_status"] == "OK"


def test_an_unfit_client_id_is_replaced_not_logged(logged_stack):
    stack = logged_stack
    unfit = "x" * 200
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    stub.GetMyAccount(
        account_pb2.GetMyAccountRequest(),
        metadata=(*metadata(stack.admin_token), ("x-request-id", unfit)),
        timeout=WAIT,
    )
    # A call's line is written before its response is sent: no need to wait.
    assert unfit not in stack.log_path.read_text()


def test_a_client_error_logs_its_code_at_info_and_its_body_has_no_id(logged_stack):
    stack = logged_stack
    request_id = new_id()
    response = stack.request(
        "GET",
        "/api/device/devices/987654321/",
        stack.admin_token,
        headers={"x-request-id": request_id},
    )
    assert response.status_code == 404
    assert set(response.json()) == {"status", "message", "code"}
    [line] = call_lines(stack, request_id)
    assert (line["code"], line["level"]) == ("NOT_FOUND", "INFO")


WEATHER = {"type": "weather", "message": {"city": "北京"}}


def test_a_rest_5xx_body_names_the_request_id_of_both_logs(logged_stack):
    stack = logged_stack
    request_id = new_id()
    body = {**WEATHER, "user_id": str(my_account_id(stack))}
    response = stack.request(
        "POST",
        "/api/device/messages/",
        stack.admin_token,
        json=body,
        headers={"x-request-id": request_id},
    )
    assert response.status_code == 503, response.text
    answer = response.json()
    assert answer["request_id"] == request_id
    assert (answer["status"], answer["code"]) == ("error", "WEATHER_UNAVAILABLE")
    assert set(answer) == {"status", "message", "code", "request_id"}
    assert "x-request-id" not in response.headers  # the body carries it
    [line] = call_lines(stack, request_id)
    assert (line["method"], line["code"], line["level"]) == (SEND_MESSAGE, "UNAVAILABLE", "WARNING")
    [access] = access_lines(stack, request_id)
    assert access["status"] == 503


def test_a_grpc_5xx_carries_the_request_id_in_a_trailer_and_request_info(logged_stack):
    stack = logged_stack
    request_id = new_id()
    stub = messaging_pb2_grpc.MessagingServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as raised:
        stub.SendMessage(
            messaging_pb2.SendMessageRequest(
                type="weather",
                message=messaging_pb2.MessagePayload(city="北京"),
                user_id=str(my_account_id(stack)),
            ),
            metadata=(*metadata(stack.admin_token), ("x-request-id", request_id)),
            timeout=WAIT,
        )
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(error.trailing_metadata())["x-request-id"] == request_id
    status = rpc_status.from_call(error)
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            info = error_details_pb2.RequestInfo()
            detail.Unpack(info)
            infos.append(info.request_id)
    assert infos == [request_id]
    [line] = call_lines(stack, request_id)
    assert line["code"] == "UNAVAILABLE" and line["via"] == "direct"


def test_a_client_error_over_grpc_has_no_request_id_trailer(logged_stack):
    stub = messaging_pb2_grpc.MessagingServiceStub(logged_stack.channel())
    with pytest.raises(grpc.RpcError) as raised:
        stub.SendMessage(
            messaging_pb2.SendMessageRequest(type="no-such-type"),
            metadata=(*metadata(logged_stack.admin_token), ("x-request-id", new_id())),
            timeout=WAIT,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-request-id" not in dict(raised.value.trailing_metadata())


def test_no_password_or_token_appears_in_any_log(logged_stack):
    stack = logged_stack
    password = "pw-" + uuid.uuid4().hex
    username = unique("logs").lower()
    registered = stack.request(
        "POST",
        "/api/v1/auth/register",
        json={"username": username, "password": password, "phone": "01012345678"},
    )
    assert registered.status_code == 200, registered.text
    tokens = stack.request(
        "POST", "/api/v1/auth/token", json={"username": username, "password": password}
    ).json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    wrong = stack.request(
        "POST", "/api/v1/auth/token", json={"username": username, "password": password + "x"}
    )
    assert wrong.status_code == 401
    request_id = new_id()
    assert (
        stack.request(
            "GET", "/api/v1/accounts/me", access, headers={"x-request-id": request_id}
        ).status_code
        == 200
    )
    refreshed = stack.request("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert refreshed.status_code == 200, refreshed.text
    # The WebSocket channel takes its token in the query: the access log drops queries.
    last = new_id()
    requests.get(
        stack.url(f"/api/device/messages/1/?token={access}"),
        headers={"x-request-id": last},
        timeout=WAIT,
    )
    assert access_lines(stack, last)  # Envoy has written every line before it by now
    logs = stack.log_path.read_text() + access_log(stack).read_text()
    secrets = {
        "password": password,
        "admin password": ADMIN_PASSWORD,
        "access token": access,
        "refresh token": refresh,
        "refreshed token": refreshed.json()["access_token"],
        "admin token": stack.admin_token,
    }
    for what, secret in secrets.items():
        assert secret not in logs, what
        # A JWT's signature alone would be a leak as well.
        assert secret.rpartition(".")[2] not in logs, what


def test_envoys_own_503_body_names_its_request_id(tmp_path):
    """No upstream at all: Envoy's local 503 gets the documented body and the id."""
    env = stack_env(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    process = subprocess.Popen(
        [DEVICEHUB, "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{env['DEVICEHUB_HTTP_PORT']}"
    try:
        deadline = time.monotonic() + WAIT
        request_id = new_id()
        while True:
            try:
                lux = requests.get(
                    base + "/api/v1/accounts/me", headers={"x-request-id": request_id}, timeout=5
                )
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "envoy did not start"
                time.sleep(0.2)
        assert lux.status_code == 503
        assert lux.json()["request_id"] == request_id
        device = requests.get(base + "/api/device/devices/", timeout=5)
        assert device.status_code == 503
        assert uuid.UUID(device.json()["request_id"])  # Envoy's own
    finally:
        stop_process(process)
