-- Alerts Alertmanager reported (POST /admin/alerts): one row per alert and
-- start, firing until a resolved notification gives its end. Incidents show
-- the alerts of their window in their timelines.
CREATE TABLE alerts (
    fingerprint  TEXT NOT NULL,
    starts_ms    BIGINT NOT NULL,
    starts_at    TIMESTAMPTZ NOT NULL,
    ends_at      TIMESTAMPTZ,
    status       TEXT NOT NULL,
    alertname    TEXT NOT NULL,
    severity     TEXT NOT NULL,
    summary      TEXT NOT NULL,
    labels       TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (fingerprint, starts_ms)
);
CREATE INDEX alerts_by_start ON alerts (starts_ms)
