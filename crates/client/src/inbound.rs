//! The inbound decisions of a device, made without I/O: why a message did
//! not decrypt (the failure code it reports), whether its labels are the
//! ones sealed inside, and, for a batch it processed, what to report, whether
//! to check its keys and which senders to ask for resends.
use crate::payload::Payload;
use atlas_crypto::olm::OlmError;
use atlas_proto::api::InboxMessage;
use atlas_proto::e2ee::{DecryptFailure, DecryptionReport, FailureCode, Outcome};
use atlas_proto::timestamp::Timestamp;
use atlas_proto::{DeviceId, GroupId, MessageId, UserId};
use serde::Serialize;
use time::OffsetDateTime;

/// One received message, decrypted or not.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// Sequence number on this device.
    pub seq: u64,
    /// Message id.
    pub message_id: MessageId,
    /// Sender user.
    pub sender_id: UserId,
    /// Sender device.
    pub sender_device_id: DeviceId,
    /// Acceptance time at the server.
    pub created_at: Timestamp,
    /// The text, when it decrypted.
    pub text: Option<String>,
    /// Why it did not decrypt.
    pub error: Option<DecryptFailure>,
    /// For a resend: the message it replaces.
    pub resend_of: Option<MessageId>,
}

/// The failure a device reports when Olm refuses a message.
pub(crate) fn classify(e: &OlmError) -> DecryptFailure {
    let code = match e {
        OlmError::KeyNotFound => FailureCode::KeyNotFound,
        OlmError::MissingMessageKey(_) => FailureCode::MissingSkippedKey,
        OlmError::RatchetDesync | OlmError::GapTooLarge | OlmError::Session(_) => {
            FailureCode::RatchetDesync
        }
        OlmError::CorruptedState | OlmError::BadKey | OlmError::BadMessage => {
            FailureCode::KeyCorrupted
        }
    };
    DecryptFailure::new(code, e.to_string())
}

/// Whether the sender and recipient sealed inside the ciphertext are the
/// envelope's: a server that relabels a message is caught here.
pub(crate) fn check_labels(
    payload: &Payload,
    message: &InboxMessage,
    me: (&UserId, &DeviceId),
) -> Result<(), DecryptFailure> {
    if payload.sender != message.sender_id
        || payload.sender_device != message.sender_device_id
        || payload.recipient != *me.0
        || payload.recipient_device != *me.1
    {
        return Err(DecryptFailure::new(
            FailureCode::Forged,
            "envelope labels do not match the encrypted sender/recipient",
        ));
    }
    Ok(())
}

/// What a device does once a batch of messages is processed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Followup {
    /// One report per message (a resend reports as its original).
    pub reports: Vec<DecryptionReport>,
    /// A sender used a key this device does not hold: check (and repair) the
    /// keys the server hands out before a resend claims another.
    pub check_keys: bool,
    /// Messages to ask their senders to resend: failures that were not
    /// themselves resends, so two broken devices cannot loop.
    pub ask_resend: Vec<MessageId>,
}

/// The follow-up of a processed batch, at `now`.
pub(crate) fn followup(received: &[Received], now: OffsetDateTime) -> Followup {
    Followup {
        reports: received
            .iter()
            .map(|r| {
                outcome(
                    r.resend_of.as_ref().unwrap_or(&r.message_id).to_string(),
                    None,
                    r.created_at,
                    r.error.as_ref(),
                    now,
                )
            })
            .collect(),
        check_keys: received.iter().any(|r| {
            r.error
                .as_ref()
                .is_some_and(|e| e.code == FailureCode::KeyNotFound)
        }),
        ask_resend: received
            .iter()
            .filter(|r| r.error.is_some() && r.resend_of.is_none())
            .map(|r| r.message_id.clone())
            .collect(),
    }
}

