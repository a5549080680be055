-- The notification outbox: what an incident change tells Slack or PagerDuty,
-- written with the change, delivered by whichever replica holds the lease on
-- the oldest undelivered notification of its destination (in order, paced),
-- retried with backoff, each attempt recorded. No secret is stored here: the
-- PagerDuty routing key and the Slack webhook URL are added when sending.
ALTER TABLE incidents ADD COLUMN paged BIGINT NOT NULL DEFAULT 0;

CREATE TABLE notifications (
    notification_id  TEXT PRIMARY KEY,
    incident_id      TEXT NOT NULL REFERENCES incidents(incident_id),
    destination      TEXT NOT NULL,
    summary          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    created_ms       BIGINT NOT NULL,
    next_attempt_ms  BIGINT NOT NULL,
    lease_until_ms   BIGINT NOT NULL,
    delivered_at     TIMESTAMPTZ
);
CREATE INDEX notifications_queue ON notifications (destination, status, created_ms);
CREATE INDEX notifications_incident ON notifications (incident_id, created_ms);

CREATE TABLE notification_attempts (
    notification_id  TEXT NOT NULL REFERENCES notifications(notification_id),
    attempt          BIGINT NOT NULL,
    at               TIMESTAMPTZ NOT NULL,
    outcome          TEXT NOT NULL,
    PRIMARY KEY (notification_id, attempt)
)
