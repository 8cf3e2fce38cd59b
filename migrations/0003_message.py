"""Cloud-to-device messages with expiry and delivery state."""

from devicehub.storage.migrate import run_script

SCHEMA = """
CREATE TABLE message (
    id {BIGPK},
    account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    sender_id INTEGER NULL REFERENCES account (id) ON DELETE SET NULL,
    type VARCHAR(16) NOT NULL,
    payload TEXT NOT NULL,
    state VARCHAR(16) NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'delivered', 'acked', 'expired')),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP NULL,
    acked_at TIMESTAMP NULL
);
CREATE INDEX message_account_id_id ON message (account_id, id);
CREATE INDEX message_pending_expires_at ON message (expires_at)
    WHERE state IN ('queued', 'delivered')
"""


def upgrade(db):
    run_script(db, SCHEMA)
