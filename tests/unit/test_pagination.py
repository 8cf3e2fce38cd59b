"""AIP-158 pagination (devicehub.pagination): opaque cursors, keyset pages, page size rules.

``paginate`` runs here on an in-memory SQLite table of its own: the rules are the same
for every listing, whatever the rows.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import peewee
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devicehub import validation
from devicehub.errors import InvalidArgument
from devicehub.pagination import (
    MAX_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
    paginate,
    split_page,
)

BAD_TOKEN = "page_token is not a token from an earlier page"
KINDS = st.text(st.characters(codec="utf-8", exclude_characters=":"), max_size=20)
VALUES = st.integers(min_value=0, max_value=validation.INT64_MAX)


def refused_token(kind: str, token: str) -> str:
    with pytest.raises(InvalidArgument) as raised:
        decode_cursor(kind, token)
    return raised.value.message


@given(KINDS, VALUES)
def test_a_cursor_decodes_to_the_value_it_was_made_from(kind, value):
    assert decode_cursor(kind, encode_cursor(kind, value)) == value


@given(KINDS, VALUES)
def test_a_cursor_is_url_safe_without_padding(kind, value):
    assert re.fullmatch(r"[A-Za-z0-9_-]*", encode_cursor(kind, value))


def test_a_cursor_of_another_listing_is_refused():
    assert refused_token("before", encode_cursor("after", 5)) == BAD_TOKEN
    assert refused_token("after", encode_cursor("afterwards", 5)) == BAD_TOKEN


@pytest.mark.parametrize(
    "raw",
    [
        "after:",
        "after:-1",
        "after:+1",
        "after: 1",
        "after:1.5",
        "after:²",
        "after:１",
        f"after:{2**63}",  # no database driver binds it
        "after",
        "",
    ],
)
def test_a_forged_cursor_is_refused(raw):
    token = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    assert refused_token("after", token) == BAD_TOKEN


@pytest.mark.parametrize("token", ["!", "é", "a", "____", "/w==", "gICA"])
def test_a_token_that_is_not_base64_text_is_refused(token):
    assert refused_token("after", token) == BAD_TOKEN


@given(st.text(max_size=40))
def test_any_token_decodes_to_a_bindable_id_or_is_refused(token):
    try:
        value = decode_cursor("after", token)
    except InvalidArgument as error:
        assert error.message == BAD_TOKEN
    else:
        assert 0 <= value <= validation.INT64_MAX


@given(st.lists(st.integers(0, 10**6)), st.integers(1, 20))
def test_split_page_keeps_the_page_and_tokens_the_row_that_ends_it(rows, size):
    page, token = split_page(rows, size, "after", lambda row: row)
    assert page == rows[:size]
    if len(rows) > size:
        assert decode_cursor("after", token) == rows[size - 1]
    else:
        assert token == ""


def test_split_page_tokens_the_key_of_its_listing():
    rows = [{"id": 7, "at": 1_700_000_000}, {"id": 9, "at": 1_700_000_060}]
    page, token = split_page(rows, 1, "at", lambda row: row["at"])
    assert page == rows[:1]
    assert decode_cursor("at", token) == 1_700_000_000
    assert refused_token("after", token) == BAD_TOKEN


class Row(peewee.Model):
    name = peewee.CharField()


@pytest.fixture(scope="module")
def rows() -> Iterator[type[Row]]:
    """1,001 rows with ids 1 to 1,001: one more than the largest page."""
    database = peewee.SqliteDatabase(":memory:")
    with database.bind_ctx([Row]):
        database.create_tables([Row])
        Row.insert_many([{"name": f"row {i}"} for i in range(1, MAX_PAGE_SIZE + 2)]).execute()
        yield Row
    database.close()


def ids(page) -> list[int]:
    return [row.id for row in page.items]


def test_page_size_zero_lists_every_row_in_id_order(rows):
    page = paginate(rows.select().order_by(rows.id.desc()), rows, 0, "")
    assert ids(page) == list(range(1, MAX_PAGE_SIZE + 2))
    assert page.next_page_token == ""


def test_pages_follow_each_other_until_the_last_has_no_token(rows):
    query = rows.select().where(rows.id <= 5)
    first = paginate(query, rows, 2, "")
    second = paginate(query, rows, 2, first.next_page_token)
    last = paginate(query, rows, 2, second.next_page_token)
    assert (ids(first), ids(second), ids(last)) == ([1, 2], [3, 4], [5])
    assert first.next_page_token == encode_cursor("after", 2)
    assert last.next_page_token == ""


def test_a_full_last_page_has_no_token(rows):
    query = rows.select().where(rows.id <= 4)
    second = paginate(query, rows, 2, paginate(query, rows, 2, "").next_page_token)
    assert ids(second) == [3, 4]
    assert second.next_page_token == ""


def test_a_page_past_the_end_is_empty(rows):
    page = paginate(rows.select(), rows, 10, encode_cursor("after", 5000))
    assert page.items == [] and page.next_page_token == ""


def test_page_size_above_the_maximum_is_clamped(rows):
    page = paginate(rows.select(), rows, 5 * MAX_PAGE_SIZE, "")
    assert ids(page) == list(range(1, MAX_PAGE_SIZE + 1))
    assert decode_cursor("after", page.next_page_token) == MAX_PAGE_SIZE
    rest = paginate(rows.select(), rows, 5 * MAX_PAGE_SIZE, page.next_page_token)
    assert ids(rest) == [MAX_PAGE_SIZE + 1]


def test_a_negative_page_size_is_refused(rows):
    with pytest.raises(InvalidArgument) as raised:
        paginate(rows.select(), rows, -1, "")
    assert raised.value.message == "page_size must not be negative"


def test_a_bad_token_is_refused_before_any_row_is_read(rows):
    with pytest.raises(InvalidArgument) as raised:
        paginate(rows.select(), rows, 10, encode_cursor("before", 1))
    assert raised.value.message == BAD_TOKEN
