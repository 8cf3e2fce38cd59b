"""Accounts: registration, credentials and the caller's child accounts."""

from __future__ import annotations

import re

import peewee

from devicehub import binding, validation
from devicehub.db import database
from devicehub.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from devicehub.models import Account, Child, utcnow
from devicehub.pagination import Page, paginate
from devicehub.security import INVALID_TOKEN_MESSAGE, Caller, hash_password, verify_password
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
) -> Account:
    """Creates an account; raises AlreadyExists if the username is taken."""
    fields = {
        "username": _username(username.strip()),
        "phone": _phone(phone),
        "first_name": validation.text("first_name", first_name, max_length=50, required=False),
        "last_name": validation.text("last_name", last_name, max_length=50, required=False),
    }
    password_hash = hash_password(_password(password))
    taken = AlreadyExists("Username already exists", error_pb2.ERROR_REASON_USERNAME_TAKEN)
    with database.atomic():
        if Account.select().where(Account.username == fields["username"]).exists():
            raise taken
        try:
            return Account.create(password_hash=password_hash, is_admin=is_admin, **fields)
        except peewee.IntegrityError:
            raise taken from None


def authenticate(username: str, password: str) -> Account:
    """Returns the account for a correct username and password."""
    account = Account.get_or_none(Account.username == username.strip())
    if not verify_password(account.password_hash if account else None, password):
        raise Unauthenticated(
            "Incorrect username or password", error_pb2.ERROR_REASON_INVALID_CREDENTIALS
        )
    assert account is not None
    return account


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


def get_account_for_token(account_id: int) -> Account:
    """The account a refresh token speaks for; a deleted account cannot refresh."""
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        raise Unauthenticated(INVALID_TOKEN_MESSAGE)
    return account
