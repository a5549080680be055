-- Rollback safety (seed 004 §3.2): the migrations of a release only add, so
-- the previous binary runs on the new schema. This row names the oldest
-- binary that can serve the database; the newest binary to migrate it writes
-- it, and an older binary than that refuses to start instead of corrupting data.
CREATE TABLE schema_compat (
    id                  INTEGER PRIMARY KEY,
    min_binary_version  TEXT NOT NULL,
    written_by          TEXT NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
