"""PostgreSQL array literals, the text form the bulk paths send one array parameter in."""

from __future__ import annotations

import datetime as dt

import pytest

from devicehub.storage import db


def test_array_literal_text():
    when = dt.datetime(2026, 1, 2, 10, 0, 0, 5)
    assert db.array_literal([1, -2, None, True, when]) == (
        "{1,-2,NULL,1,2026-01-02T10:00:00.000005}"
    )
    assert db.array_literal([]) == "{}"


def test_array_literal_refuses_aware_datetimes():
    with pytest.raises(ValueError, match="naive"):
        db.array_literal([dt.datetime(2026, 1, 2, tzinfo=dt.UTC)])
