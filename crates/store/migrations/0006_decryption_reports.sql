-- Decryption outcomes as devices report them: one row per message and
-- receiving device holding its latest state. status is success, failure or
-- recovered (a failure followed by a success). group_id is empty for 1:1
-- messages, and for a group message message_id is its log position.
-- reported_ms orders rows by time on both backends.
CREATE TABLE decryption_reports (
    group_id          TEXT NOT NULL,
    message_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    device_id         TEXT NOT NULL,
    sender_id         TEXT NOT NULL,
    sender_device_id  TEXT NOT NULL,
    status            TEXT NOT NULL,
    code              TEXT,
    first_code        TEXT,
    latency_ms        BIGINT,
    first_reported_at TIMESTAMPTZ NOT NULL,
    reported_at       TIMESTAMPTZ NOT NULL,
    reported_ms       BIGINT NOT NULL,
    PRIMARY KEY (group_id, message_id, user_id, device_id)
);
CREATE INDEX decryption_reports_recent ON decryption_reports (reported_ms);
CREATE INDEX decryption_reports_reporter ON decryption_reports (user_id, device_id, reported_ms)
