"""Throttling of the token-free paths (issue 10, defects 4 and 5), on a stack of its own
with the default limits: RTC tokens by MAC (distinct MACs and misses per client address)
and failed logins (per address and per username), 429 with ``Retry-After``.

The client's address is Envoy's real peer: each test sends from its own loopback source
address (127.0.0.N; Envoy listens on 127.0.0.1), so tests do not share windows.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import grpc
import pytest

from devicehub import throttle
from devicehub.testing.stack import Stack, start_stack, unique
from devicehub.throttle import Limit
from devicehub.v1 import auth_pb2, auth_pb2_grpc, rtc_pb2, rtc_pb2_grpc

from api_client import (
    batch_create_devices,
    create_batch,
    create_device,
    create_type,
    query_database,
    random_mac,
    within_one_window,
)
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env

BY_MAC = "/api/device/rtc-token/get_by_mac/"
LOGIN = "/api/v1/auth/token"
# The defaults (README): 20 distinct MACs and 10 misses per address per 10 minutes;
# 20 failed logins per address, 10 per username, per 10 minutes.
ADDRESS_MISSES = 10
ADDRESS_MACS = 20
LOGIN_FAILURES_PER_ADDRESS = 20
LOGIN_FAILURES_PER_USERNAME = 10
REGISTRATIONS_PER_ADDRESS = 20  # per hour
WINDOW = 600


@pytest.fixture(autouse=True)
def _fresh_window() -> None:
    within_one_window(WINDOW, needed=45)  # no test here takes this long


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def guarded(request, tmp_path_factory, alimtalk_provider, weather_provider) -> Iterator[Stack]:
    """A stack with the default throttle settings (the session stack raises them)."""
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"guarded-{backend}")
    database_url = backend_database(request, backend, tmp)
    env = stack_env(
        tmp,
        database_url,
        alimtalk_provider.base_url,
        weather_provider.base_url,
        default_throttles=True,
    )
    env["DEVICEHUB_LOG_LEVEL"] = "INFO"
    started = start_stack(backend, env, tmp / "serve.log", ADMIN_PASSWORD)
    yield started
    started.stop()


def send(
    stack: Stack,
    source: str,
    method: str,
    path: str,
    *,
    params: dict | None = None,
    body: dict | None = None,
    headers: dict | None = None,
) -> tuple[int, dict, dict]:
    """One REST request from the loopback address ``source``: status, headers, JSON body."""
    host, port = stack.rest_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    try:
        query = f"?{urlencode(params)}" if params else ""
        payload = json.dumps(body) if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path + query, body=payload, headers=all_headers)
        response = connection.getresponse()
        text = response.read()
        return (
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            json.loads(text) if text else {},
        )
    finally:
        connection.close()


_user_addresses = itertools.count()


def new_user(stack: Stack) -> tuple[dict, str]:
    """A fresh account and its token, registered from an address of its own: registrations
    are limited per address, and these tests count other things."""
    number = next(_user_addresses)
    source = f"127.1.{number // 250}.{number % 250 + 1}"
    credentials = {"username": unique("user").lower(), "password": "password-123"}
    status, _, account = send(stack, source, "POST", "/api/v1/auth/register", body=credentials)
    assert status == 200, account
    status, _, token = send(stack, source, "POST", LOGIN, body=credentials)
    assert status == 200, token
    return account, token["access_token"]


def assert_throttled(status: int, headers: dict, body: dict, style: str = "status") -> None:
    assert status == 429, (status, body)
    assert re.fullmatch(r"[0-9]+", headers.get("retry-after", "")), headers
    assert 1 <= int(headers["retry-after"]) <= WINDOW
    if style == "status":
        assert set(body) == {"status", "message", "code"}, body
        assert (body["status"], body["code"]) == ("error", "RATE_LIMITED")
    else:
        assert body == {"detail": "Too many failed logins; try again later"}


def bind(stack: Stack, mac: str) -> None:
    _, token = new_user(stack)
    response = stack.request(
        "POST",
        "/api/device/user-devices/bind/",
        token,
        json={"mac_address": mac, "is_primary": True},
    )
    assert response.status_code == 200, response.text


# --- get_by_mac (defect 4) ----------------------------------------------------------


def test_guessing_batch_created_macs_is_throttled_by_address(guarded):
    """The attack of the issue: 64 sequential guesses of a batch's MACs (prefix + serial),
    7 of them bound to 7 accounts. Before: 7 tokens for 7 voice rooms, no 429."""
    admin = guarded.admin_token
    device_type = create_type(guarded, admin)
    batch = create_batch(guarded, admin, device_type["id"])
    prefix = random_mac()[:8]
    batch_create_devices(guarded, admin, device_type["id"], batch["id"], 64, prefix)
    macs = [f"{prefix}:00:00:{serial:02X}" for serial in range(1, 65)]
    bound = {macs[i] for i in (20, 27, 33, 41, 48, 55, 62)}
    for mac in bound:
        bind(guarded, mac)

    answers = [send(guarded, "127.0.0.2", "GET", BY_MAC, params={"mac_address": m}) for m in macs]
    statuses = [status for status, _, _ in answers]
    first_refused = statuses.index(429)
    # Exactly the configured number of misses, then every guess is refused.
    assert statuses[:first_refused] == [404] * ADDRESS_MISSES
    assert set(statuses[first_refused:]) == {429}
    for status, headers, body in answers[first_refused:]:
        assert_throttled(status, headers, body)
    assert 200 not in statuses  # no voice room of anyone

    # The limit is the address's: a device elsewhere still gets its token.
    status, _, body = send(guarded, "127.0.0.12", "GET", BY_MAC, params={"mac_address": macs[20]})
    assert status == 200, body
    assert body["data"]["token"]


def test_random_macs_are_throttled_after_the_configured_misses(guarded):
    """500 random MACs from one address: 10 misses, then 429 + Retry-After."""
    answers = [
        send(guarded, "127.0.0.3", "GET", BY_MAC, params={"mac_address": random_mac()})
        for _ in range(500)
    ]
    statuses = [status for status, _, _ in answers]
    assert statuses[:ADDRESS_MISSES] == [404] * ADDRESS_MISSES
    assert set(statuses[ADDRESS_MISSES:]) == {429}
    for status, headers, body in answers[ADDRESS_MISSES:]:
        assert_throttled(status, headers, body)


def test_distinct_macs_per_address_are_limited_even_when_all_are_found(guarded):
    """Distinct MACs count too: one address may ask for 20 devices' tokens per window."""
    admin = guarded.admin_token
    device_type = create_type(guarded, admin)
    batch = create_batch(guarded, admin, device_type["id"])
    macs = []
    for _ in range(ADDRESS_MACS + 1):
        macs.append(create_device(guarded, admin, device_type["id"], batch["id"])["mac_address"])
        bind(guarded, macs[-1])
    for mac in macs[:ADDRESS_MACS]:
        status, _, body = send(guarded, "127.0.0.4", "GET", BY_MAC, params={"mac_address": mac})
        assert status == 200, body
    # The same devices again are not new MACs; one more is over the limit.
    status, _, body = send(guarded, "127.0.0.4", "GET", BY_MAC, params={"mac_address": macs[0]})
    assert status == 200, body
    assert_throttled(*send(guarded, "127.0.0.4", "GET", BY_MAC, params={"mac_address": macs[-1]}))


