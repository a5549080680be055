-- Recovery steps an operator asked a member's device to take (atlas mls
-- send-update, rejoin-member). The device picks them up on its next sync and
-- reports the outcome.
CREATE TABLE mls_member_actions (
    action_id     TEXT PRIMARY KEY,
    group_id      TEXT NOT NULL REFERENCES mls_groups(group_id),
    member_id     TEXT NOT NULL,
    action        TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    requested_at  TIMESTAMPTZ NOT NULL,
    done_at       TIMESTAMPTZ,
    outcome       TEXT
);
CREATE INDEX mls_member_actions_pending ON mls_member_actions (member_id, done_at)
;

-- An emergency rollback hides the log entries of the discarded epochs.
ALTER TABLE mls_messages ADD COLUMN rolled_back BIGINT NOT NULL DEFAULT 0
