//! `atlas diagnose`: the runbook's decision tree walked on real data, each
//! step with its evidence, ending in a cause and the recovery to run.
use crate::ids::{GroupId, MessageId, SessionId};
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
    /// How the check came out.
    pub finding: Finding,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// As it should be.
    Ok,
    /// Part of what is wrong.
    Problem,
    /// Neither: context for the operator.
    Info,
}

impl Finding {
    /// `ok` when `good`, else `problem`.
    pub fn ok_if(good: bool) -> Finding {
        if good { Finding::Ok } else { Finding::Problem }
    }
}

/// The cause found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// Stable code.
    pub code: CauseCode,
    /// One sentence for the operator.
    pub summary: String,
}

/// The stable codes of the causes `atlas diagnose` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseCode {
    /// Nothing is wrong.
    Healthy,
    /// Something went wrong and was repaired.
    Recovered,
    /// The message has not reached the device yet.
    NotDelivered,
    /// The key the message was encrypted to was rotated away.
    KeyRotated,
    /// No such key on the server.
    KeyNotFound,
    /// The stored key does not match what the device signed.
    KeyCorruptedInDatabase,
    /// The device lost its key state.
    KeyLostOnDevice,
    /// The two ends' ratchets no longer agree.
    RatchetDesync,
    /// The message is ahead of the skipped-key window.
    MissingSkippedKeys,
    /// The session was reset by an operator.
    SessionRetired,
    /// The message was delivered twice.
    DuplicateMessage,
    /// A group member did not follow the group's epochs.
    MemberStuckInOldEpoch,
    /// The device is revoked or still pending.
    DeviceInactive,
    /// The user's devices have no one-time keys left.
    NoPrekeys,
    /// The sender no longer holds the plaintext to resend.
    PlaintextUnavailable,
    /// The evidence fits no known cause.
    Unknown,
    /// Beyond the runbook: hand it to security.
    Escalate,
}

impl CauseCode {
    /// The code as it appears in JSON and in the runbook.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseCode::Healthy => "healthy",
            CauseCode::Recovered => "recovered",
            CauseCode::NotDelivered => "not_delivered",
            CauseCode::KeyRotated => "key_rotated",
            CauseCode::KeyNotFound => "key_not_found",
            CauseCode::KeyCorruptedInDatabase => "key_corrupted_in_database",
            CauseCode::KeyLostOnDevice => "key_lost_on_device",
            CauseCode::RatchetDesync => "ratchet_desync",
            CauseCode::MissingSkippedKeys => "missing_skipped_keys",
            CauseCode::SessionRetired => "session_retired",
            CauseCode::DuplicateMessage => "duplicate_message",
            CauseCode::MemberStuckInOldEpoch => "member_stuck_in_old_epoch",
            CauseCode::DeviceInactive => "device_inactive",
            CauseCode::NoPrekeys => "no_prekeys",
            CauseCode::PlaintextUnavailable => "plaintext_unavailable",
            CauseCode::Unknown => "unknown",
            CauseCode::Escalate => "escalate",
        }
    }
}

impl std::fmt::Display for CauseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
        message_id: MessageId,
    },
    /// `POST /sessions/{session_id}/reset`.
    ResetSession {
        /// The session (base64url).
        session_id: SessionId,
    },
    /// `atlas mls send-update`.
    MlsSendUpdate {
        /// The group.
        group_id: GroupId,
        /// `USER_ID/DEVICE_ID`.
        member_id: String,
    },
    /// `atlas mls rejoin-member`.
    MlsRejoin {
        /// The group.
        group_id: GroupId,
        /// `USER_ID/DEVICE_ID`.
        member_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_codes_serialise_as_their_runbook_names() {
        for code in [
            CauseCode::Healthy,
            CauseCode::KeyCorruptedInDatabase,
            CauseCode::MemberStuckInOldEpoch,
            CauseCode::Escalate,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<CauseCode>(&json).unwrap(), code);
        }
    }
}