def test_a_client_sent_x_forwarded_for_is_not_trusted(guarded):
    """Through Envoy the rightmost x-forwarded-for entry is Envoy's real peer; a direct gRPC
    caller's own TCP peer counts, whatever x-forwarded-for it sends."""
    for _ in range(ADDRESS_MISSES):
        forged = {"X-Forwarded-For": f"10.{uuid.uuid4().int % 250}.0.1"}
        status, _, _ = send(
            guarded,
            "127.0.0.5",
            "GET",
            BY_MAC,
            params={"mac_address": random_mac()},
            headers=forged,
        )
        assert status == 404
    forged = {"X-Forwarded-For": "10.99.0.1"}
    assert_throttled(
        *send(
            guarded,
            "127.0.0.5",
            "GET",
            BY_MAC,
            params={"mac_address": random_mac()},
            headers=forged,
        )
    )

    stub = rtc_pb2_grpc.RtcServiceStub(guarded.channel())
    codes = []
    for index in range(ADDRESS_MISSES + 1):
        try:
            stub.GetRtcTokenByMac(
                rtc_pb2.GetRtcTokenByMacRequest(mac_address=random_mac()),
                metadata=(("x-forwarded-for", f"10.0.0.{index}"),),
            )
        except grpc.RpcError as error:
            codes.append(error.code())
            last = error
    assert codes[:ADDRESS_MISSES] == [grpc.StatusCode.NOT_FOUND] * ADDRESS_MISSES
    assert codes[ADDRESS_MISSES] == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(last.trailing_metadata() or ())
    assert 1 <= int(trailers["retry-after"]) <= WINDOW


