//! What a device reports about a message it processed, decided without I/O:
//! the outcome (success with its latency, or a failure code).
use atlas_proto::GroupId;
use atlas_proto::e2ee::{DecryptFailure, DecryptionReport, Outcome};
use time::OffsetDateTime;

/// The report for one processed message: its failure's code (never the
/// local detail), or a success with the latency since the server accepted it.
pub(crate) fn outcome(
    message_id: String,
    group_id: Option<GroupId>,
    created_at: &str,
    error: Option<&DecryptFailure>,
) -> DecryptionReport {
    let Some(error) = error else {
        let latency_ms = atlas_proto::timestamp::parse_rfc3339(created_at)
            .ok()
            .map(|t| {
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
    use atlas_proto::e2ee::FailureCode;

    #[test]
    fn failures_carry_their_code_and_successes_a_latency() {
        let failed = outcome(
            "m".into(),
            None,
            "2026-01-01T00:00:00Z",
            Some(&DecryptFailure::new(FailureCode::RatchetDesync, "bad mac")),
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
            "2026-01-01T00:00:00Z",
            None,
        );
        assert_eq!(ok.outcome, Outcome::Success);
        assert!(ok.latency_ms.unwrap() > 0);
        assert_eq!(outcome("m".into(), None, "garbage", None).latency_ms, None);
    }
}
