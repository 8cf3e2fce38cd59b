"""Per-MAC request windows of the RTC ``get_by_mac`` rate limit, shared by all processes."""

from devicehub.storage.migrate import run_script

SCHEMA = """
CREATE TABLE rtc_mac_window (
    mac_address VARCHAR(17) PRIMARY KEY,
    window_started DOUBLE PRECISION NOT NULL,
    requests INTEGER NOT NULL
)
"""


def upgrade(db):
    run_script(db, SCHEMA)
