-- Resends and session resets. A resend is a new message linked to the one it
-- re-encrypts. session_id is the Olm session the sender says it used,
-- prekey_key the recipient key a pre-key message was encrypted to (public
-- values, kept after the ciphertext is dropped, for diagnosis).
ALTER TABLE messages ADD COLUMN session_id TEXT;
ALTER TABLE messages ADD COLUMN prekey_key TEXT;
ALTER TABLE messages ADD COLUMN resend_of TEXT;
CREATE INDEX messages_by_id ON messages (message_id);

-- A recipient device (or an operator for it) asks the sending device to
-- re-encrypt a message. status is pending, resent or unavailable (the sender
-- no longer has the plaintext). reason is the failure code reported for it.
CREATE TABLE resend_requests (
    request_id           TEXT PRIMARY KEY,
    message_id           TEXT NOT NULL,
    recipient_id         TEXT NOT NULL,
    recipient_device_id  TEXT NOT NULL,
    sender_id            TEXT NOT NULL,
    sender_device_id     TEXT NOT NULL,
    requested_by         TEXT NOT NULL,
    reason               TEXT,
    status               TEXT NOT NULL,
    requested_at         TIMESTAMPTZ NOT NULL,
    done_at              TIMESTAMPTZ,
    resent_message_id    TEXT,
    detail               TEXT
);
CREATE UNIQUE INDEX resend_requests_pending ON resend_requests (message_id, recipient_device_id) WHERE status = 'pending';
CREATE INDEX resend_requests_sender ON resend_requests (sender_id, sender_device_id, status)
