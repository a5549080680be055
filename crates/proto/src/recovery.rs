//! `POST /admin/recovery/facts`: what a restored server says about itself,
//! for `atlas verify-recovery` to check against a backup's manifest.
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most message ids one request may ask about.
pub const MAX_SAMPLE: usize = 1000;
/// Most receipts returned for the sampled messages.
pub const MAX_RECEIPTS: usize = 20;

/// What the caller knows from the backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsRequest {
    /// When the backup was taken: admin acts and refused logins are counted from here.
    pub since: Option<Timestamp>,
    /// Message ids the backup's manifest recorded (at most [`MAX_SAMPLE`]).
    #[serde(default)]
    pub message_sample: Vec<String>,
    /// The audit checkpoint the manifest recorded (a signed note), to check the log against.
    pub audit_checkpoint: Option<String>,
}

/// One stored receipt of a sampled message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleReceipt {
    /// The message.
    pub message_id: String,
    /// The compact JWS.
    pub jws: String,
}

/// The audit log as the server verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFacts {
    /// Whether every seal and checkpoint verified.
    pub intact: bool,
    /// Entries in the log.
    pub entries: u64,
    /// Whether the given checkpoint is consistent with the log (absent: none given).
    pub checkpoint_consistent: Option<bool>,
    /// What did not verify.
    pub problems: Vec<String>,
}

/// One line of the server's configuration self-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigCheck {
    /// What was checked.
    pub name: String,
    /// Whether it is as it should be.
    pub ok: bool,
    /// The evidence.
    pub detail: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryFacts {
    /// The storage backend.
    pub backend: String,
    /// Rows per table.
    pub row_counts: BTreeMap<String, i64>,
    /// Sampled message ids that are not stored.
    pub missing_messages: Vec<String>,
    /// Receipts of sampled messages (at most [`MAX_RECEIPTS`]).
    pub receipts: Vec<SampleReceipt>,
    /// The audit log.
    pub audit: AuditFacts,
    /// Devices told to re-key (identity revocation) that have not yet.
    pub devices_awaiting_rekey: u64,
    /// Incidents not closed, as `id (severity): description`.
    pub open_incidents: Vec<String>,
    /// The configuration self-check.
    pub config: Vec<ConfigCheck>,
}

/// `POST /admin/recovery/probes`: user ids reserved for `atlas verify-recovery`'s
/// throwaway users (they register like anyone, then are erased).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReservation {
    /// The reserved ids, `atlas-probe-<random>-a` and `-b`.
    pub user_ids: Vec<crate::UserId>,
}

/// A reserved probe, in `GET /admin/recovery/probes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedProbe {
    /// Its user id.
    pub user_id: crate::UserId,
    /// When it was reserved.
    pub reserved_at: Timestamp,
    /// The operator token that reserved it.
    pub reserved_by: String,
}

/// `GET /admin/recovery/probes`: the reserved probes, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeList {
    /// The probes.
    pub probes: Vec<ReservedProbe>,
}

/// `DELETE /admin/recovery/probes/{user_id}`: what erasing a probe removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeErasure {
    /// The probe.
    pub user_id: crate::UserId,
    /// Its devices, now gone.
    pub devices: u64,
    /// Groups erased with it (all their members were probes).
    pub groups: u64,
    /// Rows deleted, all tables together.
    pub rows: u64,
}
