-- An emergency lockdown (seed 004 §3.1, in place of "scale to zero"): while
-- the row exists, every server answers the client API with 503 locked_down.
-- In the database, so it survives restarts and holds on every replica.
CREATE TABLE lockdown (
    id        INTEGER PRIMARY KEY,
    since_ms  BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    reason    TEXT NOT NULL
);
