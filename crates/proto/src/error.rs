//! Stable error codes: the `error` field of every error response. Clients and
//! operators may match on them; renaming one is a breaking change.
use serde::{Deserialize, Serialize};

/// Machine-readable reason for a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body or a parameter is malformed or has the wrong type.
    InvalidRequest,
    /// The body exceeds a configured size limit.
    PayloadTooLarge,
    /// The user does not exist.
    UnknownUser,
    /// The device does not exist or is not active.
    UnknownDevice,
    /// The message does not exist or is not visible to the caller.
    UnknownMessage,
    /// The user id is already registered.
    UserExists,
    /// The device id is already registered for that user.
    DeviceExists,
    /// A signature made by a device key does not verify.
    InvalidSignature,
    /// A device link token is unknown, used or expired.
    InvalidLinkToken,
    /// A certificate or removal is not signed by the user's identity key.
    InvalidCertificate,
    /// The device is linked but no device of its user has certified it yet.
    DevicePending,
    /// RFC 6749: the grant (device signature or refresh token) is not valid.
    InvalidGrant,
    /// RFC 6749: the grant type is not supported.
    UnsupportedGrantType,
    /// RFC 6750 / 9449: the access token is missing, expired, forged or not bound to the proof key.
    InvalidToken,
    /// RFC 9449: the DPoP proof is malformed, invalid or replayed.
    InvalidDpopProof,
    /// RFC 9449: the server requires a fresh nonce in the proof.
    UseDpopNonce,
    /// The send does not cover exactly the recipient's current devices.
    DeviceListMismatch,
    /// The same client message id was used for a different message.
    IdempotencyConflict,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// RFC 6750: the operator token lacks the scope this route needs.
    InsufficientScope,
    /// The receipt's validity (`receipts.expires_at`) has ended; extend it before reissuing.
    ReceiptExpired,
    /// No such server signing key (or it is already revoked).
    UnknownKey,
    /// The group name is taken.
    GroupExists,
    /// The group does not exist.
    UnknownGroup,
    /// The caller (or the named member) is not a member of the group.
    NotAMember,
    /// Another commit already moved the group past this commit's epoch; rebase and retry.
    EpochConflict,
    /// The message is for another epoch than the group's (too old or ahead).
    WrongEpoch,
    /// The MLS message does not validate against the group's public state.
    InvalidMlsMessage,
    /// Every recipient device already decrypted the message: nothing to resend.
    NothingToResend,
    /// No message was sent on this Olm session by or to the caller.
    UnknownSession,
    /// A key backup with this id exists.
    BackupExists,
    /// No key backup matches.
    UnknownBackup,
    /// The route does not exist.
    NotFound,
    /// No incident with that id.
    UnknownIncident,
    /// The incident is closed: nothing more can change.
    IncidentClosed,
    /// The incident cannot go from its status to the one asked (e.g. resolved
    /// back to investigating without `reopen`, or closed before resolved).
    InvalidTransition,
    /// The method is not allowed on this route.
    MethodNotAllowed,
    /// The server is locked down by an operator (an emergency): the client API
    /// is closed until the lockdown is lifted; retry after `Retry-After`.
    LockedDown,
    /// A lockdown is already in force.
    AlreadyLockedDown,
    /// There is no lockdown to lift.
    NotLockedDown,
    /// The typed confirmation phrase was missing or wrong.
    ConfirmationMismatch,
    /// An operator revoked this device's identity keys: it must make new ones
    /// and publish them with `POST /devices/rekey` (any sync of the SDK does it).
    RekeyRequired,
    /// The user's identity key was already replaced by another of its devices
    /// re-keying first: link this device again with a code from that one.
    IdentityReplaced,
    /// The user id is under a prefix the server keeps (`atlas-probe-`, for
    /// `atlas verify-recovery`), and no operator reserved it.
    ReservedUserId,
    /// The recovery probe shares a conversation with someone who is not a
    /// probe, so erasing it would touch their data: it is left alone.
    ProbeNotIsolated,
    /// As many recovery probes as may be are reserved: erase stale ones first.
    TooManyProbes,
    /// Too many requests from this caller.
    RateLimited,
    /// A recipient device holds the most undelivered messages it may; retry later.
    QueueFull,
    /// The server failed; the request may be retried.
    Internal,
    /// Storage is unreachable.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnknownUser => "unknown_user",
            Self::UnknownDevice => "unknown_device",
            Self::UnknownMessage => "unknown_message",
            Self::UserExists => "user_exists",
            Self::DeviceExists => "device_exists",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidLinkToken => "invalid_link_token",
            Self::InvalidCertificate => "invalid_certificate",
            Self::DevicePending => "device_pending",
            Self::InvalidGrant => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidToken => "invalid_token",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::DeviceListMismatch => "device_list_mismatch",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::Forbidden => "forbidden",
            Self::InsufficientScope => "insufficient_scope",
            Self::ReceiptExpired => "receipt_expired",
            Self::UnknownKey => "unknown_key",
            Self::GroupExists => "group_exists",
            Self::UnknownGroup => "unknown_group",
            Self::NotAMember => "not_a_member",
            Self::EpochConflict => "epoch_conflict",
            Self::WrongEpoch => "wrong_epoch",
            Self::InvalidMlsMessage => "invalid_mls_message",
            Self::NothingToResend => "nothing_to_resend",
            Self::UnknownSession => "unknown_session",
            Self::BackupExists => "backup_exists",
            Self::UnknownBackup => "unknown_backup",
            Self::NotFound => "not_found",
            Self::UnknownIncident => "unknown_incident",
            Self::IncidentClosed => "incident_closed",
            Self::InvalidTransition => "invalid_transition",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::LockedDown => "locked_down",
            Self::AlreadyLockedDown => "already_locked_down",
            Self::NotLockedDown => "not_locked_down",
            Self::ConfirmationMismatch => "confirmation_mismatch",
            Self::RekeyRequired => "rekey_required",
            Self::IdentityReplaced => "identity_replaced",
            Self::ReservedUserId => "reserved_user_id",
            Self::ProbeNotIsolated => "probe_not_isolated",
            Self::TooManyProbes => "too_many_probes",
            Self::RateLimited => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The JSON body of every error response (OAuth style, so DPoP clients read it too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub error: ErrorCode,
    /// Human-readable explanation.
    pub error_description: String,
    /// Extra structured data, e.g. the device lists of a mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_name_matches_serde() {
        for code in [
            ErrorCode::InvalidDpopProof,
            ErrorCode::DeviceListMismatch,
            ErrorCode::UseDpopNonce,
            ErrorCode::RekeyRequired,
            ErrorCode::IdentityReplaced,
            ErrorCode::ReservedUserId,
            ErrorCode::ProbeNotIsolated,
            ErrorCode::TooManyProbes,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
