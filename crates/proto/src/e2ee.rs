//! Decryption outcome reports (codes and timings, never content) and the E2EE
//! health the server derives from them.
use crate::ids::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most reports in one `POST /reports/decryption`.
pub const MAX_REPORTS_PER_REQUEST: usize = 100;

/// Failure ratio (failed / reported, last hour) above which `/health/e2ee` says `degraded`.
pub const DEGRADED_FAILURE_RATIO: f64 = 0.01;
/// Failure ratio above which it says `unhealthy` (the `HighDecryptionFailureRate` alert's 5 %).
pub const UNHEALTHY_FAILURE_RATIO: f64 = 0.05;

/// Failures one reporting user adds to the health figures per hour; beyond it
/// they are kept (for `atlas diagnose`) but do not count.
pub const COUNTED_FAILURES_PER_REPORTER: u64 = 5;
/// Failures of messages from one sending user that count per hour (one account
/// sending junk to many people is that account's problem, not an outage).
pub const COUNTED_FAILURES_PER_SENDER: u64 = 5;
/// Distinct reporting users, and distinct sending users, with counted failures
/// it takes before failures move the verdict: a few colluding accounts cannot.
pub const MIN_FAILING_USERS: u64 = 5;

/// Why a message did not decrypt: the fixed set a device may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FailureCode {
    /// A pre-key message names a one-time or fallback key the device does not hold.
    KeyNotFound,
    /// The key the sender used was rotated out before the message arrived.
    KeyRotated,
    /// The session's ratchet state does not match the sender's.
    RatchetDesync,
    /// The message key was skipped earlier and is no longer stored.
    MissingSkippedKey,
    /// Stored key or session material could not be read.
    KeyCorrupted,
    /// The message was already decrypted once.
    DuplicateMessage,
    /// A group message from an epoch the device no longer keeps.
    EpochTooOld,
    /// A group message from an epoch the device has not reached.
    EpochInFuture,
    /// The message was sent on a session that has been reset.
    SessionRetired,
    /// The plaintext is not an Atlas payload.
    Malformed,
    /// The encrypted sender or recipient does not match the envelope.
    Forged,
}

impl FailureCode {
    /// Every code, in wire order.
    pub const ALL: [FailureCode; 11] = [
        Self::KeyNotFound,
        Self::KeyRotated,
        Self::RatchetDesync,
        Self::MissingSkippedKey,
        Self::KeyCorrupted,
        Self::DuplicateMessage,
        Self::EpochTooOld,
        Self::EpochInFuture,
        Self::SessionRetired,
        Self::Malformed,
        Self::Forged,
    ];

    /// The code as it appears on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyNotFound => "KeyNotFound",
            Self::KeyRotated => "KeyRotated",
            Self::RatchetDesync => "RatchetDesync",
            Self::MissingSkippedKey => "MissingSkippedKey",
            Self::KeyCorrupted => "KeyCorrupted",
            Self::DuplicateMessage => "DuplicateMessage",
            Self::EpochTooOld => "EpochTooOld",
            Self::EpochInFuture => "EpochInFuture",
            Self::SessionRetired => "SessionRetired",
            Self::Malformed => "Malformed",
            Self::Forged => "Forged",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// A failure code outside the fixed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure code {0:?}")]
pub struct UnknownFailureCode(pub String);

impl std::str::FromStr for FailureCode {
    type Err = UnknownFailureCode;
    fn from_str(s: &str) -> Result<Self, UnknownFailureCode> {
        Self::parse(s).ok_or_else(|| UnknownFailureCode(s.to_owned()))
    }
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one message did not decrypt on this device: the code it reports and
/// the local detail it shows its user (never sent to the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecryptFailure {
    /// The reported code.
    pub code: FailureCode,
    /// What the device saw, in words.
    pub reason: String,
}

impl DecryptFailure {
    /// A failure with its code and detail.
    pub fn new(code: FailureCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for DecryptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// Whether a decryption worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The message decrypted.
    Success,
    /// It did not; `code` says why.
    Failure,
}

/// One device's outcome for one message it received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptionReport {
    /// A 1:1 message id, or the position of a group message (see `group_id`).
    pub message_id: String,
    /// For a group message: the group; `message_id` is then its log sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// Success or failure.
    pub outcome: Outcome,
    /// Required with a failure, absent with a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<FailureCode>,
    /// Milliseconds from the server's acceptance to the decryption (successes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// `POST /reports/decryption` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsRequest {
    /// At most [`MAX_REPORTS_PER_REQUEST`].
    pub reports: Vec<DecryptionReport>,
}

/// A report the server did not count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedReport {
    /// The report's message id.
    pub message_id: String,
    /// Stable reason: `unknown_message` (not received by this device) or `invalid_request`.
    pub reason: String,
}

