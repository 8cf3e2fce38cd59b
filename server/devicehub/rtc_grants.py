"""Voice sessions: which RTC room and identity a user or a device gets a token for.

Each account has one room (its id, zero-padded to 8 digits). A user's token is for the
room of their account and their primary bound device. A device asks by MAC address (it
has no user token, as documented) and gets a token only while it is registered, bound and
active. MAC addresses are not secrets (``batch_create`` makes them prefix + serial), so:

- **Device secrets.** An admin issues a device (or a whole batch) a secret for factory
  tooling to write into the firmware. The secret is derived, not stored:
  ``hex(HMAC-SHA256(server signing key, "device-secret:<device id>:<generation>"))``; the
  database keeps only its generation and SHA-256 (``device_credential``), which shows that
  it was issued and which one is current. Issuing again bumps the generation, so the old
  secret stops working; changing the server's signing key invalidates every secret (the
  stored SHA-256 no longer matches), and they must be issued again.
- **Signed calls.** Firmware sends ``timestamp`` (Unix seconds) and ``signature`` =
  ``hex(HMAC-SHA256(secret, "<MAC>:<timestamp>"))``, the MAC upper case with ``:``. A
  timestamp more than ``max_skew`` seconds from the server's clock is stale, and each
  signature is accepted once (it is counted in the throttle table until its timestamp is
  stale anyway), so a captured call cannot be replayed.
- **Modes** (``DEVICEHUB_RTC_DEVICE_AUTH``): ``optional`` (default) checks a signed call and
  throttles unsigned ones by client address; ``required`` refuses unsigned calls with 401;
  ``off`` ignores signatures (every call is throttled as unsigned).
- **Throttles.** Every call counts against its MAC (``mac_requests_per_minute``). Unsigned
  calls also count against the client's address: distinct MACs asked and misses (404s) per
  window. Each counts as a miss before the device is looked up and is taken back once
  found: an address over its limit learns nothing more, found or not, and concurrent
  guesses cannot all pass the check before the first miss is recorded. Signed calls skip
  the address limits (many signing devices may share one NAT address): they reveal
  nothing without the secret, since every failure (no such device, no secret, wrong,
  stale or used signature) is the same 401.
- Every token issued to a device is logged with account, device and client address (never
  the token, the secret or the signature).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass

from peewee import EXCLUDED

from devicehub import throttle, validation
from devicehub.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from devicehub.integrations import volcano_token
from devicehub.security import Caller
from devicehub.storage.db import database
from devicehub.storage.models import (
    Binding,
    Device,
    DeviceBatch,
    DeviceCredential,
    DeviceType,
    utcnow,
)
from devicehub.throttle import Limit, Throttled, Window
from devicehub.v1 import error_pb2 as reasons

log = logging.getLogger(__name__)

DEFAULT_TTL = 86_400
MIN_TTL = 60
MAX_TTL = 7 * 86_400
MAX_SECRETS_PER_CALL = 1000
MAC_WINDOW_SECONDS = 60

OFF, OPTIONAL, REQUIRED = "off", "optional", "required"

SIGNATURE_INVALID = "Invalid device signature"
SIGNATURE_REQUIRED = "Device signature required"
TOO_MANY = "Too many token requests; try again later"


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


@dataclass(frozen=True)
class IssuedSecret:
    """A device secret as issued: shown to the caller once, never stored."""

    device: Device
    secret: str
    generation: int


class DeviceSecrets:
    """Derives and checks device secrets from the server's signing key."""

    def __init__(self, signing_key: str) -> None:
        self._key = signing_key.encode()

    def secret(self, device_id: int, generation: int) -> str:
        message = f"device-secret:{device_id}:{generation}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    @staticmethod
    def digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def issue(self, caller: Caller, device_ids: list[int], batch_id: int) -> list[IssuedSecret]:
        """New secrets for the devices named, or for every device of the batch."""
        if not caller.is_admin:
            raise PermissionDenied("Only admins can issue device secrets")
        if bool(device_ids) == bool(batch_id):
            raise InvalidArgument("give either device_ids or batch_id")
        too_many = InvalidArgument(
            f"at most {MAX_SECRETS_PER_CALL} devices per call", reasons.ERROR_REASON_BATCH_TOO_LARGE
        )
        if len(set(device_ids)) > MAX_SECRETS_PER_CALL:
            raise too_many
        with database.atomic():
            if batch_id:
                if not DeviceBatch.select().where(DeviceBatch.id == batch_id).exists():
                    raise NotFound(
                        "Device batch not found", reasons.ERROR_REASON_DEVICE_BATCH_NOT_FOUND
                    )
                query = Device.select().where(Device.batch == batch_id)
            else:
                query = Device.select().where(Device.id.in_(sorted(set(device_ids))))
            devices = list(query.order_by(Device.id).limit(MAX_SECRETS_PER_CALL + 1))
            if len(devices) > MAX_SECRETS_PER_CALL:
                raise too_many
            if not batch_id:
                missing = sorted(set(device_ids) - {device.id for device in devices})
                if missing:
                    raise NotFound(
                        f"Device not found: {missing[0]}", reasons.ERROR_REASON_DEVICE_NOT_FOUND
                    )
            credentials = DeviceCredential.select().where(
                DeviceCredential.device.in_([device.id for device in devices])
            )
            generations = {row.device_id: row.generation for row in credentials}
            issued = [
                IssuedSecret(device, self.secret(device.id, generation), generation)
                for device in devices
                for generation in (generations.get(device.id, 0) + 1,)
            ]
            now = utcnow()
            rows = [
                {
                    "device": item.device.id,
                    "generation": item.generation,
                    "secret_sha256": self.digest(item.secret),
                    "issued_at": now,
                    "issued_by": caller.account_id,
                }
                for item in issued
            ]
            for start in range(0, len(rows), 200):
                DeviceCredential.insert_many(rows[start : start + 200]).on_conflict(
                    conflict_target=[DeviceCredential.device],
                    update={
                        DeviceCredential.generation: EXCLUDED.generation,
                        DeviceCredential.secret_sha256: EXCLUDED.secret_sha256,
                        DeviceCredential.issued_at: EXCLUDED.issued_at,
                        DeviceCredential.issued_by: EXCLUDED.issued_by_id,
                    },
                ).execute()
        return issued

    def verify(self, device: Device, mac: str, timestamp: int, signature: str) -> bool:
        """Whether ``signature`` is the device's current secret's HMAC of MAC and time."""
        credential = DeviceCredential.get_or_none(DeviceCredential.device == device.id)
        if credential is None:
            return False
        secret = self.secret(device.id, credential.generation)
        if not hmac.compare_digest(self.digest(secret), credential.secret_sha256):
            return False  # issued under another signing key
        expected = hmac.new(secret.encode(), f"{mac}:{timestamp}".encode(), hashlib.sha256)
        given = signature.strip().lower().encode("utf-8", "surrogatepass")
        return hmac.compare_digest(expected.hexdigest().encode(), given)


