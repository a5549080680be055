-- The replay cache is written before a proof's request is answered and pruned
-- continuously, so expiry is a number both backends order and index alike
-- (SQLite keeps timestamps as text). Entries of the old table are at most a
-- few minutes from expiry: dropping them costs nothing but an upgrade window
-- that a restart already had.
DROP TABLE dpop_jti;
CREATE TABLE dpop_jti (
    jti         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX dpop_jti_expiry ON dpop_jti (expires_at)