def test_tokens_issued_by_mac_are_logged_without_the_token(guarded):
    admin = guarded.admin_token
    device_type = create_type(guarded, admin)
    batch = create_batch(guarded, admin, device_type["id"])
    device = create_device(guarded, admin, device_type["id"], batch["id"])
    bind(guarded, device["mac_address"])
    status, _, body = send(
        guarded, "127.0.0.6", "GET", BY_MAC, params={"mac_address": device["mac_address"]}
    )
    assert status == 200, body
    log = guarded.log_path.read_text()
    assert f"device {device['id']}, address 127.0.0.6, unsigned" in log
    assert body["data"]["token"] not in log


# --- logins (defect 5) --------------------------------------------------------------


def login(stack: Stack, source: str, username: str, password: str) -> tuple[int, dict, dict]:
    return send(stack, source, "POST", LOGIN, body={"username": username, "password": password})


def test_failed_logins_are_throttled_and_the_owner_still_gets_in(guarded):
    """500 wrong passwords for one account from one address: 10 failures (the username's
    limit, for addresses that failed for it), then 429 + Retry-After (before: 500 x 401).
    The owner, from another address, logs in with the correct password."""
    account, _ = new_user(guarded)
    username = account["username"]
    answers = [login(guarded, "127.0.0.7", username, f"wrong-{i:04d}") for i in range(500)]
    statuses = [status for status, _, _ in answers]
    assert statuses[:LOGIN_FAILURES_PER_USERNAME] == [401] * LOGIN_FAILURES_PER_USERNAME
    for _, _, body in answers[:LOGIN_FAILURES_PER_USERNAME]:
        assert body == {"detail": "Incorrect username or password"}
    for status, headers, body in answers[LOGIN_FAILURES_PER_USERNAME:]:
        assert_throttled(status, headers, body, style="detail")
    # The attacking address is refused even with the right password; the owner is not.
    assert_throttled(*login(guarded, "127.0.0.7", username, "password-123"), style="detail")
    status, _, body = login(guarded, "127.0.0.8", username, "password-123")
    assert status == 200, body
    assert body["access_token"]


def register(stack: Stack, source: str) -> tuple[int, dict, dict]:
    body = {"username": unique("signup").lower(), "password": "password-123"}
    return send(stack, source, "POST", "/api/v1/auth/register", body=body)


def test_registrations_are_throttled_per_address(guarded):
    """Registration needs no token: one address gets REGISTRATIONS_PER_ADDRESS accounts per
    window, then 429 + Retry-After (and no account); another address still registers."""
    within_one_window(3600, needed=45)
    before = query_database(guarded, "SELECT count(*) FROM account")[0][0]
    answers = [register(guarded, "127.0.0.30") for _ in range(REGISTRATIONS_PER_ADDRESS + 3)]
    statuses = [status for status, _, _ in answers]
    assert statuses[:REGISTRATIONS_PER_ADDRESS] == [200] * REGISTRATIONS_PER_ADDRESS
    for status, headers, body in answers[REGISTRATIONS_PER_ADDRESS:]:
        assert status == 429, (status, body)
        assert 1 <= int(headers["retry-after"]) <= 3600
        assert body == {"detail": "Too many registrations from this address; try again later"}
    after = query_database(guarded, "SELECT count(*) FROM account")[0][0]
    assert after - before == REGISTRATIONS_PER_ADDRESS
    assert register(guarded, "127.0.0.31")[0] == 200


def test_failed_logins_per_address_across_usernames(guarded):
    """Credential stuffing: one address, a different username each time: 20 failures,
    then every login from that address is refused until the window ends."""
    account, _ = new_user(guarded)
    answers = [
        login(guarded, "127.0.0.9", unique("nobody").lower(), "wrong-password")
        for _ in range(LOGIN_FAILURES_PER_ADDRESS + 5)
    ]
    statuses = [status for status, _, _ in answers]
    assert statuses[:LOGIN_FAILURES_PER_ADDRESS] == [401] * LOGIN_FAILURES_PER_ADDRESS
    for status, headers, body in answers[LOGIN_FAILURES_PER_ADDRESS:]:
        assert_throttled(status, headers, body, style="detail")
    assert_throttled(
        *login(guarded, "127.0.0.9", account["username"], "password-123"), style="detail"
    )
    status, _, body = login(guarded, "127.0.0.10", account["username"], "password-123")
    assert status == 200, body