/// Answer to `POST /reports/decryption`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportsResponse {
    /// Reports counted.
    pub recorded: u64,
    /// Reports refused, with the reason.
    pub rejected: Vec<RejectedReport>,
}

/// Answer to `GET /health/e2ee`: last hour's decryption outcomes as devices reported them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct E2eeHealth {
    /// `healthy`, `degraded` (failure ratio above 1 %, or an MLS member more
    /// than two epochs behind) or `unhealthy` (failure ratio above 5 %).
    pub status: String,
    /// Messages that decrypted (at once or after recovery) / messages reported; 1 without reports.
    pub decryption_success_rate: f64,
    /// Mean time from acceptance to decryption, milliseconds.
    pub avg_latency_ms: u64,
    /// Messages whose latest outcome is a failure.
    pub failed_decryptions_last_hour: u64,
    /// Messages that failed first and decrypted later (resend, catch-up, reset).
    pub recovered_last_hour: u64,
    /// Messages with a report.
    pub reports_last_hour: u64,
    /// Unrecovered failures by code.
    pub failures_by_code: BTreeMap<String, u64>,
    /// Active MLS members more than two epochs behind their group (any group).
    pub mls_members_behind: u64,
    /// Distinct reporting users with counted failures (the verdict needs
    /// [`MIN_FAILING_USERS`] of them, and as many distinct senders).
    #[serde(default)]
    pub failing_users_last_hour: u64,
    /// Failures beyond the per-reporter and per-sender caps: kept for
    /// `atlas diagnose`, left out of every figure above and of the alert counter.
    #[serde(default)]
    pub uncounted_failures_last_hour: u64,
}

/// Status for a failure ratio among counted reports, by the documented
/// thresholds, once failures come from [`MIN_FAILING_USERS`] reporting users and
/// as many sending users; below that quorum failures do not move the verdict.
pub fn health_status(
    failure_ratio: f64,
    failing_reporters: u64,
    failing_senders: u64,
) -> &'static str {
    if failing_reporters < MIN_FAILING_USERS || failing_senders < MIN_FAILING_USERS {
        "healthy"
    } else if failure_ratio > UNHEALTHY_FAILURE_RATIO {
        "unhealthy"
    } else if failure_ratio > DEGRADED_FAILURE_RATIO {
        "degraded"
    } else {
        "healthy"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for code in FailureCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(FailureCode::parse(code.as_str()), Some(code));
        }
        let bad = r#"{"reports":[{"message_id":"m","outcome":"failure","code":"CosmicRay"}]}"#;
        assert!(serde_json::from_str::<ReportsRequest>(bad).is_err());
        let extra = r#"{"reports":[{"message_id":"m","outcome":"success","plaintext":"hi"}]}"#;
        assert!(serde_json::from_str::<ReportsRequest>(extra).is_err());
    }

    #[test]
    fn thresholds() {
        let many = MIN_FAILING_USERS;
        assert_eq!(health_status(0.0, many, many), "healthy");
        assert_eq!(health_status(0.002, many, many), "healthy");
        assert_eq!(health_status(0.02, many, many), "degraded");
        assert_eq!(health_status(0.051, many, many), "unhealthy");
        // A few accounts, however bad their figures, are no outage.
        assert_eq!(health_status(1.0, many - 1, many), "healthy");
        assert_eq!(health_status(1.0, many, many - 1), "healthy");
    }
}
