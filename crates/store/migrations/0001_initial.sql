-- Written in PostgreSQL types. SQLite gets the same schema with TIMESTAMPTZ as TEXT
-- (RFC 3339), BYTEA as BLOB and BIGINT as INTEGER (see src/migrations.rs).
-- No semicolon inside comments or literals: statements are split on it.

CREATE TABLE users (
    user_id     TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE devices (
    user_id     TEXT NOT NULL REFERENCES users(user_id),
    device_id   TEXT NOT NULL,
    ed25519     TEXT NOT NULL,
    curve25519  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active',
    created_at  TIMESTAMPTZ NOT NULL,
    next_seq    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)
);

-- Public keys only. status is active, rotated, revoked or consumed.
CREATE TABLE user_keys (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    key_type     TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    status       TEXT NOT NULL,
    last_rotated TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    consumed_at  TIMESTAMPTZ,
    PRIMARY KEY (user_id, device_id, key_type, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id)
);
CREATE INDEX user_keys_claim ON user_keys (user_id, device_id, key_type, status, created_at);

-- One row per recipient device, message_id shared by the copies of one send.
CREATE TABLE messages (
    message_id           TEXT NOT NULL,
    recipient_device_id  TEXT NOT NULL,
    recipient_id         TEXT NOT NULL,
    sender_id            TEXT NOT NULL,
    sender_device_id     TEXT NOT NULL,
    encryption_algorithm TEXT NOT NULL,
    msg_type             BIGINT NOT NULL,
    body                 TEXT NOT NULL,
    seq                  BIGINT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    delivered_at         TIMESTAMPTZ,
    PRIMARY KEY (message_id, recipient_device_id),
    UNIQUE (recipient_id, recipient_device_id, seq)
);

CREATE TABLE send_log (
    sender_id         TEXT NOT NULL,
    sender_device_id  TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    message_id        TEXT NOT NULL,
    request_hash      BYTEA NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sender_id, sender_device_id, client_message_id)
);

CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    jkt         TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

CREATE TABLE link_tokens (
    token_hash  BYTEA PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(user_id),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

CREATE TABLE server_keys (
    kid         TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    alg         TEXT NOT NULL,
    secret      BYTEA NOT NULL,
    status      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE dpop_jti (
    jti         TEXT PRIMARY KEY,
    expires_at  TIMESTAMPTZ NOT NULL
);
