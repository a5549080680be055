-- Messages a device has acknowledged, cumulatively: next_seq - acked_seq is its
-- queue, which a send may not grow past the configured limit.
ALTER TABLE devices ADD COLUMN acked_seq BIGINT NOT NULL DEFAULT 0
