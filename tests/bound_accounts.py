"""Fresh accounts with a device bound to them through the API, for the tests that need a
recipient of messages or an owner of RTC tokens."""

from __future__ import annotations

from devicehub.testing.stack import Stack

from api_client import new_device

USER_DEVICES = "/api/device/user-devices/"


def user_with_bound_device(stack: Stack) -> tuple[dict, str]:
    """A fresh non-admin account with one bound device, and its token."""
    account, token = stack.new_user()
    device = new_device(stack)
    response = stack.request(
        "POST",
        "/api/device/user-devices/bind/",
        token,
        json={"mac_address": device["mac_address"]},
    )
    assert response.status_code == 200, response.text
    return account, token


def bind(stack, token: str, device: dict, is_primary: bool = True) -> dict:
    response = stack.request(
        "POST",
        f"{USER_DEVICES}bind/",
        token,
        json={"mac_address": device["mac_address"], "is_primary": is_primary},
    )
    assert response.status_code == 200, response.text
    return response.json()


def user_with_primary_device(stack) -> tuple[dict, str, dict]:
    """A fresh account with one freshly registered device bound as primary."""
    account, token = stack.new_user()
    device = new_device(stack)
    bind(stack, token, device)
    return account, token, device
