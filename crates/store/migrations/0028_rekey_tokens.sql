-- Emergency identity revocation: a device's access tokens issued before this
-- time (Unix seconds) are refused. Set when an operator revokes the device's
-- identity keys and again when it re-keys, so a token captured before either
-- is dead although the device lives on. Additive: older binaries ignore it.
ALTER TABLE devices ADD COLUMN tokens_after BIGINT;
