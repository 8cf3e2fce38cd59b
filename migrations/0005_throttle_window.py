"""Fixed-window counters of every throttle (throttle.py), replacing the per-MAC table.

``rtc_mac_window`` held only the current minute's counts of the RTC per-MAC limit: it is
dropped rather than migrated (at worst a MAC gets one more minute's calls after the
upgrade), and that limit now counts in ``throttle_window`` like every other one.
"""

from devicehub.storage.migrate import run_script

SCHEMA = """
CREATE TABLE throttle_window (
    scope VARCHAR(32) NOT NULL,
    subject VARCHAR(128) NOT NULL,
    window_ends BIGINT NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (scope, subject)
);
CREATE INDEX throttle_window_window_ends ON throttle_window (window_ends);
CREATE TABLE device_credential (
    device_id INTEGER NOT NULL PRIMARY KEY REFERENCES device (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    secret_sha256 CHAR(64) NOT NULL,
    issued_at TIMESTAMP NOT NULL,
    issued_by_id INTEGER NULL REFERENCES account (id) ON DELETE SET NULL
);
DROP TABLE rtc_mac_window
"""


def upgrade(db):
    run_script(db, SCHEMA)
