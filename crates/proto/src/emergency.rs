//! Emergency actions (seed 004 §3): the lockdown that replaces the manual's
//! "scale to zero" and the typed confirmations that guard it.
use crate::IncidentId;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// The phrase `emergency-shutdown.sh` asks for, and so does the lockdown.
pub const SHUTDOWN_PHRASE: &str = "CONFIRM SHUTDOWN";
/// The phrase that ends a lockdown.
pub const LIFT_PHRASE: &str = "LIFT LOCKDOWN";
/// Seconds clients are told to wait (`Retry-After`) while locked down.
pub const LOCKDOWN_RETRY_AFTER_SECS: u64 = 60;

/// A lockdown in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockdownState {
    /// Since when.
    pub since: Timestamp,
    /// Who started it (operator token id and label).
    pub actor: String,
    /// Why, as the operator gave it.
    pub reason: String,
}

/// `POST /admin/emergency/lockdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockdownRequest {
    /// Must be [`SHUTDOWN_PHRASE`].
    pub confirm: String,
    /// Why (kept with the state and written into open incidents).
    #[serde(default)]
    pub reason: Option<crate::incident::Message>,
}

/// `POST /admin/emergency/lift`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiftRequest {
    /// Must be [`LIFT_PHRASE`].
    pub confirm: String,
}

/// What the emergency routes answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockdownView {
    /// The lockdown in force, if any.
    pub lockdown: Option<LockdownState>,
    /// Open incidents whose timelines (and so Slack) were told.
    #[serde(default)]
    pub incidents_told: Vec<IncidentId>,
}

/// `POST /admin/emergency/evidence`: what the server saw, for the forensic record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceBundle {
    /// The SHA-256 of every file, as a note signed by the audit key (`sha256sum -c` reads it too).
    pub manifest: String,
    /// The key that signed it (signed-note verifier key form).
    pub key: String,
    /// File name to content: `logs.jsonl`, `state.json`, `metrics.txt`, `config.json`, `audit-checkpoint.txt`.
    pub files: std::collections::BTreeMap<String, String>,
}
