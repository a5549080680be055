-- Cross-signing. A user's identity key certifies each of its devices: a device
-- row the server writes on its own has no valid certificate, and senders do not
-- encrypt to it. A linked device waits as pending until an existing device
-- certifies it (checking the link proof, a MAC under a secret the server never
-- sees) and hands it the identity key sealed under that secret.
ALTER TABLE users ADD COLUMN identity_key TEXT;
ALTER TABLE devices ADD COLUMN certificate TEXT;
ALTER TABLE devices ADD COLUMN link_token_hash BYTEA;
ALTER TABLE devices ADD COLUMN link_proof TEXT;
ALTER TABLE devices ADD COLUMN identity_transfer TEXT;
ALTER TABLE devices ADD COLUMN revocation TEXT;
ALTER TABLE devices ADD COLUMN revoked_at TIMESTAMPTZ
