-- Requests answered per minute and status class (2xx, 4xx, 5xx …), summed
-- over the replicas: the error rates of an incident's window for its
-- post-mortem. Kept 90 days.
CREATE TABLE request_minutes (
    minute_ms  BIGINT NOT NULL,
    class      TEXT NOT NULL,
    requests   BIGINT NOT NULL,
    PRIMARY KEY (minute_ms, class)
)
