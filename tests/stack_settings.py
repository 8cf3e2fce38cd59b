"""The settings every stack of the test suite runs with, and the database of each backend.

A stack reaches fake third parties (tests/fake_alimtalk.py, tests/fake_weather.py), signs
with a secret the tests know, and raises the per-address throttles the whole suite would
otherwise hit from 127.0.0.1 (tests/stack/test_throttle.py runs the defaults).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import fake_alimtalk

from devicehub.testing.stack import serve_env, unique

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "test-secret-" + uuid.uuid4().hex
ADMIN_PASSWORD = "admin-password-1"
RTC_APP_ID = "0123456789abcdef01234567"
RTC_APP_KEY = "rtc-app-key-for-tests"


# Every test reaches the session stack from one address (127.0.0.1): its address throttles
# are far above what the suite sends (test_throttle.py runs the defaults).
RAISED_THROTTLES = {
    "DEVICEHUB_RTC_ADDRESS_MACS": "1000000",
    "DEVICEHUB_RTC_ADDRESS_MISSES": "1000000",
    "DEVICEHUB_LOGIN_FAILURES_PER_ADDRESS": "1000000",
    "DEVICEHUB_LOGIN_FAILURES_PER_USERNAME": "1000000",
    "DEVICEHUB_REGISTRATIONS_PER_ADDRESS": "1000000",
}


FIRMWARE_MAX_BYTES = 6 * 1024 * 1024
"""The test stacks' DEVICEHUB_FIRMWARE_MAX_BYTES: above the edge's 4 MiB JSON body limit."""


def stack_env(
    tmp: Path,
    database_url: str,
    alimtalk_url: str = "",
    weather_url: str = "",
    *,
    default_throttles: bool = False,
) -> dict[str, str]:
    """The environment of a test stack; ``default_throttles``: the per-address throttles
    as shipped, not raised."""
    return serve_env(
        tmp,
        database_url,
        SECRET_KEY,
        DEVICEHUB_ALIMTALK_BASE_URL=alimtalk_url,
        DEVICEHUB_ALIMTALK_APP_KEY=fake_alimtalk.APP_KEY,
        DEVICEHUB_ALIMTALK_SECRET_KEY=fake_alimtalk.SECRET_KEY,
        DEVICEHUB_ALIMTALK_SENDER_KEY=fake_alimtalk.SENDER_KEY,
        DEVICEHUB_ALIMTALK_TEMPLATE_CODE=fake_alimtalk.TEMPLATE_CODE,
        DEVICEHUB_ALIMTALK_TIMEOUT="2",
        DEVICEHUB_WEATHER_GEOCODING_URL=weather_url or "http://127.0.0.1:9",
        DEVICEHUB_WEATHER_FORECAST_URL=weather_url or "http://127.0.0.1:9",
        DEVICEHUB_WEATHER_TIMEOUT="2",
        DEVICEHUB_RTC_APP_ID=RTC_APP_ID,
        DEVICEHUB_RTC_APP_KEY=RTC_APP_KEY,
        **({} if default_throttles else RAISED_THROTTLES),
        # Firmware: a small package limit (the 413 tests send just over it), and a
        # scheduler quick enough for rollout tests (the pacing test sets its own pace).
        DEVICEHUB_FIRMWARE_MAX_BYTES=str(FIRMWARE_MAX_BYTES),
        DEVICEHUB_FIRMWARE_TICK="0.2",
        DEVICEHUB_FIRMWARE_NOTIFY_PER_MINUTE="60000",
        # Every stack runs worker processes, like a production server on a 2-core machine.
        DEVICEHUB_WORKERS="2",
        # Session stacks keep their tokens for the whole run: with the 15-minute default
        # they expired mid-run on a loaded machine (every later call 401 TOKEN_EXPIRED).
        # Tests of expiry issue their own short-lived tokens.
        DEVICEHUB_ACCESS_TOKEN_TTL="14400",
    )


def backend_database(request, backend: str, tmp: Path, cluster: str = "pg_cluster") -> str:
    """The database of a stack of ``backend``: a SQLite file in ``tmp``, or a new database
    in the PostgreSQL cluster of the session fixture named ``cluster``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'devicehub.sqlite3'}"
    return request.getfixturevalue(cluster).create_database(unique("dh").lower())
