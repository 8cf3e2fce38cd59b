"""AIP-158 pagination with opaque page tokens: keyset pages ("after this key").

A listing reads one row more than the page holds (``LIMIT size + 1``) after the key its
page token carries; ``split_page`` turns that into the page and the next token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import peewee

from devicehub import validation
from devicehub.errors import InvalidArgument
from devicehub.storage.models import BaseModel

MAX_PAGE_SIZE = 1000
T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def encode_cursor(kind: str, value: int) -> str:
    """An opaque page token for "continue after ``value``" of a ``kind`` of listing."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, token: str) -> int:
    """The value of a token made by ``encode_cursor(kind, ...)``; InvalidArgument else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != kind or not value.isascii() or not value.isdigit():
            raise ValueError(raw)
        # A forged token must not carry a number the database driver cannot bind.
        if int(value) > validation.INT64_MAX:
            raise ValueError(raw)
        return int(value)
    except ValueError:
        raise InvalidArgument("page_token is not a token from an earlier page") from None


def split_page(rows: list[R], size: int, kind: str, key: Callable[[R], int]) -> tuple[list[R], str]:
    """The page of ``rows`` (read with ``LIMIT size + 1``) and the token of the next page,
    ``""`` when no row follows it; the token continues after ``key`` of the page's last
    row."""
    if len(rows) > size:
        return rows[:size], encode_cursor(kind, key(rows[size - 1]))
    return rows, ""


def paginate(
    query: peewee.ModelSelect[T], model: type[T], page_size: int, page_token: str
) -> Page[T]:
    """Runs ``query`` in id order, one page at a time.

    ``page_size`` 0 returns every row (the documented REST lists are complete); sizes
    above ``MAX_PAGE_SIZE`` are clamped to it.
    """
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative")
    if page_token:
        query = query.where(model.id > decode_cursor("after", page_token))
    query = query.order_by(model.id)
    if page_size == 0:
        return Page(list(query), "")
    size = min(page_size, MAX_PAGE_SIZE)
    items, next_page_token = split_page(list(query.limit(size + 1)), size, "after", _id)
    return Page(items, next_page_token)


def _id(row: BaseModel) -> int:
    return row.id
