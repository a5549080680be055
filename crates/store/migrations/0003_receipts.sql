-- Receipt-signing keys rotate with an overlap: a retired key stays in the JWKS
-- until publish_until. A revoked key leaves it at once.
ALTER TABLE server_keys ADD COLUMN retired_at TIMESTAMPTZ;
ALTER TABLE server_keys ADD COLUMN publish_until TIMESTAMPTZ;
ALTER TABLE server_keys ADD COLUMN revoked_at TIMESTAMPTZ;

-- Signed receipts. expires_at is the source of truth for validity: a reissue
-- signs the same claims with it and the current key. device_id is the
-- acknowledging device of a delivered receipt, empty for an accepted one.
CREATE TABLE receipts (
    receipt_id    TEXT PRIMARY KEY,
    message_id    TEXT NOT NULL,
    receipt_type  TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    sender_id     TEXT NOT NULL,
    recipient_id  TEXT NOT NULL,
    kid           TEXT NOT NULL,
    jws           TEXT NOT NULL,
    issued_at     TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX receipts_per_message ON receipts (message_id, receipt_type, device_id)
