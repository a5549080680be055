//! `atlas diagnose`: the runbook's decision tree walked on real data, each
//! step with its evidence, ending in a cause and the recovery to run.
use serde::{Deserialize, Serialize};

/// A finished diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// What was diagnosed, e.g. `message 0190…`.
    pub subject: String,
    /// The checks in the order they were made.
    pub steps: Vec<Step>,
    /// The conclusion.
    pub cause: Cause,
    /// Recovery plans, the recommended one first (empty when nothing is wrong).
    pub recovery: Vec<Recovery>,
}

/// One check of the decision tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The question, in the runbook's words where it has them.
    pub check: String,
    /// What the data says.
    pub evidence: String,
    /// `ok`, `problem` or `info`.
    pub finding: String,
}

/// The cause found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// Stable code: `healthy`, `recovered`, `not_delivered`, `key_rotated`,
    /// `key_not_found`, `key_corrupted_in_database`, `key_lost_on_device`,
    /// `ratchet_desync`, `missing_skipped_keys`, `session_retired`,
    /// `duplicate_message`, `member_stuck_in_old_epoch`, `device_inactive`,
    /// `plaintext_unavailable`, `unknown`, `escalate`.
    pub code: String,
    /// One sentence for the operator.
    pub summary: String,
}

/// A recovery plan: the commands an operator would type, and what `--apply` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// What it does.
    pub summary: String,
    /// Exact commands (runbook form).
    pub commands: Vec<String>,
    /// What `atlas diagnose … --apply` does for this plan, in order (empty:
    /// it needs the user's device or passphrase, and the commands say how).
    pub actions: Vec<RecoveryAction>,
}

/// A recovery step the server can start on an operator's behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecoveryAction {
    /// `POST /messages/{message_id}/request-resend`.
    RequestResend {
        /// The message.
        message_id: String,
    },
    /// `POST /sessions/{session_id}/reset`.
    ResetSession {
        /// The session (base64url).
        session_id: String,
    },
    /// `atlas mls send-update`.
    MlsSendUpdate {
        /// The group.
        group_id: String,
        /// `USER_ID/DEVICE_ID`.
        member_id: String,
    },
    /// `atlas mls rejoin-member`.
    MlsRejoin {
        /// The group.
        group_id: String,
        /// `USER_ID/DEVICE_ID`.
        member_id: String,
    },
}
