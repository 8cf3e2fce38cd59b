"""The home-screen read model: an account's children, each with its bound devices.

The app's home screen is its most frequent call: one hand-written query (no ORM query
building; prepared once per connection on PostgreSQL), which also tells a missing
account (no row at all) from one without children (one row of NULLs).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from devicehub.storage.db import execute, named_rows


@dataclass(frozen=True)
class HomeDevice:
    """The device half of a home-screen row."""

    id: int
    device_type_id: int
    now_firmware_id: int
    firmware_version: str
    unique_id: str
    device_code: str
    device_alias: str
    mac_address: str
    created_at: dt.datetime
    last_log_file_id: int


@dataclass(frozen=True)
class HomeRow:
    """One home-screen row: a child and one of its devices (None: no device)."""

    child_id: int
    root_user_id: int
    first_name: str
    last_name: str
    birthdate: dt.date
    gender: str
    device: HomeDevice | None


_HOME_SCREEN = """
SELECT c.id AS child_id, c.first_name, c.last_name, c.birthdate, c.gender,
       d.id AS device_id, d.device_type_id, d.now_firmware_id, d.firmware_version,
       d.unique_id, d.device_code, d.device_alias, d.mac_address, d.created_at,
       d.last_log_file_id
FROM account a
LEFT JOIN child c ON c.root_user_id = a.id
LEFT JOIN binding b ON b.child_id = c.id
LEFT JOIN device d ON d.id = b.device_id
WHERE a.id = %s
ORDER BY c.id, b.id
"""


def home_screen(account_id: int) -> list[HomeRow] | None:
    """One row per (child, bound device) of the account, a child without a device with
    ``device`` None; None if the account does not exist."""
    records = named_rows(execute(_HOME_SCREEN, (account_id,), prepare_as="home_screen"))
    if not records:
        return None
    return [
        _home_row(account_id, record)
        for record in records
        if record["child_id"] is not None  # else the account has no children
    ]


def _home_row(account_id: int, record: dict[str, Any]) -> HomeRow:
    device = None
    if record["device_id"] is not None:
        device = HomeDevice(
            id=record["device_id"],
            device_type_id=record["device_type_id"],
            now_firmware_id=record["now_firmware_id"],
            firmware_version=record["firmware_version"],
            unique_id=record["unique_id"],
            device_code=record["device_code"],
            device_alias=record["device_alias"],
            mac_address=record["mac_address"],
            created_at=_as_datetime(record["created_at"]),
            last_log_file_id=record["last_log_file_id"],
        )
    return HomeRow(
        child_id=record["child_id"],
        root_user_id=account_id,
        first_name=record["first_name"],
        last_name=record["last_name"],
        birthdate=_as_date(record["birthdate"]),
        gender=record["gender"],
        device=device,
    )


# SQLite returns dates and times as the text peewee stored; PostgreSQL as Python values.
def _as_datetime(value: dt.datetime | str) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def _as_date(value: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value
