//! Errors of the client SDK.
use atlas_proto::ErrorBody;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the server: {0}")]
    Network(#[from] reqwest::Error),
    /// The server refused the request.
    #[error("server refused ({status}): {} — {}", body.error.as_str(), body.error_description)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// The server answered something that is not our protocol.
    #[error("unexpected server answer ({status}): {detail}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// The local state database failed.
    #[error("local state: {0}")]
    Storage(#[from] sqlx::Error),
    /// Local state is missing or corrupted.
    #[error("local state: {0}")]
    State(String),
    /// A cryptographic operation failed.
    #[error("crypto: {0}")]
    Crypto(#[from] atlas_crypto::olm::OlmError),
    /// An MLS operation failed.
    #[error(transparent)]
    Mls(#[from] atlas_crypto::mls::MlsError),
    /// A peer's published keys are not validly signed.
    #[error("keys of {0} are not validly signed")]
    UntrustedKeys(String),
    /// A contact's identity key is not the one pinned here: possibly an attack.
    #[error(
        "{0}'s identity key changed: compare safety numbers (atlas verify {0}), then accept it with atlas verify {0} --confirm"
    )]
    IdentityChanged(atlas_proto::UserId),
    /// The recipient has a device without any prekey left.
    #[error("device {0} has no prekeys left")]
    NoPrekeys(String),
    /// The caller passed something unusable (a malformed id, …).
    #[error("{0}")]
    Input(String),
    /// WebSocket failure.
    #[error("push connection: {0}")]
    Push(String),
    /// A key backup could not be made, found or opened.
    #[error("key backup: {0}")]
    Backup(String),
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<atlas_proto::ErrorCode> {
        match self {
            Self::Api { body, .. } => Some(body.error),
            _ => None,
        }
    }
}
