//! The audit log as the API and the CLI show it: entries, the published
//! checkpoint, and what a verification found.
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest stored text field of an entry; longer values are cut.
pub const MAX_FIELD_LEN: usize = 8192;

/// How an audited act ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// It was done.
    Ok,
    /// It was refused (authentication, scope, bad input, a wrong confirmation).
    Refused,
    /// It failed on our side.
    Failed,
}

impl AuditOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Ok, Self::Refused, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// One act to append. Empty strings stand for "none".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// When it happened.
    pub at: Timestamp,
    /// Who: an operator token id, `host` for commands run on the server host, `server` for the server's own acts.
    pub actor: String,
    /// The token's label (who it was made for).
    pub actor_label: String,
    /// The client address.
    pub source: String,
    /// What: `METHOD /route/{template}` for API calls, a dotted name otherwise.
    pub action: String,
    /// On what: the request path, a key id, a user.
    pub target: String,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// More, for people (a status code, a reason).
    pub detail: String,
}

impl NewAuditEntry {
    /// The entry with every field cut to [`MAX_FIELD_LEN`] bytes (on a character boundary).
    pub fn bounded(mut self) -> Self {
        for field in [
            &mut self.actor,
            &mut self.actor_label,
            &mut self.source,
            &mut self.action,
            &mut self.target,
            &mut self.detail,
        ] {
            if field.len() > MAX_FIELD_LEN {
                let mut end = MAX_FIELD_LEN;
                while !field.is_char_boundary(end) {
                    end -= 1;
                }
                field.truncate(end);
            }
        }
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its index in the log (from 0).
    pub seq: u64,
    /// What was recorded.
    #[serde(flatten)]
    pub entry: NewAuditEntry,
}

/// `GET /.well-known/atlas/audit-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// The latest signed checkpoint (a C2SP signed note), if any.
    pub checkpoint: Option<String>,
    /// The key that signs checkpoints, in the signed-note verifier-key form.
    pub key: String,
    /// Entries in the log now (the checkpoint may lag by up to its interval).
    pub entries: u64,
}

/// The first place where the stored entries stop being the log that was sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tamper {
    /// Entry `index` is there but its content (or seal) changed.
    Edited {
        /// The entry.
        index: u64,
    },
    /// Entries from `index` on (`count` of them) are gone.
    Deleted {
        /// The first missing entry.
        index: u64,
        /// How many are missing there.
        count: u64,
    },
    /// A row that was never appended sits at position `position`.
    Inserted {
        /// Where it sits.
        position: u64,
    },
    /// Entry `index` was moved to position `found_at`.
    Reordered {
        /// The entry.
        index: u64,
        /// Where it is now.
        found_at: u64,
    },
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edited { index } => write!(f, "entry {index} was edited"),
            Self::Deleted { index, count: 1 } => write!(f, "entry {index} was deleted"),
            Self::Deleted { index, count } => {
                write!(f, "entries {index}..{} were deleted", index + count - 1)
            }
            Self::Inserted { position } => {
                write!(
                    f,
                    "a row that was never logged was inserted at position {position}"
                )
            }
            Self::Reordered { index, found_at } => {
                write!(f, "entry {index} was moved to position {found_at}")
            }
        }
    }
}

/// What is wrong with one stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckpointProblem {
    /// Its signature does not verify (forged or edited), or it is malformed.
    BadSignature {
        /// Its place among the stored checkpoints.
        position: u64,
    },
    /// It covers more entries than the log holds: entries were cut off the end.
    BeyondLog {
        /// Its size.
        size: u64,
    },
    /// The entries up to its size do not hash to its root.
    RootMismatch {
        /// Its size.
        size: u64,
    },
    /// It is not an extension of the checkpoint before it.
    Inconsistent {
        /// The earlier size.
        from: u64,
        /// Its size.
        to: u64,
    },
}

impl std::fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadSignature { position } => {
                write!(f, "checkpoint #{position} is not signed by the audit key")
            }
            Self::BeyondLog { size } => write!(
                f,
                "checkpoint of size {size} covers entries the log no longer holds"
            ),
            Self::RootMismatch { size } => write!(
                f,
                "the first {size} entries do not hash to the signed checkpoint's root"
            ),
            Self::Inconsistent { from, to } => {
                write!(
                    f,
                    "checkpoint {to} is not an extension of checkpoint {from}"
                )
            }
        }
    }
}

/// What `atlas audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyView {
    /// Whether the log is intact.
    pub ok: bool,
    /// Entries stored.
    pub entries: u64,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Size of the largest checkpoint that verified.
    pub verified_size: u64,
    /// Its root, base64.
    pub verified_root: Option<String>,
    /// The first tampered entry.
    pub tamper: Option<Tamper>,
    /// Every checkpoint that failed.
    pub checkpoint_problems: Vec<CheckpointProblem>,
    /// The key checked against.
    pub key: String,
}
