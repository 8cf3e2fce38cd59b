"""When a failed call is repeated: UNAVAILABLE, on idempotent methods only, with backoff.

UNAVAILABLE means the call did not get an answer from a working server: the connection was
refused or dropped (a restarting server, a worker process that died and is being replaced,
a network blip), or the service shed it. Whether the server did the work before the answer
was lost is unknown, so a call is repeated only when doing it twice is the same as doing it
once. That is a property of each method, decided here by name, once, rather than guessed
from a prefix: a method missing from ``IDEMPOTENT_METHODS`` is never retried, so a method
added to the protos later is safe until someone reads it and lists it.

Not listed, although some look harmless, because a second run is not the same as one:

- Create*, Register, Send*, Upload*, Bind*/Connect*, Issue*, GenerateRtcToken, CreateToken:
  each run makes something new (a row, a message, a secret, a token; a login also counts
  against the login throttle);
- GetRtcTokenByMac: a device's signed call is refused when it comes again (replay
  protection), and every call counts against the per-MAC throttle;
- Update*, Set*, Report*Firmware, Pause/Resume/Cancel*: the second run can overwrite a
  change someone made in between, or fail because the first one succeeded (a rollout that
  is paused already);
- Delete*, Unbind*, Disconnect*, ChangeMyPassword: the repeat of a call that succeeded fails
  (NOT_FOUND, a wrong old password), hiding the success;
- SubscribeMessages: ``Client.subscribe`` resumes it itself, from the last message it
  yielded (a blind repeat would replay from the caller's original ``after_id``).

Backoff is exponential with jitter ("equal jitter": a random delay between half the
ceiling and the ceiling), so the clients that one restart disconnected do not come back in
step, and the attempts are bounded both in number and by the call's deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

_PACKAGE = "devicehub.v1"


def _methods(service: str, *names: str) -> set[str]:
    return {f"/{_PACKAGE}.{service}/{name}" for name in names}


IDEMPOTENT_METHODS: frozenset[str] = frozenset(
    # Reads: they change nothing.
    _methods("SystemService", "Ping")
    | _methods("AccountService", "GetMyAccount", "ListChildren")
    # Refresh tokens are signed and stateless, not spent by their use: a repeat issues
    # another valid pair and changes nothing.
    | _methods("AuthService", "RefreshToken")
    | _methods("DeviceTypeService", "ListDeviceTypes", "GetDeviceType")
    | _methods("DeviceBatchService", "ListDeviceBatches", "GetDeviceBatch")
    | _methods("DeviceService", "ListDevices", "GetDevice")
    | _methods(
        "BindingService", "GetChildDevice", "ListChildDevices", "CheckDevice", "ListUserDevices"
    )
    | _methods("MovementService", "ListMovementSamples")
    | _methods(
        "FirmwareService",
        "ListFirmwarePackages",
        "GetFirmwarePackage",
        # A server stream; repeated only while it has delivered nothing (see Client).
        "DownloadFirmwarePackage",
        "GetInstalledFirmware",
        "ListDeviceFirmwareUpdates",
        "ListFirmwareRollouts",
        "GetFirmwareRollout",
        "ListFirmwareRolloutUpdates",
        # Writes that firmware.proto defines as repeatable: the check moves a `queued`
        # update to `notified` once, and a progress report of the state the update is
        # already in changes nothing ("a retried report").
        "CheckFirmwareUpdate",
        "ReportFirmwareUpdateProgress",
    )
    # Acknowledging is marking: a repeat leaves the same messages acknowledged (its
    # `acked` count then says 0, as the first run already changed them).
    | _methods("MessagingService", "AckMessages")
)
"""Full gRPC method names (``/devicehub.v1.DeviceService/GetDevice``) that are retried."""

RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently an idempotent call is repeated after UNAVAILABLE.

    The defaults wait up to about 8-16 s in all (a server restart takes a few seconds),
    never past the call's deadline. ``RetryPolicy(max_attempts=1)`` turns retries off.
    """

    max_attempts: int = 8
    """Attempts in all, the first one included."""
    initial_backoff: float = 0.2
    """Ceiling of the first delay, seconds."""
    max_backoff: float = 5.0
    """Ceiling of every delay, seconds."""
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff or self.multiplier < 1:
            raise ValueError("backoffs must be positive, initial <= max, multiplier >= 1")

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    def retries(self, method: str, code: grpc.StatusCode, attempt: int) -> bool:
        """Whether attempt number ``attempt`` of ``method``, failed with ``code``, is
        followed by another."""
        return (
            attempt < self.max_attempts and code in RETRYABLE_CODES and method in IDEMPOTENT_METHODS
        )