@dataclass(frozen=True)
class DevicePolicy:
    """How ``get_by_mac`` authenticates and throttles devices (see the module docstring)."""

    mode: str = OPTIONAL
    mac_requests_per_minute: int = 10
    address_window: int = 600
    address_macs: int = 20
    address_misses: int = 10
    max_skew: int = 300

    @property
    def per_mac(self) -> Limit:
        return Limit("rtc-mac", self.mac_requests_per_minute, MAC_WINDOW_SECONDS)

    @property
    def seen(self) -> Limit:  # membership of (address, MAC) in the window: hits unused
        return Limit("rtc-address-mac", 0, self.address_window)

    @property
    def distinct_macs(self) -> Limit:
        return Limit("rtc-address-macs", self.address_macs, self.address_window)

    @property
    def misses(self) -> Limit:
        return Limit("rtc-address-misses", self.address_misses, self.address_window)


@dataclass(frozen=True)
class DeviceRequest:
    """A ``get_by_mac`` call as the device sent it."""

    mac_address: str
    ttl: int
    address: str
    timestamp: int = 0
    signature: str = ""


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
        token, _ = volcano_token.new_token(self.app_id, self.app_key, room_id, user_id, ttl)
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

    def for_device(
        self, request: DeviceRequest, policy: DevicePolicy, secrets: DeviceSecrets
    ) -> RtcGrant:
        """A token for a bound, active device, in its account's room."""
        mac = validation.mac_address("mac_address", request.mac_address)
        signed = policy.mode != OFF and bool(request.signature or request.timestamp)
        if not signed and policy.mode == REQUIRED:
            raise Unauthenticated(
                SIGNATURE_REQUIRED, reasons.ERROR_REASON_DEVICE_SIGNATURE_REQUIRED
            )
        now = time.time()
        # The address first: an address over its limits cannot use up a device's budget.
        # The call counts as a miss until it is found, so concurrent guesses cannot all
        # pass the check before the first miss is recorded.
        if not signed:
            self._check_address(policy, request.address, mac, now)
        window = policy.per_mac.hit(mac, now)
        if policy.per_mac.over(window):
            raise Throttled(
                "Too many token requests for this device; try again in a minute",
                window.retry_after(now),
            )
        binding = (
            Binding.select(Binding, Device, DeviceType)
            .join(Device)
            .join(DeviceType)
            .where(Device.mac_address == mac)
            .first()
        )
        device = binding.device if binding is not None else None
        if signed and device is None:
            device = Device.get_or_none(Device.mac_address == mac)
        if signed and not self._signature_valid(policy, secrets, device, mac, request, now):
            raise Unauthenticated(SIGNATURE_INVALID, reasons.ERROR_REASON_DEVICE_SIGNATURE_INVALID)
        if not signed and binding is not None and device is not None and device.is_active:
            throttle.undo([(policy.misses.scope, request.address)], now)  # not a miss
        if binding is None or device is None or not device.is_active:
            raise NotFound("Device not found", reasons.ERROR_REASON_DEVICE_NOT_FOUND)
        grant = self._grant(binding.account_id, f"device-{device.id}", device, request.ttl)
        log.info(
            "RTC token issued by MAC: account %d, device %d, address %s, %s",
            binding.account_id,
            device.id,
            request.address,
            "signed" if signed else "unsigned",
        )
        return grant

    @staticmethod
    def _check_address(policy: DevicePolicy, address: str, mac: str, now: float) -> None:
        """Counts an unsigned call as a miss of ``address`` (taken back once it is found) and
        its MAC as asked by it; refuses an address over ``address_misses`` misses or
        ``address_macs`` distinct MACs until the window ends."""
        misses = policy.misses.hit(address, now)
        if policy.misses.over(misses):
            # Refused before its MAC is counted: a call the address may not make does not
            # use up its budget of distinct MACs.
            raise Throttled(TOO_MANY, misses.retry_after(now))
        macs: Window | None
        if policy.seen.hit(f"{address} {mac}", now).hits == 1:
            macs = policy.distinct_macs.hit(address, now)
        else:
            macs = policy.distinct_macs.peek([address], now).get(address)
        if macs is not None and policy.distinct_macs.over(macs):
            raise Throttled(TOO_MANY, macs.retry_after(now))

    @staticmethod
    def _signature_valid(
        policy: DevicePolicy,
        secrets: DeviceSecrets,
        device: Device | None,
        mac: str,
        request: DeviceRequest,
        now: float,
    ) -> bool:
        if (
            device is None
            or not request.signature
            or abs(now - request.timestamp) > policy.max_skew
        ):
            return False
        if not secrets.verify(device, mac, request.timestamp, request.signature):
            return False
        # Accepted once: counted until the timestamp is stale, when it is refused anyway.
        used = throttle.count(
            "rtc-signature",
            request.signature.strip().lower(),
            request.timestamp + policy.max_skew + 1,
            now,
        )
        return used.hits == 1
