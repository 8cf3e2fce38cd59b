"""A bounded property-based fuzz of every documented REST path and every gRPC method.

Inputs (hypothesis, derandomized, no example database, so every run sends the same
requests): text with NUL, lone surrogates, invalid UTF-8 (raw bytes in bodies and query
strings), digits ``int`` refuses (``²``), huge strings; numbers beyond every integer
type, ``1e400``, ``-0``, ``NaN`` as text; dates at and beyond years 1 and 9999; deeply
nested and huge values. Every answer must be:

- never a 5xx (gRPC: never UNKNOWN, INTERNAL, DATA_LOSS, UNAVAILABLE, UNIMPLEMENTED);
- an error in the documented shape: JSON ``{"detail"}`` outside /api/device,
  ``{"status": "error", "message", "code"}`` under it (gRPC: an ``ErrorInfo`` detail);
- and a rejected write changed nothing (the row counts and last-update times of the
  tables a write could touch are the same before and after a 4xx).

Bounded: ``MAX_EXAMPLES`` per REST endpoint and per gRPC method, and a time budget per
backend (``BUDGETS``, REST and gRPC apart): once one is spent, the remaining cases are skipped (and
say so). Endpoints that throttle per client address (login, get_by_mac) get only a few
examples: against the default limits the fuzz must not lock loopback out for the tests
after it. Methods that change or delete the calling account (``ACCOUNT_CHANGING``) are
called with a throwaway non-admin account's token only: the session's admin must
survive (admin-only ones are thereby fuzzed up to their PERMISSION_DENIED).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from devicehub.runtime.server import SERVICE_NAMES
from devicehub.testing.stack import Stack, unique

from api_client import connect as connect_device
from api_client import create_batch, create_child, create_device, create_type, metadata, random_mac
from documented_errors import assert_documented_error

MAX_EXAMPLES = 12
FEW_EXAMPLES = 4  # endpoints throttled per client address
# Seconds per backend; on an idle 2-core machine the whole file takes about a third.
BUDGETS = {"rest": 50.0, "grpc": 30.0}
REQUEST_TIMEOUT = 20.0
STREAM_WAIT = 1.0  # seconds a subscription is read before it counts as accepted

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- hostile values -------------------------------------------------------------------

RAW = "\x01raw:"  # a string that stands for raw JSON text (numbers JSON cannot hold)

HOSTILE_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate: JSON escapes it as \ud800
    "\udfff\ud800",
    "²",
    "١٢٣",
    "x" * 70_000,
    "\u202e\u0301" * 50,
    " ",
    "",
    "null",
    "%00",
    "' OR 1=1 --",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "-0",
    "NaN",
    "1e400",
]
HOSTILE_NUMBERS = [
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    1.5,
    True,
    None,
    RAW + "1e400",
    RAW + "-1e400",
    RAW + "-0",
    RAW + "NaN",
    RAW + "Infinity",
    RAW + "9" * 1000,
    "NaN",
    "1e400",
    "²",
]
HOSTILE_DATES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:10",
    "0001-01-01",
    "9999-12-31",
    "0000-00-00",
    "2024-02-30",
    "99999-01-01T00:00:00",
    "2024-01-01T00:00:00+99:00",
    "2025-02-21T15:48:49Z",
]
DEEP = [RAW + "[" * 5000 + "]" * 5000, RAW + '{"a":' * 3000 + "1" + "}" * 3000]


def hostile_texts() -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=40),  # any code point, surrogates included
        st.builds(lambda a, b: a + "\x00" + b, st.text(max_size=8), st.text(max_size=8)),
    )


def anything() -> st.SearchStrategy:
    return st.one_of(
        hostile_texts(),
        st.sampled_from(HOSTILE_NUMBERS),
        st.sampled_from(HOSTILE_DATES),
        st.sampled_from(DEEP),
        st.lists(st.sampled_from(HOSTILE_NUMBERS), max_size=3),
        st.dictionaries(st.text(max_size=5), st.sampled_from(HOSTILE_NUMBERS), max_size=3),
    )


def value(plausible: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly values that pass the first checks (to reach deeper ones), some hostile."""
    return st.one_of(plausible, anything())


