-- The audit log (seed 004 §4.2 and §5.2: "audit logs intact", "log gaps or
-- tampering"): every admin and security act, appended in order. `seq` is the
-- entry's index in the RFC 6962 tree over the entries' digests; `seal` is the
-- server's signature binding the digest to that index. Times are Unix
-- milliseconds, so the digest recomputed from a row is exact on both backends.
-- Nothing in Atlas updates or deletes these rows; on PostgreSQL the serving
-- role should hold only SELECT and INSERT on them (see README, "Audit log").
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    at_ms        BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    actor_label  TEXT NOT NULL,
    source       TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    detail       TEXT NOT NULL,
    seal         BYTEA NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (at_ms);
-- Signed checkpoints of the tree (C2SP signed notes), one per size.
CREATE TABLE audit_checkpoints (
    size        BIGINT PRIMARY KEY,
    note        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
