//! The decision trees of `atlas diagnose message|user|group`.
mod group;
mod message;
mod user;

pub use group::{GroupEvidence, MemberActionEvidence, MemberEvidence, diagnose_group};
pub use message::{CopyEvidence, KeyEvidence, MessageEvidence, ReportEvidence, diagnose_message};
pub use user::{DeviceEvidence, FailedMessage, FailureEvidence, UserEvidence, diagnose_user};

use atlas_proto::diagnose::{Cause, CauseCode, Finding, Step};
use atlas_proto::{MessageId, SessionId};

fn step(check: &str, evidence: impl Into<String>, finding: Finding) -> Step {
    Step {
        check: check.into(),
        evidence: evidence.into(),
        finding,
    }
}

fn cause(code: CauseCode, summary: impl Into<String>) -> Cause {
    Cause {
        code,
        summary: summary.into(),
    }
}

/// The runbook's resend line against `base_url`.
fn resend_command(base_url: &str, message_id: &MessageId) -> String {
    format!(
        "curl -X POST {base_url}/messages/{message_id}/request-resend -H 'Authorization: Bearer <TOKEN>'"
    )
}

/// The runbook's session-reset line against `base_url`.
fn reset_command(base_url: &str, session_id: &SessionId) -> String {
    format!(
        "curl -X POST {base_url}/sessions/{session_id}/reset -H 'Authorization: Bearer <TOKEN>'"
    )
}

/// The runbook's key-restore line (`restore-user-keys`).
fn restore_command(user_id: &str, date: Option<&str>) -> String {
    format!(
        "atlas keys restore --user-id {user_id} --date {}",
        date.unwrap_or("<BACKUP_DATE>")
    )
}
