-- Olm session resets: one row per device to tell (both ends of the session).
-- A message on a reset session is still stored, and the receiving device
-- flags it and asks for a resend.
CREATE TABLE olm_session_resets (
    session_id      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    peer_user_id    TEXT NOT NULL,
    peer_device_id  TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    reset_at        TIMESTAMPTZ NOT NULL,
    seen_at         TIMESTAMPTZ,
    PRIMARY KEY (session_id, user_id, device_id)
);
CREATE INDEX olm_session_resets_unseen ON olm_session_resets (user_id, device_id, seen_at);
CREATE INDEX messages_by_session ON messages (session_id)
