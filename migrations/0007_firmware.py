"""Firmware: packages and their bytes, rollouts with their groups, and device updates.

A package's bytes are stored as fixed-size chunks (``firmware_chunk``), so every server
process and host can serve any range of them without reading the whole binary. An update
is one device in one rollout; ``firmware_update_event`` keeps every state it entered. A
group keeps the counts its success and error thresholds are judged by (kept by each report
that ends an update, recounted by the scheduler).
Deleting a device deletes its updates; a package used by a rollout cannot be deleted.
"""

from devicehub.storage.migrate import run_script

SCHEMA = """
CREATE TABLE firmware_package (
    id {PK},
    device_type_id INTEGER NOT NULL REFERENCES device_type (id) ON DELETE RESTRICT,
    version VARCHAR(64) NOT NULL,
    title VARCHAR(200) NOT NULL,
    release_notes TEXT NOT NULL DEFAULT '',
    min_version VARCHAR(64) NOT NULL DEFAULT '',
    size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256 VARCHAR(64) NOT NULL,
    chunk_size INTEGER NOT NULL CHECK (chunk_size > 0),
    created_at TIMESTAMP NOT NULL,
    created_by_id INTEGER NULL REFERENCES account (id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX firmware_package_device_type_id_version
    ON firmware_package (device_type_id, version);

CREATE TABLE firmware_chunk (
    package_id INTEGER NOT NULL REFERENCES firmware_package (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data {BLOB} NOT NULL,
    PRIMARY KEY (package_id, seq)
);

CREATE TABLE firmware_rollout (
    id {PK},
    package_id INTEGER NOT NULL REFERENCES firmware_package (id) ON DELETE RESTRICT,
    state VARCHAR(24) NOT NULL,
    target TEXT NOT NULL,
    group_percents TEXT NOT NULL,
    success_threshold INTEGER NOT NULL CHECK (success_threshold BETWEEN 1 AND 100),
    error_threshold INTEGER NOT NULL CHECK (error_threshold BETWEEN 0 AND 100),
    device_count INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    created_by_id INTEGER NULL REFERENCES account (id) ON DELETE SET NULL
);
CREATE INDEX firmware_rollout_package_id ON firmware_rollout (package_id);
CREATE INDEX firmware_rollout_state ON firmware_rollout (state);

CREATE TABLE firmware_rollout_group (
    id {PK},
    rollout_id INTEGER NOT NULL REFERENCES firmware_rollout (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    device_count INTEGER NOT NULL,
    state VARCHAR(16) NOT NULL,
    started_at TIMESTAMP NULL,
    skipped_count INTEGER NOT NULL DEFAULT 0,
    canceled_count INTEGER NOT NULL DEFAULT 0,
    updated_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX firmware_rollout_group_rollout_id_position
    ON firmware_rollout_group (rollout_id, position);

CREATE TABLE firmware_update (
    id {PK},
    rollout_id INTEGER NOT NULL REFERENCES firmware_rollout (id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL REFERENCES device (id) ON DELETE CASCADE,
    group_position INTEGER NOT NULL,
    state VARCHAR(16) NOT NULL,
    reason VARCHAR(500) NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    notified_at TIMESTAMP NULL
);
CREATE UNIQUE INDEX firmware_update_rollout_id_device_id ON firmware_update (rollout_id, device_id);
CREATE INDEX firmware_update_device_id ON firmware_update (device_id);
CREATE INDEX firmware_update_rollout_id_group_position_state_id
    ON firmware_update (rollout_id, group_position, state, id);
CREATE INDEX firmware_update_notified_at ON firmware_update (notified_at);

CREATE TABLE firmware_update_event (
    id {BIGPK},
    update_id INTEGER NOT NULL REFERENCES firmware_update (id) ON DELETE CASCADE,
    state VARCHAR(16) NOT NULL,
    reason VARCHAR(500) NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX firmware_update_event_update_id ON firmware_update_event (update_id)
"""


def upgrade(db):
    run_script(db, SCHEMA)
