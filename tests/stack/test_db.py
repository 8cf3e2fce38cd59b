"""Database helpers behind the bulk and hot paths on PostgreSQL: array literals round trip,
prepared statements (the literals' text form: tests/unit/test_array_literal.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from devicehub.storage import db


@pytest.fixture
def postgres(stack, in_process_db):
    if stack.backend != "postgresql":
        pytest.skip("PostgreSQL only")
    return in_process_db


def test_array_literals_round_trip_through_postgresql(postgres):
    ints = [0, -(2**31), 2**31 - 1, None, 7]
    times = [dt.datetime(2026, 1, 2, 10, 0, 0), None, dt.datetime(1999, 12, 31, 23, 59, 59, 999)]
    with postgres.connection_context():
        row = postgres.execute_sql(
            "SELECT %s::integer[], %s::timestamp[]",
            (db.array_literal(ints), db.array_literal(times)),
        ).fetchone()
    assert row == (ints, times)


def test_prepared_statement_is_reused_and_survives_a_new_connection(postgres):
    sql = "SELECT %s::integer + %s::integer"
    with postgres.connection_context():
        assert db.execute_prepared("test_sum", sql, (1, 2)).fetchone() == (3,)
        assert db.execute_prepared("test_sum", sql, (40, 2)).fetchone() == (42,)
        like = "SELECT %s::text LIKE '%%s', %s::integer %% 7"
        assert db.execute_prepared("test_percent", like, ("has", 9)).fetchone() == (True, 2)
        assert "test_sum" in postgres.connection().prepared
        prepared = postgres.execute_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = 'test_sum'"
        ).fetchone()
        assert prepared == (1,)
    postgres.close_all()
    with postgres.connection_context():
        assert "test_sum" not in postgres.connection().prepared
        assert db.execute_prepared("test_sum", sql, (5, 5)).fetchone() == (10,)