def to_json(body: object) -> bytes:
    """JSON with RAW-marked strings written as raw text (``1e400`` is no Python float)."""
    raws: list[str] = []

    def mark(item: object) -> object:
        if isinstance(item, str) and item.startswith(RAW):
            raws.append(item.removeprefix(RAW))
            return f"\x02{len(raws) - 1}\x02"
        if isinstance(item, list):
            return [mark(i) for i in item]
        if isinstance(item, dict):
            return {k: mark(v) for k, v in item.items()}
        return item

    text = json.dumps(mark(body))
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0002{index}\\u0002"', raw)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate stays invalid UTF-8


def corrupt(raw: bytes, how: str) -> bytes:
    """Byte-level damage JSON text cannot express."""
    if how == "invalid-utf8" and b'"' in raw:
        at = raw.index(b'"') + 1
        return raw[:at] + b"\xff\xc3" + raw[at:]
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "nul-byte":
        return raw.replace(b":", b":\x00", 1)
    if how == "bare-array":
        return b"[" + raw + b"]"
    return raw


QUERY_VALUES = [
    "%00",
    "%FF",
    "%ED%A0%80",
    "abc%C3",
    "%C2%B2",
    "99999999999999999999999",
    "-1",
    "-0",
    "1e400",
    "NaN",
    "",
    "x" * 5000,
    "0001-01-01T00:00:00%2B01:00",
    "%2B1",
    "1,2",
]
PATH_IDS = ["0", "-1", "2147483648", "99999999999999999999", "%C2%B2", "%00", "%FF", "abc"]


# --- the world the fuzz runs in --------------------------------------------------------


@dataclass
class World:
    stack: Stack
    admin: str
    token: str
    account_id: int
    child_id: int
    device: dict
    type_id: int
    batch_id: int
    binding_id: int
    database: Any  # a connection of the test process, for the write checks
    spent: dict[str, float] = field(default_factory=lambda: {"rest": 0.0, "grpc": 0.0})

    def ids(self, path: str) -> list[str]:
        """The world's ids a path's ``{id}`` may name."""
        if "children" in path:
            return [str(self.child_id)]
        if "user-devices" in path:
            return [str(self.binding_id)]
        return [str(self.device["id"]), str(self.type_id), str(self.batch_id)]

    @contextmanager
    def budget(self, kind: str) -> Iterator[None]:
        """Runs a case within ``kind``'s time budget; skips it once the budget is spent."""
        if self.spent[kind] >= BUDGETS[kind]:
            pytest.skip(f"{kind} fuzz budget of {BUDGETS[kind]:.0f} s per backend spent")
        started = time.monotonic()
        try:
            yield
        finally:
            self.spent[kind] += time.monotonic() - started

    def snapshot(self) -> tuple:
        """What a write can touch (SNAPSHOT), read on the world's own connection."""
        cursor = self.database.cursor()
        try:
            cursor.execute(SNAPSHOT.replace("?", self.placeholder), (True,))
            return tuple(cursor.fetchone())
        finally:
            cursor.close()

    @property
    def placeholder(self) -> str:
        return "?" if self.stack.backend == "sqlite" else "%s"


def open_database(stack: Stack) -> Any:
    if stack.backend == "sqlite":
        import sqlite3

        return sqlite3.connect(stack.database_url.removeprefix("sqlite:///"), isolation_level=None)
    import psycopg2

    connection = psycopg2.connect(stack.database_url)
    connection.autocommit = True  # every snapshot sees the latest commits
    return connection


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    admin = stack.admin_token
    account, token = stack.new_user()
    child = create_child(stack, token)
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    device = create_device(stack, admin, device_type["id"], batch["id"])
    assert connect_device(stack, token, device, child["id"]).status_code == 200
    other = create_device(stack, admin, device_type["id"], batch["id"])
    bound = stack.request(
        "POST", "/api/device/user-devices/bind/", token, json={"mac_address": other["mac_address"]}
    )
    assert bound.status_code == 200, bound.text
    database = open_database(stack)
    yield World(
        stack=stack,
        admin=admin,
        token=token,
        account_id=account["id"],
        child_id=child["id"],
        device=device,
        type_id=device_type["id"],
        batch_id=batch["id"],
        binding_id=bound.json()["id"],
        database=database,
    )
    database.close()


