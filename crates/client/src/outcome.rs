//! What a device reports about a message it processed, decided without I/O:
//! the outcome (success with its latency, or a failure code) and the check of
//! a message id before it goes into a request path.
use crate::error::ClientError;
use atlas_proto::e2ee::{DecryptionReport, FailureCode, Outcome};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The report for one processed message. `error` is the `"Code: reason"` text
/// shown to the user; a code outside the fixed set is reported as `KeyCorrupted`.
pub(crate) fn outcome(
    message_id: String,
    group_id: Option<String>,
    created_at: &str,
    error: Option<&str>,
) -> DecryptionReport {
    let Some(error) = error else {
        let latency_ms = OffsetDateTime::parse(created_at, &Rfc3339).ok().map(|t| {
            u64::try_from((OffsetDateTime::now_utc() - t).whole_milliseconds()).unwrap_or(0)
        });
        return DecryptionReport {
            message_id,
            group_id,
            outcome: Outcome::Success,
            code: None,
            latency_ms,
        };
    };
    let name = error.split(':').next().unwrap_or_default();
    DecryptionReport {
        message_id,
        group_id,
        outcome: Outcome::Failure,
        code: Some(FailureCode::parse(name).unwrap_or(FailureCode::KeyCorrupted)),
        latency_ms: None,
    }
}

/// Refuses what is not a server message id (a UUID) before it goes into a URL path.
pub(crate) fn check_message_id(message_id: &str) -> Result<(), ClientError> {
    let plain = !message_id.is_empty()
        && message_id.len() <= 64
        && message_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if plain {
        Ok(())
    } else {
        Err(ClientError::Input(format!(
            "{message_id:?} is not a message id"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_their_code_and_successes_a_latency() {
        let failed = outcome(
            "m".into(),
            None,
            "2026-01-01T00:00:00Z",
            Some("RatchetDesync: bad mac"),
        );
        assert_eq!(failed.code, Some(FailureCode::RatchetDesync));
        assert_eq!(failed.outcome, Outcome::Failure);
        let odd = outcome("m".into(), None, "x", Some("Weird: ?"));
        assert_eq!(odd.code, Some(FailureCode::KeyCorrupted));
        let ok = outcome("m".into(), Some("g".into()), "2026-01-01T00:00:00Z", None);
        assert_eq!(ok.outcome, Outcome::Success);
        assert!(ok.latency_ms.unwrap() > 0);
        assert_eq!(outcome("m".into(), None, "garbage", None).latency_ms, None);
    }
}
