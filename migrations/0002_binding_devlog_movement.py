"""Bindings (both APIs), usage logs, movement samples and notification attempts."""

from devicehub.storage.migrate import run_script

SCHEMA = """
CREATE TABLE binding (
    id {PK},
    device_id INTEGER NOT NULL UNIQUE REFERENCES device (id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    child_id INTEGER NULL REFERENCES child (id) ON DELETE CASCADE,
    nickname VARCHAR(100) NOT NULL DEFAULT '',
    is_primary BOOLEAN NOT NULL DEFAULT FALSE,
    bound_at TIMESTAMP NOT NULL
);
CREATE INDEX binding_account_id ON binding (account_id);
CREATE INDEX binding_child_id ON binding (child_id);
CREATE UNIQUE INDEX binding_one_primary_per_account ON binding (account_id) WHERE is_primary;

CREATE TABLE devlog (
    id {BIGPK},
    device_id INTEGER NOT NULL REFERENCES device (id) ON DELETE RESTRICT,
    child_id INTEGER NOT NULL REFERENCES child (id) ON DELETE CASCADE,
    log_file_id INTEGER NULL CHECK (log_file_id >= 0),
    treatment_date TIMESTAMP NOT NULL,
    finish_flag SMALLINT NULL CHECK (finish_flag BETWEEN 1 AND 6),
    last_intensity INTEGER NOT NULL CHECK (last_intensity >= 0),
    treatment_time INTEGER NOT NULL CHECK (treatment_time >= 0),
    movement INTEGER NULL,
    log_data TEXT NULL,
    is_temp BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX devlog_device_id_log_file_id ON devlog (device_id, log_file_id);
CREATE UNIQUE INDEX devlog_one_temp_per_child ON devlog (child_id) WHERE is_temp;
CREATE INDEX devlog_child_id_treatment_date ON devlog (child_id, treatment_date);

CREATE TABLE movement_sample (
    device_id INTEGER NOT NULL REFERENCES device (id) ON DELETE RESTRICT,
    ts BIGINT NOT NULL,
    val INTEGER NOT NULL,
    child_id INTEGER NOT NULL REFERENCES child (id) ON DELETE CASCADE,
    PRIMARY KEY (device_id, ts)
);

CREATE TABLE alimtalk_attempt (
    id {PK},
    account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    phone VARCHAR(32) NOT NULL DEFAULT '',
    outcome VARCHAR(16) NOT NULL,
    provider_request_id VARCHAR(100) NOT NULL DEFAULT '',
    provider_response TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NULL
);
CREATE INDEX alimtalk_attempt_account_id_created_at ON alimtalk_attempt (account_id, created_at)
"""


def upgrade(db):
    run_script(db, SCHEMA)
