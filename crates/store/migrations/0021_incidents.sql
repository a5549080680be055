-- Incidents of the emergency manual (seed 004) and their timelines. Every
-- change appends to incident_events, so events doubles as the incident's
-- version: a change is saved only if no other came first. components is a
-- JSON object of component to status.
CREATE TABLE incidents (
    incident_id     TEXT PRIMARY KEY,
    severity        TEXT NOT NULL,
    status          TEXT NOT NULL,
    description     TEXT NOT NULL,
    commander       TEXT NOT NULL,
    declared_at     TIMESTAMPTZ NOT NULL,
    declared_by     TEXT NOT NULL,
    last_update_at  TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    closed_at       TIMESTAMPTZ,
    closed_by       TEXT,
    resolution      TEXT,
    components      TEXT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    events          BIGINT NOT NULL
);
CREATE INDEX incidents_open ON incidents (status, declared_at);

-- detail is the event as JSON (its kind and fields).
CREATE TABLE incident_events (
    incident_id  TEXT NOT NULL REFERENCES incidents(incident_id),
    seq          BIGINT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    actor        TEXT NOT NULL,
    detail       TEXT NOT NULL,
    PRIMARY KEY (incident_id, seq)
)
