-- Where in the group log a removed member's view ends: the commit that removed
-- it. It reads nothing after that, and its epoch acknowledgements only move forward.
ALTER TABLE mls_group_members ADD COLUMN removed_seq BIGINT
