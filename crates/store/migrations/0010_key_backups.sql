-- Key backups, encrypted on the device (Argon2id + XChaCha20-Poly1305): the
-- server keeps the opaque blob, the key-derivation parameters and the SHA-256
-- of the download key derived from the same passphrase. Versions count up per user.
CREATE TABLE key_backups (
    backup_id          TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL,
    device_id          TEXT NOT NULL,
    version            BIGINT NOT NULL,
    kdf                TEXT NOT NULL,
    download_verifier  TEXT NOT NULL,
    blob               TEXT NOT NULL,
    size               BIGINT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    created_ms         BIGINT NOT NULL,
    UNIQUE (user_id, version)
);
CREATE INDEX key_backups_user ON key_backups (user_id, created_ms)
