-- Disaster-recovery backups this database knows of: each `atlas dr backup`
-- and each recorded `atlas dr verify`, for the metrics of the last backup
-- and the last verified one (alert: no verified backup in 24 h).
CREATE TABLE dr_backups (
    location        TEXT NOT NULL,
    name            TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    messages        BIGINT NOT NULL,
    size            BIGINT NOT NULL,
    verified_ms     BIGINT,
    verified_ok     BIGINT,
    PRIMARY KEY (location, name)
);
