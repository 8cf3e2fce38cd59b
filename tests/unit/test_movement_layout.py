"""The movement store's layout rules (no database): windows, weeks, partition names, and the
retention setting."""

from __future__ import annotations

import datetime as dt

import pytest

from devicehub.config import Settings
from devicehub.storage import movement_chunks as chunks


def test_a_window_offset_fits_int2_and_a_week_is_whole_windows():
    assert chunks.WINDOW_SECONDS - 1 <= 2**15 - 1
    assert chunks.PARTITION_SECONDS % chunks.WINDOW_SECONDS == 0
    assert chunks.PLAUSIBLE_FROM % chunks.WINDOW_SECONDS == 0


@pytest.mark.parametrize(
    "ts",
    [chunks.PLAUSIBLE_FROM, 1_736_411_840, 1_736_411_840 + 7 * 86400 - 1, 2**32 - 1],
)
def test_a_timestamp_falls_in_its_week_and_the_name_tells_the_week(ts):
    start = chunks.week_start(ts)
    assert start <= ts < start + chunks.PARTITION_SECONDS
    assert start % chunks.PARTITION_SECONDS == 0
    day = dt.datetime.fromtimestamp(start, dt.UTC)
    assert chunks.partition_name(start) == f"movement_chunk_{day:%Y%m%d}"
    # Names sort as their weeks do, which the retention test relies on reading them.
    later = chunks.partition_name(start + chunks.PARTITION_SECONDS)
    assert chunks.partition_name(start) < later


def test_retention_is_kept_for_ever_unless_set_to_whole_days():
    assert Settings.from_env({}).movement_retention_days is None
    assert (
        Settings.from_env({"DEVICEHUB_MOVEMENT_RETENTION_DAYS": " "}).movement_retention_days
        is None
    )
    assert (
        Settings.from_env({"DEVICEHUB_MOVEMENT_RETENTION_DAYS": "30"}).movement_retention_days == 30
    )
    for bad in ("0", "-3", "thirty"):
        with pytest.raises(SystemExit, match="DEVICEHUB_MOVEMENT_RETENTION_DAYS"):
            Settings.from_env({"DEVICEHUB_MOVEMENT_RETENTION_DAYS": bad})
