-- The latest key-consistency check of each device: the device compares the
-- public keys it published with what user_keys holds. mismatched lists the
-- key ids (space separated) whose stored public key the device does not know.
CREATE TABLE key_checks (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    checked_at  TIMESTAMPTZ NOT NULL,
    checked     BIGINT NOT NULL,
    mismatched  TEXT NOT NULL,
    repaired    BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX user_keys_public ON user_keys (user_id, device_id, public_key)
