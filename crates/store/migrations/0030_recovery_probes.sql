-- The throwaway users of `atlas verify-recovery`. Names under the prefix
-- atlas-probe- register only when reserved here by an operator, so erasing a
-- probe (everything stored about it) can never reach a real user.
CREATE TABLE recovery_probes (
    user_id      TEXT PRIMARY KEY,
    reserved_at  TIMESTAMPTZ NOT NULL,
    reserved_by  TEXT NOT NULL
);
