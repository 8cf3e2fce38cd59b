"""Accounts: registration, credentials, the caller's child accounts, and the changes that
revoke an account's tokens (deletion, password, admin flag; see ``revocations.py``)."""

from __future__ import annotations

import datetime as dt
import re

import peewee

from devicehub import binding, revocations, validation
from devicehub.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from devicehub.pagination import Page, paginate
from devicehub.security import (
    INVALID_TOKEN_MESSAGE,
    Caller,
    hash_password,
    hash_password_bounded,
    verify_password_bounded,
)
from devicehub.storage.db import database, run_db
from devicehub.storage.models import Account, Binding, Child, utcnow
from devicehub.v1 import error_pb2

_USERNAME = re.compile(r"^[A-Za-z0-9@.+_-]{3,150}$")
_PHONE = re.compile(r"^\+?[0-9]{6,20}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise InvalidArgument("username must be 3 to 150 characters: letters, digits and @ . + - _")
    return value


def _password(value: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(value) <= MAX_PASSWORD_LENGTH:
        raise InvalidArgument(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    return value


def _phone(value: str) -> str:
    value = re.sub(r"[\s-]", "", value)
    if value and not _PHONE.match(value):
        raise InvalidArgument("phone must be 6 to 20 digits, optionally starting with +")
    return value


def register(
    username: str,
    password: str,
    phone: str = "",
    first_name: str = "",
    last_name: str = "",
    *,
    is_admin: bool = False,
    password_hash: str | None = None,
) -> Account:
    """Creates an account; raises AlreadyExists if the username is taken.

    ``password_hash``: the password's hash, when the caller computed it already (servers
    hash off the database threads, ``security.hash_password_bounded``).
    """
    fields = {
        "username": _username(username.strip()),
        "phone": _phone(phone),
        "first_name": validation.text("first_name", first_name, max_length=50, required=False),
        "last_name": validation.text("last_name", last_name, max_length=50, required=False),
    }
    password_hash = password_hash or hash_password(_password(password))
    taken = AlreadyExists("Username already exists", error_pb2.ERROR_REASON_USERNAME_TAKEN)
    with database.atomic():
        if Account.select().where(Account.username == fields["username"]).exists():
            raise taken
        try:
            return Account.create(password_hash=password_hash, is_admin=is_admin, **fields)
        except peewee.IntegrityError:
            raise taken from None


def get_account(account_id: int) -> Account:
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        raise NotFound("Account not found", error_pb2.ERROR_REASON_ACCOUNT_NOT_FOUND)
    return account


def _child_fields(first_name: str, last_name: str, birthdate: str, gender: str) -> dict:
    return {
        "first_name": validation.text("first_name", first_name, max_length=50),
        "last_name": validation.text("last_name", last_name, max_length=50),
        "birthdate": validation.date("birthdate", birthdate),
        "gender": validation.text("gender", gender, max_length=20),
    }


def create_child(
    caller: Caller, first_name: str, last_name: str, birthdate: str, gender: str
) -> Child:
    fields = _child_fields(first_name, last_name, birthdate, gender)
    with database.atomic():
        get_account(caller.account_id)
        return Child.create(root_user=caller.account_id, **fields)


def list_children(caller: Caller, page_size: int = 0, page_token: str = "") -> Page[Child]:
    query = Child.select().where(Child.root_user == caller.account_id)
    return paginate(query, Child, page_size, page_token)


def get_child(caller: Caller, child_id: int) -> Child:
    """One of the caller's children; anyone else's child is reported as missing."""
    child = Child.get_or_none((Child.id == child_id) & (Child.root_user == caller.account_id))
    if child is None:
        raise NotFound("Child account not found", error_pb2.ERROR_REASON_CHILD_NOT_FOUND)
    return child


def update_child(
    caller: Caller,
    child_id: int,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    birthdate: str | None = None,
    gender: str | None = None,
) -> Child:
    """Changes the given fields (``None`` keeps a field)."""
    with database.atomic():
        child = get_child(caller, child_id)
        current = {
            "first_name": child.first_name,
            "last_name": child.last_name,
            "birthdate": child.birthdate.isoformat(),
            "gender": child.gender,
        }
        given = {
            "first_name": first_name,
            "last_name": last_name,
            "birthdate": birthdate,
            "gender": gender,
        }
        merged = {key: current[key] if value is None else value for key, value in given.items()}
        for key, value in _child_fields(**merged).items():
            setattr(child, key, value)
        child.updated_at = utcnow()
        child.save()
        return child


def delete_child(caller: Caller, child_id: int) -> None:
    """Deletes the child with its usage history; its devices are unbound, not deleted."""
    with database.atomic():
        child = get_child(caller, child_id)
        binding.unbind_child_devices(child)
        child.delete_instance()


def get_account_for_token(caller: Caller) -> Account:
    """The account a refresh token speaks for; a deleted account, or a token issued before
    the account's tokens were revoked, cannot refresh."""
    account = Account.get_or_none(Account.id == caller.account_id)
    if account is None or account.token_version != caller.token_version:
        raise Unauthenticated(INVALID_TOKEN_MESSAGE)
    return account


# --- the caller's own account: deletion, password, admin flag ------------------------

WRONG_PASSWORD_MESSAGE = "Current password is incorrect"


def _locked_account(caller: Caller) -> Account:
    """The caller's account under its row lock, if the caller's token is still current."""
    binding.lock_account(caller.account_id)
    account = Account.get_or_none(Account.id == caller.account_id)
    if account is None or account.token_version != caller.token_version:
        # Revoked since the call was authenticated (a concurrent change).
        raise Unauthenticated(INVALID_TOKEN_MESSAGE)
    return account


def delete_account(caller: Caller, retention: dt.timedelta) -> revocations.Revocation:
    """Deletes the caller's account; its children go as ``delete_child`` deletes them
    (devices unbound, not deleted), and devices bound to the account are unbound."""
    with database.atomic():
        account = _locked_account(caller)
        for child in Child.select().where(Child.root_user == account.id):
            binding.unbind_child_devices(child)
        for row in Binding.select(Binding.id).where(Binding.account == account.id):
            binding.unbind_user_device(caller, row.id)
        # The database deletes the rest: children (with their usage history), messages,
        # notification attempts (ON DELETE CASCADE); messages it sent keep no sender.
        account.delete_instance()
        return revocations.record(account.id, None, retention)


async def change_password(
    caller: Caller, current_password: str, new_password: str, retention: dt.timedelta
) -> revocations.Revocation:
    """Sets a new password (the current one must be given) and revokes every token.

    Both hashes are computed on the bounded hashing executor, outside any transaction
    (SQLite's write lock is held from a transaction's first statement to its end)."""
    new_password = _password(new_password)
    account = await run_db(get_account, caller.account_id)
    if not await verify_password_bounded(account.password_hash, current_password):
        raise PermissionDenied(WRONG_PASSWORD_MESSAGE, error_pb2.ERROR_REASON_INVALID_CREDENTIALS)
    password_hash = await hash_password_bounded(new_password)
    return await run_db(_store_password, caller, password_hash, retention)


def _store_password(
    caller: Caller, password_hash: str, retention: dt.timedelta
) -> revocations.Revocation:
    with database.atomic():
        account = _locked_account(caller)
        account.password_hash = password_hash
        account.token_version += 1
        account.updated_at = utcnow()
        account.save()
        return revocations.record(account.id, account.token_version, retention)


def set_admin(
    caller: Caller, account_id: int, is_admin: bool, retention: dt.timedelta
) -> tuple[Account, revocations.Revocation | None]:
    """Grants or withdraws another account's admin rights (admins only); a change revokes
    that account's tokens, so a demoted admin's tokens lose their rights at once."""
    if not caller.is_admin:
        raise PermissionDenied("Only admins may change an account's admin rights")
    if account_id == caller.account_id:
        raise PermissionDenied("Admins cannot change their own admin rights")
    with database.atomic():
        binding.lock_account(account_id)
        account = get_account(account_id)
        if account.is_admin == is_admin:
            return account, None
        account.is_admin = is_admin
        account.token_version += 1
        account.updated_at = utcnow()
        account.save()
        return account, revocations.record(account.id, account.token_version, retention)
