"""Accounts, child accounts and the device catalog (types, batches, devices)."""

from devicehub.storage.migrate import run_script

SCHEMA = """
CREATE TABLE account (
    id {PK},
    username VARCHAR(150) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    phone VARCHAR(32) NOT NULL DEFAULT '',
    first_name VARCHAR(50) NOT NULL DEFAULT '',
    last_name VARCHAR(50) NOT NULL DEFAULT '',
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE child (
    id {PK},
    root_user_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    first_name VARCHAR(50) NOT NULL,
    last_name VARCHAR(50) NOT NULL,
    birthdate DATE NOT NULL,
    gender VARCHAR(20) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX child_root_user_id ON child (root_user_id);

CREATE TABLE device_type (
    id {PK},
    name VARCHAR(100) NOT NULL,
    code VARCHAR(16) NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE device_batch (
    id {PK},
    device_type_id INTEGER NOT NULL REFERENCES device_type (id) ON DELETE RESTRICT,
    batch_number VARCHAR(32) NOT NULL UNIQUE,
    production_date DATE NOT NULL,
    quantity INTEGER NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX device_batch_device_type_id ON device_batch (device_type_id);

CREATE TABLE device (
    id {PK},
    device_type_id INTEGER NOT NULL REFERENCES device_type (id) ON DELETE RESTRICT,
    batch_id INTEGER NOT NULL REFERENCES device_batch (id) ON DELETE RESTRICT,
    serial_number VARCHAR(32) NOT NULL,
    device_code VARCHAR(48) NOT NULL UNIQUE,
    mac_address VARCHAR(17) NOT NULL UNIQUE,
    unique_id VARCHAR(36) NOT NULL UNIQUE,
    device_alias VARCHAR(100) NOT NULL DEFAULT '',
    now_firmware_id INTEGER NOT NULL DEFAULT 0,
    firmware_version VARCHAR(32) NOT NULL DEFAULT '',
    is_active BOOLEAN NOT NULL DEFAULT FALSE,
    activated_at TIMESTAMP NULL,
    last_log_file_id INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX device_device_type_id_serial_number ON device (device_type_id, serial_number);
CREATE INDEX device_batch_id ON device (batch_id)
"""


def upgrade(db):
    run_script(db, SCHEMA)
