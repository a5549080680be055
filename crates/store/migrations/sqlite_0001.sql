CREATE TABLE users (
    user_id     TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);

CREATE TABLE devices (
    user_id     TEXT NOT NULL REFERENCES users(user_id),
    device_id   TEXT NOT NULL,
    ed25519     TEXT NOT NULL,
    curve25519  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active',
    created_at  TEXT NOT NULL,
    next_seq    INTEGER NOT NULL DEFAULT 0,
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
    last_rotated TEXT,
    created_at   TEXT NOT NULL,
    consumed_at  TEXT,
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
    msg_type             INTEGER NOT NULL,
    body                 TEXT NOT NULL,
    seq                  INTEGER NOT NULL,
    created_at           TEXT NOT NULL,
    delivered_at         TEXT,
    PRIMARY KEY (message_id, recipient_device_id),
    UNIQUE (recipient_id, recipient_device_id, seq)
);

CREATE TABLE send_log (
    sender_id         TEXT NOT NULL,
    sender_device_id  TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    message_id        TEXT NOT NULL,
    request_hash      BLOB NOT NULL,
    created_at        TEXT NOT NULL,
    PRIMARY KEY (sender_id, sender_device_id, client_message_id)
);

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    jkt         TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);

CREATE TABLE link_tokens (
    token_hash  BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(user_id),
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);

CREATE TABLE server_keys (
    kid         TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    alg         TEXT NOT NULL,
    secret      BLOB NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE dpop_jti (
    jti         TEXT PRIMARY KEY,
    expires_at  TEXT NOT NULL
);
