"""Voice sessions: which RTC room and identity a user or a device gets a token for.

Each account has one room (its id, zero-padded to 8 digits). A user's token is for the
room of their account and their primary bound device; a device asks by MAC address (it
has no user token) and gets a token only while it is registered, bound and active, at
most ``requests_per_minute`` times per MAC address per one-minute window, counted in the
database so every server process shares the limit.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from devicehub import rtc, validation
from devicehub.db import database
from devicehub.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from devicehub.models import Binding, Device, DeviceType
from devicehub.security import Caller
from devicehub.v1 import error_pb2 as reasons

DEFAULT_TTL = 86_400
MIN_TTL = 60
MAX_TTL = 7 * 86_400


@dataclass(frozen=True)
class RtcGrant:
    """A token and the session it is for."""

    token: str
    room_id: str
    user_id: str
    app_id: str
    expire_time: int
    task_id: str
    device_code: str
    device_type: str


class MacRateLimiter:
    """A one-minute window of requests per MAC address, counted in the database.

    One upsert per request: it opens a new window when the last one is over, else counts
    the request in it, and returns the count, atomically on SQLite and PostgreSQL.
    """

    WINDOW_SECONDS = 60.0
    _COUNT = (
        "INSERT INTO rtc_mac_window (mac_address, window_started, requests) VALUES (%s, %s, 1)"
        " ON CONFLICT (mac_address) DO UPDATE SET"
        " requests = CASE WHEN rtc_mac_window.window_started <= %s THEN 1"
        " ELSE rtc_mac_window.requests + 1 END,"
        " window_started = CASE WHEN rtc_mac_window.window_started <= %s"
        " THEN excluded.window_started ELSE rtc_mac_window.window_started END"
        " RETURNING requests"
    )

    def __init__(self, requests_per_minute: int) -> None:
        self._limit = requests_per_minute

    def check(self, mac: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        expired = now - self.WINDOW_SECONDS
        sql = self._COUNT.replace("%s", database.param)
        (requests,) = database.execute_sql(sql, (mac, now, expired, expired)).fetchone()
        if requests > self._limit:
            raise ResourceExhausted(
                "Too many token requests for this device; try again in a minute",
                reasons.ERROR_REASON_RATE_LIMITED,
            )


@dataclass(frozen=True)
class RtcIssuer:
    """Issues tokens with the configured Volcano Engine app."""

    app_id: str
    app_key: str

    def _grant(self, account_id: int, user_id: str, device: Device, ttl: int) -> RtcGrant:
        if not (self.app_id and self.app_key):
            raise Unavailable("RTC is not configured", reasons.ERROR_REASON_RTC_NOT_CONFIGURED)
        ttl = ttl or DEFAULT_TTL
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise InvalidArgument(f"expire_time must be {MIN_TTL} to {MAX_TTL} seconds")
        room_id = f"{account_id:08d}"
        token, _ = rtc.new_token(self.app_id, self.app_key, room_id, user_id, ttl)
        return RtcGrant(
            token=token,
            room_id=room_id,
            user_id=user_id,
            app_id=self.app_id,
            expire_time=ttl,
            task_id=f"task-{uuid.uuid4().hex[:12]}",
            device_code=device.device_code,
            device_type=device.device_type.name,
        )

    def for_user(self, caller: Caller, ttl: int) -> RtcGrant:
        """A token for the caller, in their account's room, with their primary device."""
        binding = (
            Binding.select(Binding, Device, DeviceType)
            .join(Device)
            .join(DeviceType)
            .where(Binding.account == caller.account_id)
            .order_by(Binding.is_primary.desc(), Binding.id)
            .first()
        )
        if binding is None:
            raise NotFound("No bound device", reasons.ERROR_REASON_NO_BOUND_DEVICE)
        return self._grant(caller.account_id, str(caller.account_id), binding.device, ttl)

    def for_device(self, mac_address: str, ttl: int, limiter: MacRateLimiter) -> RtcGrant:
        """A token for a bound, active device, in its account's room."""
        mac = validation.mac_address("mac_address", mac_address)
        limiter.check(mac)
        binding = (
            Binding.select(Binding, Device, DeviceType)
            .join(Device)
            .join(DeviceType)
            .where((Device.mac_address == mac) & (Device.is_active == True))  # noqa: E712
            .first()
        )
        if binding is None:
            raise NotFound("Device not found", reasons.ERROR_REASON_DEVICE_NOT_FOUND)
        device = binding.device
        return self._grant(binding.account_id, f"device-{device.id}", device, ttl)