# What a write can touch: counts, last-update times, acknowledged messages, primaries.
SNAPSHOT = "SELECT " + ", ".join(
    [
        *(
            f"(SELECT COUNT(*) FROM {table})"
            for table in (
                "account",
                "child",
                "device_type",
                "device_batch",
                "device",
                "binding",
                "devlog",
                "movement_sample",
                "message",
                "firmware_package",
                "firmware_chunk",
                "firmware_rollout",
                "firmware_update",
                "firmware_update_event",
            )
        ),
        *(
            f"(SELECT MAX(updated_at) FROM {table})"
            for table in (
                "account",
                "child",
                "device_type",
                "device_batch",
                "device",
                "devlog",
                "firmware_rollout",
                "firmware_update",
            )
        ),
        "(SELECT COUNT(*) FROM message WHERE state = 'acked')",
        "(SELECT COUNT(*) FROM binding WHERE is_primary = ?)",
    ]
)


# --- REST ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {id} is replaced by an id, world or hostile
    auth: str  # "none", "user", "admin" or "victim" (a throwaway account of its own)
    body: Callable[[World], st.SearchStrategy] | None = None
    query: Callable[[World], dict[str, st.SearchStrategy]] | None = None
    examples: int = MAX_EXAMPLES
    stream: bool = False
    # Rejected requests of these endpoints are documented to write (attempts, windows)
    # or are reads: no write check.
    writes: bool = True

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def ints(*extra: int) -> st.SearchStrategy:
    return value(st.sampled_from([1, 2, 100, *extra]))


def texts(*plausible: str) -> st.SearchStrategy:
    return value(st.sampled_from([*plausible, "ok"]))


def obj(**fields: st.SearchStrategy) -> st.SearchStrategy:
    """A JSON object with any subset of ``fields`` (and now and then an unknown key)."""
    return st.fixed_dictionaries({}, optional={**fields, "unknown_key": anything()})


def devlog_entry(w: World) -> st.SearchStrategy:
    return obj(
        real_user_id=ints(w.child_id),
        device_id=ints(w.device["id"]),
        unique_id=texts(w.device["unique_id"]),
        log_file_id=ints(7),
        detail_data=obj(
            treatment_date=value(st.sampled_from(HOSTILE_DATES)),
            finish_flag=value(st.sampled_from([1, 6, 7, None, "1", "null", 1.5])),
            last_intensity=ints(),
            treatment_time=ints(),
            movement=ints(),
            log_data=texts("abc"),
        ),
    )


def query_ids(*names: str) -> Callable[[World], dict[str, st.SearchStrategy]]:
    def build(w: World) -> dict[str, st.SearchStrategy]:
        plausible = {
            "real_user_id": str(w.child_id),
            "device_id": str(w.device["id"]),
            "unique_id": w.device["unique_id"],
            "serial_code": w.device["device_code"],
            "mac_id": w.device["mac_address"],
            "mac_address": w.device["mac_address"],
        }
        return {
            name: st.one_of(st.just(plausible.get(name, "1")), st.sampled_from(QUERY_VALUES))
            for name in names
        }

    return build


def page_query(w: World) -> dict[str, st.SearchStrategy]:
    return {
        "page_size": st.sampled_from(["1", "1000", "1001", *QUERY_VALUES]),
        "page_token": st.sampled_from(
            ["YWZ0ZXI6MQ", "YWZ0ZXI6OTk5OTk5OTk5OTk5OTk5OTk5OTk5", *QUERY_VALUES]
        ),
    }


