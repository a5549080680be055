-- Operator tokens for the admin API (Authorization: Bearer). Only a hash of each token is kept.
CREATE TABLE operator_tokens (
    token_id    TEXT PRIMARY KEY,
    token_hash  BYTEA NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
)
