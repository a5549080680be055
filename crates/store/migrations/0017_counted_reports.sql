-- Whether a failure counts toward /health/e2ee and the alert counter (1) or
-- not (0): each reporting user and each sending user counts only a few
-- failures per hour, so a few colluding accounts cannot move the verdict.
-- Existing rows count, as they did.
ALTER TABLE decryption_reports ADD COLUMN counted BIGINT NOT NULL DEFAULT 1;
CREATE INDEX decryption_reports_sender ON decryption_reports (sender_id, reported_ms)
