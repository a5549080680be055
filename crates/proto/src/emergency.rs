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

/// Which keys an emergency revocation replaces (seed 004 §3.3 `revoke-keys.sh <KIND>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// Every receipt-signing key, the access-token key and the DPoP nonce key:
    /// receipts signed before stop verifying, every token dies at once.
    Signing,
    /// The key-encryption key that seals the server's secrets at rest: a new
    /// KEK, every secret re-sealed in one transaction, the old KEK destroyed.
    Encryption,
    /// The identity keys of every device (or one user's) and the user identity
    /// keys that certify them: those devices must re-key before they may act
    /// again, and their old keys are not handed out.
    Identity,
    /// Every kind above: identity, then signing, then encryption.
    All,
}

impl KeyKind {
    /// The name as typed and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signing => "signing",
            Self::Encryption => "encryption",
            Self::Identity => "identity",
            Self::All => "all",
        }
    }
}

/// `POST /admin/emergency/revoke-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeysRequest {
    /// What to revoke.
    pub kind: KeyKind,
    /// With `identity` (or `all`): only this user's identity, as after a stolen phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<crate::UserId>,
}

/// One revoked key: its metadata and public part only (the secret is destroyed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedKey {
    /// `receipt-signing`, `access-token`, `dpop-nonce`.
    pub purpose: String,
    /// Its id.
    pub kid: String,
    /// Its algorithm.
    pub alg: String,
    /// Its status before (`active`, `retired`, `revoked`).
    pub was: String,
    /// The public JWK, for signature keys (receipts it signed can be checked against it in an investigation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<serde_json::Value>,
}

/// What an emergency revocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeKeysView {
    /// The kind.
    pub kind: KeyKind,
    /// When.
    pub at: Timestamp,
    /// The keys revoked.
    pub revoked: Vec<RevokedKey>,
    /// Ids of the keys now in use.
    pub installed: Vec<String>,
    /// Refresh tokens revoked (devices sign in again with their device keys).
    pub refresh_tokens_revoked: u64,
    /// Devices that must re-key before they may act again (`identity`).
    #[serde(default)]
    pub devices_to_rekey: u64,
}