ENDPOINTS = [
    Endpoint("GET", "/api/v1/ping", "none", writes=False),
    Endpoint(
        "POST",
        "/api/v1/auth/register",
        "none",
        body=lambda w: obj(
            username=texts(unique("fz").lower()),
            password=texts("password-123"),
            phone=texts("01012345678"),
            first_name=texts("Kim"),
            last_name=texts("Lee"),
        ),
    ),
    Endpoint(
        "POST",
        "/api/v1/auth/token",
        "none",
        body=lambda w: obj(username=texts(), password=texts()),
        examples=FEW_EXAMPLES,
        writes=False,
    ),
    Endpoint(
        "POST",
        "/api/v1/auth/refresh",
        "none",
        body=lambda w: obj(refresh_token=texts("a.b.c")),
        writes=False,
    ),
    Endpoint("GET", "/api/v1/accounts/me", "user", writes=False),
    # The calling account's own changes: a throwaway account (the session's must survive).
    Endpoint("DELETE", "/api/v1/accounts/me", "victim", examples=FEW_EXAMPLES),
    Endpoint(
        "POST",
        "/api/v1/accounts/me/password",
        "victim",
        body=lambda w: obj(
            current_password=texts("password-123"), new_password=texts("password-456")
        ),
    ),
    Endpoint(
        "PUT",
        "/api/v1/accounts/{id}/admin",
        "victim",
        body=lambda w: obj(is_admin=value(st.booleans())),
    ),
    Endpoint("GET", "/api/v1/accounts/children/", "user", query=page_query, writes=False),
    Endpoint(
        "POST",
        "/api/v1/accounts/children/",
        "user",
        body=lambda w: obj(
            first_name=texts("Min"),
            last_name=texts("Kim"),
            birthdate=value(st.sampled_from(["2015-03-01", *HOSTILE_DATES])),
            gender=texts("female"),
        ),
    ),
    Endpoint(
        "PATCH",
        "/api/v1/accounts/children/{id}/",
        "user",
        body=lambda w: obj(
            first_name=texts("Min"),
            birthdate=value(st.sampled_from(["2015-03-01", *HOSTILE_DATES])),
            gender=texts(),
        ),
    ),
    Endpoint("DELETE", "/api/v1/accounts/children/{id}/", "user"),
    Endpoint("GET", "/api/device/device-types/", "user", query=page_query, writes=False),
    Endpoint(
        "POST",
        "/api/device/device-types/",
        "admin",
        body=lambda w: obj(name=texts("音箱"), code=texts(unique("F")), description=texts("d")),
    ),
    Endpoint("GET", "/api/device/device-types/{id}/", "user", writes=False),
    Endpoint(
        "PUT",
        "/api/device/device-types/{id}/",
        "admin",
        body=lambda w: obj(name=texts("音箱"), code=texts(), description=texts()),
    ),
    Endpoint("DELETE", "/api/device/device-types/{id}/", "admin"),
    Endpoint("GET", "/api/device/device-batches/", "user", query=page_query, writes=False),
    Endpoint(
        "POST",
        "/api/device/device-batches/",
        "admin",
        body=lambda w: obj(
            device_type=ints(w.type_id),
            batch_number=texts(unique("FB")),
            production_date=value(st.sampled_from(["2023-01-01", *HOSTILE_DATES])),
            quantity=ints(),
            description=texts(),
        ),
    ),
    Endpoint("GET", "/api/device/device-batches/{id}/", "user", writes=False),
    Endpoint(
        "PUT",
        "/api/device/device-batches/{id}/",
        "admin",
        body=lambda w: obj(
            device_type=ints(w.type_id),
            batch_number=texts(),
            production_date=value(st.sampled_from(["2023-01-01", *HOSTILE_DATES])),
            quantity=ints(),
        ),
    ),
    Endpoint("DELETE", "/api/device/device-batches/{id}/", "admin"),
    Endpoint(
        "GET",
        "/api/device/devices/",
        "admin",
        query=lambda w: {
            **page_query(w),
            "batch": st.sampled_from([str(w.batch_id), *QUERY_VALUES]),
            "mac_address": st.sampled_from([random_mac(), *QUERY_VALUES]),
        },
        writes=False,
    ),
    Endpoint(
        "POST",
        "/api/device/devices/",
        "admin",
        body=lambda w: obj(
            device_type=ints(w.type_id),
            batch=ints(w.batch_id),
            serial_number=texts(unique("S")),
            mac_address=texts(random_mac()),
        ),
    ),
    Endpoint(
        "POST",
        "/api/device/devices/batch_create/",
        "admin",
        body=lambda w: obj(
            device_type=ints(w.type_id),
            batch=ints(w.batch_id),
            start_serial=texts("00001", "9" * 40),
            count=ints(1000, 1001),
            mac_prefix=texts("00:11", "00:11:22:33:44"),
            devices=value(
                st.lists(
                    obj(serial_number=texts(unique("S")), mac_address=texts(random_mac())),
                    max_size=3,
                )
            ),
        ),
    ),
    Endpoint("GET", "/api/device/devices/{id}/", "user", writes=False),
    Endpoint(
        "PUT",
        "/api/device/devices/{id}/",
        "admin",
        body=lambda w: obj(
            device_type=ints(w.type_id),
            batch=ints(w.batch_id),
            serial_number=texts(),
            mac_address=texts(),
        ),
    ),
    Endpoint("DELETE", "/api/device/devices/{id}/", "admin"),
    Endpoint("GET", "/api/device/user-devices/", "user", writes=False),
    Endpoint(
        "POST",
        "/api/device/user-devices/bind/",
        "user",
        body=lambda w: obj(
            mac_address=texts(w.device["mac_address"]),
            nickname=texts(),
            is_primary=value(st.booleans()),
        ),
    ),
    Endpoint("POST", "/api/device/user-devices/{id}/set_primary/", "user"),
    Endpoint("DELETE", "/api/device/user-devices/{id}/", "user"),
    Endpoint(
        "GET",
        "/api/v1/lux/device/child-device",
        "user",
        query=query_ids("real_user_id"),
        writes=False,
    ),
    Endpoint("GET", "/api/v1/lux/device/get-all-device", "user", writes=False),
    Endpoint(
        "POST",
        "/api/v1/lux/device/set-my-device",
        "user",
        query=query_ids("serial_code", "mac_id", "unique_id", "real_user_id"),
    ),
    Endpoint(
        "PATCH",
        "/api/v1/lux/device/un-connect",
        "user",
        query=query_ids("unique_id", "real_user_id"),
    ),
    Endpoint(
        "GET",
        "/api/v1/lux/device/check-device",
        "user",
        query=query_ids("unique_id"),
        writes=False,
    ),
    Endpoint(
        "PATCH",
        "/api/v1/lux/device/update-alias",
        "user",
        body=lambda w: obj(
            device_id=ints(w.device["id"]),
            real_user_id=ints(w.child_id),
            device_alias=texts("내 기기"),
        ),
    ),
    Endpoint(
        "POST",
        "/api/v1/lux/device/devlog",
        "user",
        body=lambda w: st.one_of(
            obj(log_arrays=value(st.lists(devlog_entry(w), max_size=3))),
            st.lists(devlog_entry(w), max_size=2),  # the earlier bare-array body
        ),
    ),
    Endpoint(
        "POST",
        "/api/v1/lux/device/movement",
        "user",
        body=lambda w: obj(
            real_user_id=ints(w.child_id),
            device_id=ints(w.device["id"]),
            movement_data=value(
                st.lists(obj(timestamp=ints(1, 2**32), val=ints(2**31)), max_size=3)
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/lux/device/movement",
        "user",
        query=lambda w: {
            **query_ids("device_id", "real_user_id")(w),
            "start": st.sampled_from(["0", "4294967296", *QUERY_VALUES]),
            "end": st.sampled_from(["0", "4294967295", *QUERY_VALUES]),
            "page_token": st.sampled_from(
                ["dHM6MQ", "dHM6OTk5OTk5OTk5OTk5OTk5OTk5OTk5", *QUERY_VALUES]
            ),
        },
        writes=False,
    ),
    # Every attempt is recorded (alimtalk_attempt), a refused one too.
    Endpoint("POST", "/api/v1/lux/device/alimtalk", "user", examples=FEW_EXAMPLES, writes=False),
    Endpoint(
        "POST",
        "/api/device/messages/",
        "user",
        body=lambda w: obj(
            type=value(st.sampled_from(["text", "sing", "dance"])),
            message=value(
                obj(content=texts("hi"), song=texts("s"), dance=texts("d"), style=texts())
            ),
            user_id=value(st.sampled_from(["", str(w.account_id), "²", "0"])),
        ),
    ),
    Endpoint(
        "GET",
        "/api/device/messages/stream/",
        "user",
        query=lambda w: {"after_id": st.sampled_from(["0", "9223372036854775808", *QUERY_VALUES])},
        stream=True,
        writes=False,
    ),
    Endpoint(
        "POST",
        "/api/device/messages/ack/",
        "user",
        body=lambda w: obj(ids=value(st.lists(st.sampled_from(HOSTILE_NUMBERS), max_size=3))),
    ),
    Endpoint(
        "POST",
        "/api/device/rtc-token/generate/",
        "user",
        body=lambda w: obj(expire_time=ints(60, 604801)),
        writes=False,
    ),
    Endpoint(
        "POST",
        "/api/device/firmware/packages",
        "admin",
        query=lambda w: {
            "device_type": st.sampled_from([str(w.type_id), *QUERY_VALUES]),
            "version": st.sampled_from(["1.0.0", "1.0", "9" * 40, *QUERY_VALUES]),
            "title": st.sampled_from(["build", *QUERY_VALUES]),
            "min_version": st.sampled_from(["", "2.0.0", *QUERY_VALUES]),
        },
        body=lambda w: anything(),  # the binary: any bytes
    ),
    Endpoint("GET", "/api/device/firmware/packages", "admin", query=page_query, writes=False),
    Endpoint("GET", "/api/device/firmware/packages/{id}", "admin", writes=False),
    Endpoint("DELETE", "/api/device/firmware/packages/{id}", "admin"),
    Endpoint(
        "GET",
        "/api/device/firmware/packages/{id}/download",
        "user",
        query=lambda w: {"offset": st.sampled_from(["0", "1", *QUERY_VALUES])},
        stream=True,  # the answer is the binary, not JSON
        writes=False,
    ),
    Endpoint(
        "POST",
        "/api/device/firmware/devices/{id}/installed",
        "user",
        body=lambda w: obj(version=texts("1.0.0"), package_id=ints()),
    ),
    Endpoint("GET", "/api/device/firmware/devices/{id}/check", "user"),
    Endpoint(
        "POST",
        "/api/device/firmware/devices/{id}/progress",
        "user",
        body=lambda w: obj(
            state=value(st.sampled_from(["downloading", "updated", "failed", "queued", "x"])),
            reason=texts("flash error"),
            update_id=ints(),
        ),
    ),
    Endpoint(
        "GET", "/api/device/firmware/devices/{id}/updates", "user", query=page_query, writes=False
    ),
    Endpoint(
        "POST",
        "/api/device/firmware/rollouts",
        "admin",
        body=lambda w: obj(
            package_id=ints(),
            target=value(
                obj(
                    batch_ids=value(st.lists(ints(w.batch_id), max_size=3)),
                    device_ids=value(st.lists(ints(w.device["id"]), max_size=3)),
                )
            ),
            group_percents=value(st.lists(st.sampled_from(HOSTILE_NUMBERS), max_size=4)),
            success_threshold_percent=ints(0, 101),
            error_threshold_percent=ints(-1, 101),
        ),
    ),
    Endpoint("GET", "/api/device/firmware/rollouts", "admin", query=page_query, writes=False),
    Endpoint("GET", "/api/device/firmware/rollouts/{id}", "admin", writes=False),
    Endpoint("POST", "/api/device/firmware/rollouts/{id}/pause", "admin"),
    Endpoint("POST", "/api/device/firmware/rollouts/{id}/resume", "admin"),
    Endpoint("POST", "/api/device/firmware/rollouts/{id}/cancel", "admin"),
    Endpoint(
        "GET",
        "/api/device/firmware/rollouts/{id}/updates",
        "admin",
        query=lambda w: {
            **page_query(w),
            "group": st.sampled_from(["0", *QUERY_VALUES]),
            "state": st.sampled_from(["queued", "x", *QUERY_VALUES]),
        },
        writes=False,
    ),
    # Counted per MAC and per client address, a miss too.
    Endpoint(
        "GET",
        "/api/device/rtc-token/get_by_mac/",
        "none",
        query=lambda w: {
            "mac_address": st.sampled_from(QUERY_VALUES),
            "expire_time": st.sampled_from(QUERY_VALUES),
        },
        examples=FEW_EXAMPLES,
        writes=False,
    ),
]


def encode_query(params: dict[str, str]) -> str:
    """Values are sent as written: percent escapes stay raw bytes (``%FF``)."""
    return "&".join(f"{name}={value}" for name, value in params.items())


def check_rest_answer(response: requests.Response, path: str, stream: bool = False) -> None:
    assert response.status_code < 500, (response.status_code, path, response.content[:300])
    if response.status_code >= 400:
        assert_documented_error(response, path)
    elif response.status_code != 204 and not stream:
        assert response.headers.get("content-type", "").startswith("application/json")
        json.loads(response.content)


def rest_case(w: World, endpoint: Endpoint, draw, victim: str | None) -> None:
    path = endpoint.path
    if "{id}" in path:
        # DELETE never names the world's rows: the other endpoints need them.
        world_ids = [] if endpoint.method == "DELETE" else w.ids(path)
        path = path.replace("{id}", draw(st.sampled_from([*world_ids, "987654", *PATH_IDS])))
    if endpoint.query is not None:
        params = {name: draw(strategy) for name, strategy in endpoint.query(w).items()}
        path += "?" + encode_query(params)
    headers: dict[str, str | bytes] = {"content-type": "application/json"}
    token = {"none": None, "user": w.token, "admin": w.admin, "victim": victim}[endpoint.auth]
    if token and draw(st.integers(0, 9)) == 0:
        token = draw(st.sampled_from(["x", "a.b.c", "\u00e9t\u00e9", w.token + "x"]))
    if token:
        headers["authorization"] = f"Bearer {token}".encode()
    data = None
    if endpoint.body is not None:
        data = corrupt(
            to_json(draw(endpoint.body(w))),
            draw(
                st.sampled_from(
                    ["none"] * 3 + ["invalid-utf8", "truncated", "nul-byte", "bare-array"]
                )
            ),
        )
    before = w.snapshot() if endpoint.writes else None
    try:
        response = requests.request(
            endpoint.method,
            w.stack.url(path),
            data=data,
            headers=headers,
            # A stream that stays silent is an accepted subscription (nothing pending).
            timeout=(REQUEST_TIMEOUT, STREAM_WAIT) if endpoint.stream else REQUEST_TIMEOUT,
            stream=endpoint.stream,
        )
    except requests.ReadTimeout:
        if endpoint.stream:
            return
        raise
    try:
        check_rest_answer(response, path, endpoint.stream)
    finally:
        response.close()
    if before is not None and response.status_code >= 400:
        assert w.snapshot() == before, f"{endpoint.name} {response.status_code} wrote"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_rest_endpoint_survives_hostile_input(world, endpoint):
    victim = world.stack.new_user()[1] if endpoint.auth == "victim" else None

    @settings(FUZZ_SETTINGS, max_examples=endpoint.examples)
    @given(st.data())
    def fuzz(data):
        rest_case(world, endpoint, data.draw, victim)

    with world.budget("rest"):
        fuzz()


def test_websocket_handshake_survives_hostile_input(world):
    @settings(FUZZ_SETTINGS)
    @given(
        user_id=st.sampled_from(["me", "0", "99999999999", "%C2%B2", "-1", "abc"]),
        query=st.sampled_from(
            ["", "&after_id=%C2%B2", "&after_id=99999999999999999999999", "&after_id=%00", "&x=%FF"]
        ),
        token=st.sampled_from(["good", "", "bad", "%00"]),
    )
    def fuzz(user_id: str, query: str, token: str):
        websocket_case(world, user_id, query, token)

    with world.budget("rest"):
        fuzz()


def websocket_case(world: World, user_id: str, query: str, token: str) -> None:
    target = str(world.account_id) if user_id == "me" else user_id
    token_text = world.token if token == "good" else token
    base = world.stack.rest_url.replace("http://", "ws://")
    url = f"{base}/api/device/messages/{target}/?token={token_text}{query}"
    try:
        with connect(url, open_timeout=REQUEST_TIMEOUT) as socket:
            socket.send(json.dumps({"ack": [1e300]}))
    except InvalidStatus as error:
        response = error.response
        assert response.status_code < 500, (url, response.status_code, response.body[:300])
        assert response.headers.get("content-type", "").startswith("application/json"), (
            url,
            response.status_code,
            response.headers.get("content-type"),
            response.body[:300],
        )
        body = json.loads(response.body)
        assert set(body) == {"status", "message", "code"}, body
    except InvalidHandshake as error:
        pytest.fail(f"{url}: {error!r}")


# --- gRPC -----------------------------------------------------------------------------

BAD_CODES = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
}
INT_EXTREMES = {
    FieldDescriptor.TYPE_INT32: [0, 1, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_UINT32: [0, 1, 2**32 - 1],
    FieldDescriptor.TYPE_INT64: [0, 1, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_UINT64: [0, 1, 2**64 - 1],
}
GRPC_TEXT = [t for t in HOSTILE_TEXT if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]
ACCOUNT_CHANGING = {"DeleteMyAccount", "ChangeMyPassword", "SetAccountAdmin"}
RAW_REQUESTS = [b"\x0a\x03\xff\xfe\xfd", b"\x0a\x05ab", b"\xff" * 8, b"\x12\x02\x0a\xc3"]

pool = descriptor_pool.Default()
METHODS = [method for name in SERVICE_NAMES for method in pool.FindServiceByName(name).methods]


def message_strategy(descriptor, depth: int = 0) -> st.SearchStrategy:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Value":
        return st.sampled_from(
            [
                {"number_value": float("nan")},
                {"number_value": float("inf")},
                {"number_value": -0.0},
                {"number_value": 1e300},
                {"string_value": "1e400"},
                {"string_value": "\x00"},
                {"null_value": 0},
            ]
        ).map(lambda fields: cls(**fields))
    fields: dict[str, st.SearchStrategy] = {}
    for item in descriptor.fields:
        if item.message_type is not None:
            if depth >= 3 or item.message_type.GetOptions().map_entry:
                continue
            strategy = message_strategy(item.message_type, depth + 1)
        elif item.type == FieldDescriptor.TYPE_STRING:
            strategy = st.one_of(
                st.sampled_from(GRPC_TEXT),
                st.text(max_size=20).filter(
                    lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)
                ),
            )
        elif item.type in INT_EXTREMES:
            strategy = st.sampled_from(INT_EXTREMES[item.type])
        elif item.type == FieldDescriptor.TYPE_BOOL:
            strategy = st.booleans()
        elif item.type == FieldDescriptor.TYPE_ENUM:
            strategy = st.sampled_from([v.number for v in item.enum_type.values])
        else:
            continue
        fields[item.name] = st.lists(strategy, max_size=3) if item.is_repeated else strategy
    return st.fixed_dictionaries({}, optional=fields).map(lambda given: _build(cls, given))


def _build(cls, given: dict):
    message = cls()
    for name, item in given.items():
        target = getattr(message, name)
        if isinstance(item, list):
            for element in item:
                if hasattr(element, "DESCRIPTOR"):
                    target.add().CopyFrom(element)
                else:
                    target.append(element)
        elif hasattr(item, "DESCRIPTOR"):
            target.CopyFrom(item)
        else:
            setattr(message, name, item)
    return message


def check_grpc_error(error: grpc.RpcError, method: str) -> None:
    code = error.code()
    assert code not in BAD_CODES, (method, code, error.details())
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return
    status = rpc_status.from_call(error)
    assert status is not None and status.details, (method, code, error.details())
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "devicehub", (method, status)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_grpc_method_survives_hostile_input(world, method):
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = world.stack.channel()
    call = channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
    throttled = method.name in ("CreateToken", "GetRtcTokenByMac")
    # Bytes that are no field of an empty request parse as unknown fields: even raw
    # junk can delete the calling account.
    victim = world.stack.new_user()[1] if method.name in ACCOUNT_CHANGING else None

    @settings(FUZZ_SETTINGS, max_examples=FEW_EXAMPLES if throttled else MAX_EXAMPLES)
    @given(
        request=st.one_of(
            message_strategy(method.input_type).map(lambda m: m.SerializeToString()),
            st.sampled_from(RAW_REQUESTS),
        ),
        admin=st.booleans(),
    )
    def fuzz(request: bytes, admin: bool):
        token = victim or (world.admin if admin else world.token)
        writes = not method.name.startswith(("Get", "List", "Check", "Subscribe", "Ping"))
        before = world.snapshot() if writes else None
        try:
            if method.server_streaming:
                stream = call(request, metadata=metadata(token), timeout=STREAM_WAIT)
                try:
                    next(iter(stream))
                finally:
                    stream.cancel()
            else:
                call(request, metadata=metadata(token), timeout=REQUEST_TIMEOUT)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                return
            check_grpc_error(error, path)
            if before is not None and error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                assert world.snapshot() == before, f"{path} {error.code()} wrote"

    with world.budget("grpc"):
        fuzz()
