-- MLS KeyPackages: claimed at most once, except the device's last-resort one
-- (last_resort = 1), handed out when its stock is empty.
CREATE TABLE mls_key_packages (
    user_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    key_package_ref  TEXT NOT NULL,
    key_package      BYTEA NOT NULL,
    last_resort      BIGINT NOT NULL,
    status           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    claimed_at       TIMESTAMPTZ,
    PRIMARY KEY (user_id, device_id, key_package_ref),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id)
);
CREATE INDEX mls_key_packages_claim ON mls_key_packages (user_id, device_id, status, last_resort, created_at);

-- One row per group. current_epoch only moves by a compare-and-set on it, so
-- the first valid commit for an epoch wins, across server processes too.
-- public_state is the delivery service's snapshot of the public group.
CREATE TABLE mls_groups (
    group_id           TEXT PRIMARY KEY,
    current_epoch      BIGINT NOT NULL,
    last_epoch_change  TIMESTAMPTZ NOT NULL,
    created_by         TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    public_state       BYTEA NOT NULL,
    next_seq           BIGINT NOT NULL
);

-- member_id is USER_ID/DEVICE_ID. epoch is the epoch the member acknowledged.
CREATE TABLE mls_group_members (
    group_id     TEXT NOT NULL REFERENCES mls_groups(group_id),
    member_id    TEXT NOT NULL,
    epoch        BIGINT NOT NULL,
    last_commit  TEXT,
    status       TEXT NOT NULL,
    joined_epoch BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, member_id)
);

-- epoch is the epoch a commit creates. status: pending until every member has
-- acknowledged that epoch, then acknowledged, or rolled_back after a rollback.
CREATE TABLE mls_commits (
    commit_id   TEXT PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES mls_groups(group_id),
    sender_id   TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    status      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX mls_commits_group ON mls_commits (group_id, epoch);

-- The public state and the latest GroupInfo of every epoch (for external joins and rollback).
CREATE TABLE mls_epochs (
    group_id      TEXT NOT NULL REFERENCES mls_groups(group_id),
    epoch         BIGINT NOT NULL,
    public_state  BYTEA NOT NULL,
    group_info    BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, epoch)
);

-- The group's ordered log: commits, application messages and Welcomes.
CREATE TABLE mls_messages (
    group_id      TEXT NOT NULL REFERENCES mls_groups(group_id),
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    epoch         BIGINT NOT NULL,
    sender_id     TEXT NOT NULL,
    body          BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, seq)
);

-- Who each Welcome in the log is for (one Welcome row serves every added member).
CREATE TABLE mls_welcomes (
    member_id  TEXT NOT NULL,
    group_id   TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (member_id, group_id, seq)
)
