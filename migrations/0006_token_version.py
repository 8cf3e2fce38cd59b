"""Token revocation: a token version per account, and the revocations other processes read.

Every access and refresh token carries its account's ``token_version`` (claim ``ver``);
deleting an account, changing its password or its admin flag bumps the version, so every
token issued before stops working. Tokens issued before this migration have no ``ver``
and count as version 0, the version every existing account starts at: existing sessions
keep working. Each revocation is also recorded in ``account_revocation`` (SQLite server
processes poll it; on PostgreSQL it is announced with NOTIFY and replayed after a lost
LISTEN connection). There is no foreign key: the row of a deleted account outlives it.
"""

from devicehub.storage.migrate import run_script

SCHEMA = """
ALTER TABLE account ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE account_revocation (
    id {BIGPK},
    account_id INTEGER NOT NULL,
    token_version INTEGER NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX account_revocation_created_at ON account_revocation (created_at)
"""


def upgrade(db):
    run_script(db, SCHEMA)
