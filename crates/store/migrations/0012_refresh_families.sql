-- Refresh tokens rotate on use, and every token descended from one device-signature
-- grant shares a family, whose expiry does not move. A spent token presented
-- again revokes the whole family (it was stolen, or the client is confused).
ALTER TABLE refresh_tokens ADD COLUMN family_id TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN revoked_at TIMESTAMPTZ;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id)
