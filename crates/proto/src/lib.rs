//! Wire types shared by the Atlas server and client: identifiers, request and
//! response bodies, envelopes and stable error codes. Serde only, no I/O.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod backup;
pub mod clock;
pub mod diagnose;
pub mod e2ee;
pub mod emergency;
pub mod error;
pub mod ids;
pub mod incident;
pub mod keys;
pub mod mls;
pub mod receipt;
pub mod recovery;
pub mod repair;
pub mod scope;
pub mod status;
pub mod timestamp;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{
    BackupId, ClientMessageId, DeviceId, GroupId, IdError, IncidentId, MemberRef, MessageId,
    RequestId, SessionId, UserId,
};
pub use scope::OperatorScope;

/// Base64url without padding, as JOSE and our wire format use it.
pub mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    /// Encodes bytes as unpadded base64url.
    pub fn encode(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes unpadded base64url.
    pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        URL_SAFE_NO_PAD.decode(text)
    }

    /// Encodes bytes as padded standard base64 (what `base64 -d` reads).
    pub fn encode_std(bytes: impl AsRef<[u8]>) -> String {
        STANDARD.encode(bytes)
    }

    /// Decodes padded standard base64.
    pub fn decode_std(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(text)
    }

    /// Decodes standard base64 with or without padding (vodozemac writes it unpadded).
    pub fn decode_std_lenient(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        LENIENT.decode(text)
    }
}