/// The report for one processed message: its failure's code (never the
/// local detail), or a success with the latency since the server accepted it.
pub(crate) fn outcome(
    message_id: String,
    group_id: Option<GroupId>,
    created_at: Timestamp,
    error: Option<&DecryptFailure>,
    now: OffsetDateTime,
) -> DecryptionReport {
    let Some(error) = error else {
        // A device clock behind the server's reports 0, not a negative latency.
        let latency_ms =
            Some(u64::try_from((now - created_at.0).whole_milliseconds()).unwrap_or(0));
        return DecryptionReport {
            message_id,
            group_id,
            outcome: Outcome::Success,
            code: None,
            latency_ms,
        };
    };
    DecryptionReport {
        message_id,
        group_id,
        outcome: Outcome::Failure,
        code: Some(error.code),
        latency_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:01 UTC);
    const ACCEPTED: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);

    fn received(id: &str, code: Option<FailureCode>, resend_of: Option<&str>) -> Received {
        Received {
            seq: 1,
            message_id: id.parse().unwrap(),
            sender_id: "alice".parse().unwrap(),
            sender_device_id: "A".parse().unwrap(),
            created_at: Timestamp(ACCEPTED),
            text: code.is_none().then(|| "hi".into()),
            error: code.map(|c| DecryptFailure::new(c, "detail")),
            resend_of: resend_of.map(|r| r.parse().unwrap()),
        }
    }

    #[test]
    fn a_batch_reports_every_message_and_asks_resends_once() {
        let batch = [
            received("m1", None, None),
            received("m2", Some(FailureCode::RatchetDesync), None),
            received("m3", Some(FailureCode::KeyNotFound), Some("m0")),
            received("m4", None, Some("m9")),
        ];
        let plan = followup(&batch, NOW);
        let ids: Vec<&str> = plan.reports.iter().map(|r| r.message_id.as_str()).collect();
        assert_eq!(
            ids,
            ["m1", "m2", "m0", "m9"],
            "a resend reports as its original"
        );
        assert_eq!(plan.reports[0].latency_ms, Some(1000));
        assert_eq!(plan.reports[2].code, Some(FailureCode::KeyNotFound));
        assert!(plan.check_keys, "KeyNotFound means a key check");
        assert_eq!(
            plan.ask_resend,
            ["m2"],
            "a failed resend is not asked again"
        );
        let quiet = followup(&batch[..1], NOW);
        assert!(!quiet.check_keys && quiet.ask_resend.is_empty());
    }

    #[test]
    fn olm_errors_map_to_the_reported_codes() {
        assert_eq!(
            classify(&OlmError::KeyNotFound).code,
            FailureCode::KeyNotFound
        );
        assert_eq!(
            classify(&OlmError::GapTooLarge).code,
            FailureCode::RatchetDesync
        );
        assert_eq!(classify(&OlmError::BadKey).code, FailureCode::KeyCorrupted);
    }

    #[test]
    fn relabelled_envelopes_are_forged() {
        let message = InboxMessage {
            seq: 1,
            message_id: "m1".parse().unwrap(),
            sender_id: "alice".parse().unwrap(),
            sender_device_id: "A".parse().unwrap(),
            encryption_algorithm: "olm".into(),
            msg_type: 1,
            body: String::new(),
            created_at: Timestamp(NOW),
            session_id: None,
            resend_of: None,
        };
        let me: (UserId, DeviceId) = ("bob".parse().unwrap(), "B".parse().unwrap());
        let mut payload = Payload {
            kind: "text".into(),
            body: "hi".into(),
            sender: "alice".parse().unwrap(),
            sender_device: "A".parse().unwrap(),
            recipient: "bob".parse().unwrap(),
            recipient_device: "B".parse().unwrap(),
        };
        assert!(check_labels(&payload, &message, (&me.0, &me.1)).is_ok());
        payload.sender = "mallory".parse().unwrap();
        let forged = check_labels(&payload, &message, (&me.0, &me.1)).unwrap_err();
        assert_eq!(forged.code, FailureCode::Forged);
    }

    #[test]
    fn failures_carry_their_code_and_successes_a_latency() {
        let failed = outcome(
            "m".into(),
            None,
            Timestamp(ACCEPTED),
            Some(&DecryptFailure::new(FailureCode::RatchetDesync, "bad mac")),
            NOW,
        );
        assert_eq!(failed.code, Some(FailureCode::RatchetDesync));
        assert_eq!(failed.outcome, Outcome::Failure);
        let serialised = serde_json::to_string(&failed).unwrap();
        assert!(
            !serialised.contains("bad mac"),
            "the local detail stays local"
        );
        let ok = outcome(
            "m".into(),
            Some("g".parse().unwrap()),
            Timestamp(ACCEPTED),
            None,
            NOW,
        );
        assert_eq!(ok.outcome, Outcome::Success);
        assert_eq!(ok.latency_ms, Some(1000));
        let ahead = Timestamp(NOW + time::Duration::seconds(5));
        assert_eq!(
            outcome("m".into(), None, ahead, None, NOW).latency_ms,
            Some(0)
        );
    }
}
