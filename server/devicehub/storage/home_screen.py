"""The home-screen read model: an account's children, each with its bound devices.

The app's home screen is its most frequent call: one hand-written query (no ORM query
building; prepared once per connection on PostgreSQL, and run on the event loop when one
of its connections is free: ``db.read_on_loop``), which also tells a missing account (no
row at all) from one without children (one row of NULLs). A row is the query's tuple
itself, named (``HomeRow``): no mapping or object is built per column or row.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from devicehub.storage.db import is_postgres, read_on_loop


class HomeRow(NamedTuple):
    """One home-screen row: a child and one of its devices; without a device, every
    device field is None. The fields are the query's columns, in its order."""

    root_user_id: int
    child_id: int | None
    first_name: str
    last_name: str
    birthdate: dt.date
    gender: str
    device_id: int | None
    device_type_id: int | None
    now_firmware_id: int | None
    firmware_version: str | None
    unique_id: str | None
    device_code: str | None
    device_alias: str | None
    mac_address: str | None
    created_at: dt.datetime | None
    last_log_file_id: int | None


_HOME_SCREEN = """
SELECT a.id AS root_user_id, c.id AS child_id, c.first_name, c.last_name, c.birthdate,
       c.gender, d.id AS device_id, d.device_type_id, d.now_firmware_id,
       d.firmware_version, d.unique_id, d.device_code, d.device_alias, d.mac_address,
       d.created_at, d.last_log_file_id
FROM account a
LEFT JOIN child c ON c.root_user_id = a.id
LEFT JOIN binding b ON b.child_id = c.id
LEFT JOIN device d ON d.id = b.device_id
WHERE a.id = %s
ORDER BY c.id, b.id
"""


async def home_screen(account_id: int) -> list[HomeRow] | None:
    """One row per (child, bound device) of the account, a child without a device with
    its device fields None; None if the account does not exist."""
    records = await read_on_loop("home_screen", _HOME_SCREEN, (account_id,))
    if not records:
        return None
    if records[0][1] is None:  # the account has no children: its one row of NULLs
        return []
    rows = list(map(HomeRow._make, records))
    if is_postgres():
        return rows
    # SQLite returns dates and times as the text peewee stored; PostgreSQL as Python values.
    return [
        row._replace(
            birthdate=dt.date.fromisoformat(str(row.birthdate)),
            created_at=None
            if row.created_at is None
            else dt.datetime.fromisoformat(str(row.created_at)),
        )
        for row in rows
    ]
