"""Row locks that serialise concurrent changes of one account, one child or one device
type's rollouts.

Taken inside the caller's transaction and held until it ends. PostgreSQL locks the rows
(``SELECT ... FOR UPDATE``); SQLite needs nothing, since its transactions begin by taking
the database's one write lock (``lock_type="IMMEDIATE"`` in ``db.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from devicehub.storage.db import is_postgres
from devicehub.storage.models import Account, Child, DeviceType


def lock_account(account_id: int) -> None:
    if is_postgres():
        Account.select(Account.id).where(Account.id == account_id).for_update().execute()


def lock_accounts(account_ids: Iterable[int]) -> None:
    """Locks the accounts' rows in id order, in one statement (``lock_account`` for many)."""
    if is_postgres():
        Account.select(Account.id).where(Account.id.in_(list(account_ids))).order_by(
            Account.id
        ).for_update().execute()


def lock_children(child_ids: Iterable[int]) -> None:
    """Locks the children's rows in id order, so two callers never wait on each other."""
    if is_postgres():
        Child.select(Child.id).where(Child.id.in_(list(child_ids))).order_by(
            Child.id
        ).for_update().execute()


def lock_device_type(device_type_id: int) -> None:
    """Serialises the creation of rollouts of one device type: each checks that its
    devices are in no other rollout, which a concurrent creation would not yet show."""
    if is_postgres():
        DeviceType.select(DeviceType.id).where(
            DeviceType.id == device_type_id
        ).for_update().execute()
