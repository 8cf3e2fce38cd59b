"""What tests do to a running stack, beyond one assertion: build the rows they need through
the API (types, batches, devices, children, a connected Lux device), read what no API
exposes straight from its database, and time throttle windows.

Every builder asserts that its call succeeded, so a test fails where its setup broke.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from devicehub.testing.stack import Stack, unique


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def random_mac() -> str:
    return ":".join(f"{b:02X}" for b in uuid.uuid4().bytes[:6])


def within_one_window(seconds: float, needed: float) -> None:
    """Throttle windows are fixed and aligned to the clock (every process agrees on them):
    waits for a fresh window when the current one ends within ``needed`` seconds, so that
    a test counting hits never sees its counts start again halfway."""
    remaining = seconds - time.time() % seconds
    if remaining < needed:
        time.sleep(remaining + 0.5)


def list_all(stack: Stack, path: str, token: str) -> list[dict]:
    response = stack.request("GET", path, token)
    assert response.status_code == 200, response.text
    return response.json()


def create_type(stack: Stack, token: str, code: str | None = None, name: str = "智能音箱") -> dict:
    response = stack.request(
        "POST",
        "/api/device/device-types/",
        token,
        json={"name": name, "code": code or unique("T"), "description": "test type"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def create_batch(stack: Stack, token: str, device_type: int) -> dict:
    response = stack.request(
        "POST",
        "/api/device/device-batches/",
        token,
        json={
            "device_type": device_type,
            "batch_number": unique("B"),
            "production_date": "2023-01-01",
            "quantity": 500,
            "description": "test batch",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def create_device(stack: Stack, token: str, device_type: int, batch: int) -> dict:
    response = stack.request(
        "POST",
        "/api/device/devices/",
        token,
        json={
            "device_type": device_type,
            "batch": batch,
            "serial_number": unique("S"),
            "mac_address": random_mac(),
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def batch_create_devices(
    stack: Stack, token: str, device_type: int, batch: int, count: int, mac_prefix: str
) -> list[int]:
    """Registers ``count`` devices with batch_create (serials from 00001); their ids."""
    response = stack.request(
        "POST",
        "/api/device/devices/batch_create/",
        token,
        json={
            "device_type": device_type,
            "batch": batch,
            "start_serial": "00001",
            "count": count,
            "mac_prefix": mac_prefix,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def new_device(stack: Stack) -> dict:
    """A freshly registered (unbound) device of a fresh type and batch."""
    admin = stack.admin_token
    device_type = create_type(stack, admin)
    batch = create_batch(stack, admin, device_type["id"])
    return create_device(stack, admin, device_type["id"], batch["id"])


def create_child(stack: Stack, token: str, first_name: str = "Min") -> dict:
    response = stack.request(
        "POST",
        "/api/v1/accounts/children",
        token,
        json={
            "first_name": first_name,
            "last_name": "Kim",
            "birthdate": "2015-03-01",
            "gender": "female",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def connect(stack: Stack, token: str, device: dict, child_id: int):
    return stack.request(
        "POST",
        "/api/v1/lux/device/set-my-device",
        token,
        params={
            "serial_code": device["device_code"],
            "mac_id": device["mac_address"],
            "unique_id": device["unique_id"],
            "real_user_id": child_id,
        },
    )


@dataclass
class LuxSetup:
    """A non-admin parent with a child, and a registered device bound to that child."""

    token: str
    account: dict
    child: dict
    device: dict


def lux_setup(stack: Stack) -> LuxSetup:
    """A fresh parent with a child and a new device connected to it."""
    account, token = stack.new_user()
    child = create_child(stack, token)
    device = new_device(stack)
    response = connect(stack, token, device, child["id"])
    assert response.status_code == 200, response.text
    return LuxSetup(token=token, account=account, child=child, device=device)


def query_database(stack: Stack, sql: str, params: tuple = ()) -> list[tuple]:
    """Reads the stack's database directly (for what no API exposes, e.g. temp records).

    ``sql`` uses ``?`` placeholders on both databases.
    """
    if stack.backend == "sqlite":
        import sqlite3

        path = stack.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as connection:
            return connection.execute(sql, params).fetchall()
    import psycopg2

    with psycopg2.connect(stack.database_url) as connection, connection.cursor() as cursor:
        cursor.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall()