def test_failed_logins_per_username_from_many_addresses(guarded):
    """A distributed guesser: once the username has 10 failures, addresses that failed for
    it are refused; an address that did not fail, and the owner's, still get answers."""
    account, _ = new_user(guarded)
    username = account["username"]
    attackers = [f"127.0.1.{n}" for n in range(1, 6)]
    for source in attackers:
        for _ in range(2):
            status, _, body = login(guarded, source, username, "wrong-password")
            assert status == 401, body
    assert_throttled(*login(guarded, attackers[0], username, "wrong-password"), style="detail")
    status, _, body = login(guarded, "127.0.1.9", username, "wrong-password")
    assert (status, body) == (401, {"detail": "Incorrect username or password"})
    status, _, body = login(guarded, "127.0.1.10", username, "password-123")
    assert status == 200, body
    # Another username from the attacking addresses is unaffected (under their limit).
    other, _ = new_user(guarded)
    status, _, body = login(guarded, attackers[0], other["username"], "password-123")
    assert status == 200, body


def test_failed_logins_over_grpc_are_throttled_by_peer(guarded):
    account, _ = new_user(guarded)
    stub = auth_pb2_grpc.AuthServiceStub(guarded.channel())
    codes = []
    for index in range(LOGIN_FAILURES_PER_USERNAME + 1):
        try:
            stub.CreateToken(
                auth_pb2.CreateTokenRequest(username=account["username"], password="wrong-pass"),
                metadata=(("x-forwarded-for", f"10.1.0.{index}"),),
            )
        except grpc.RpcError as error:
            codes.append(error.code())
            last = error
    assert codes[:-1] == [grpc.StatusCode.UNAUTHENTICATED] * LOGIN_FAILURES_PER_USERNAME
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 1 <= int(dict(last.trailing_metadata() or ())["retry-after"]) <= WINDOW


# --- the table ----------------------------------------------------------------------


def test_windows_reuse_their_row_and_ended_windows_are_swept(stack, in_process_db):
    """One row per key however many windows pass, and rows of ended windows are deleted,
    so keys that stop (random MACs, one-off addresses) do not grow the table."""
    scope = unique("test-").lower()
    now = time.time()
    limit = Limit(scope, 2, 60)
    assert [limit.hit("kept", now).hits for _ in range(3)] == [1, 2, 3]
    assert limit.hit("kept", now + 60).hits == 1  # the next window, the same row
    throttle.count(scope, "ended", int(now) - 5, now)
    rows = "SELECT subject FROM throttle_window WHERE scope = ? ORDER BY subject"
    assert query_database(stack, rows, (scope,)) == [("ended",), ("kept",)]
    throttle._last_sweep = 0.0  # due now
    limit.hit("kept", now + 60)
    assert query_database(stack, rows, (scope,)) == [("kept",)]
    hostile = "\x00" * 10 + "é" * 1000  # caller input never reaches the table as-is
    assert limit.hit(hostile, now).hits == 1
    assert limit.peek([hostile], now)[hostile].hits == 1


def test_concurrent_guesses_cannot_overshoot_the_limits(guarded):
    """Attempts count before their outcome is known: 30 wrong logins and 30 random MACs,
    16 at a time, give exactly the configured number of 401s and 404s."""
    account, _ = new_user(guarded)
    with ThreadPoolExecutor(16) as pool:
        logins = list(
            pool.map(
                lambda i: login(guarded, "127.0.2.1", account["username"], f"wrong-{i}"),
                range(30),
            )
        )
        guesses = list(
            pool.map(
                lambda _: send(
                    guarded, "127.0.2.2", "GET", BY_MAC, params={"mac_address": random_mac()}
                ),
                range(30),
            )
        )
    assert sorted(status for status, _, _ in logins) == [401] * LOGIN_FAILURES_PER_USERNAME + [
        429
    ] * (30 - LOGIN_FAILURES_PER_USERNAME)
    assert sorted(status for status, _, _ in guesses) == [404] * ADDRESS_MISSES + [429] * (
        30 - ADDRESS_MISSES
    )
