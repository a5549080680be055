//! Storage of decryption outcome reports and the figures `/health/e2ee` and
//! `atlas diagnose` read from them.
use crate::StoreResult;
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// One report as the server accepts it (codes already validated).
#[derive(Debug, Clone)]
pub struct NewReport {
    /// 1:1 message id, or a group log position.
    pub message_id: String,
    /// The group, for a group message.
    pub group_id: Option<String>,
    /// Whether it decrypted.
    pub success: bool,
    /// Failure code.
    pub code: Option<String>,
    /// Latency the device measured, milliseconds.
    pub latency_ms: Option<u64>,
}

/// What a report changed. Only the first outcome and a recovery count, so a
/// device repeating itself cannot move the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportChange {
    /// The device never received such a message: not recorded.
    UnknownMessage,
    /// First outcome for this message on this device: it decrypted.
    Succeeded,
    /// First outcome: it failed, and the failure counts.
    Failed,
    /// First outcome: it failed, beyond the reporter's or the sender's cap.
    FailedUncounted,
    /// It had failed and now decrypted.
    Recovered,
    /// Nothing that counts changed (a repeat, or a failure after a success).
    Unchanged,
}

/// One message's outcome on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRecord {
    /// Empty for a 1:1 message.
    pub group_id: String,
    /// Message id or group log position.
    pub message_id: String,
    /// Reporting user.
    pub user_id: String,
    /// Reporting device.
    pub device_id: String,
    /// Sender user.
    pub sender_id: String,
    /// Sender device.
    pub sender_device_id: String,
    /// `success`, `failure` or `recovered`.
    pub status: String,
    /// Latest failure code.
    pub code: Option<String>,
    /// First failure code.
    pub first_code: Option<String>,
    /// Acceptance to decryption, milliseconds, capped by the message's age.
    pub latency_ms: Option<u64>,
    /// First report.
    pub first_reported_at: OffsetDateTime,
    /// Latest change.
    pub reported_at: OffsetDateTime,
}

/// Outcome figures over a time window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutcomeCounts {
    /// Messages reported.
    pub reported: u64,
    /// Decrypted at once.
    pub succeeded: u64,
    /// Still failing.
    pub failed: u64,
    /// Failed first, decrypted later.
    pub recovered: u64,
    /// Mean latency over reports that carry one, milliseconds.
    pub avg_latency_ms: u64,
    /// Still-failing messages per code.
    pub failures_by_code: Vec<(String, u64)>,
    /// Distinct reporting users with counted, still-failing messages.
    pub failing_reporters: u64,
    /// Distinct sending users of those messages.
    pub failing_senders: u64,
    /// Failures (still failing or recovered) beyond the caps; in no figure above.
    pub uncounted: u64,
}

/// How many failures count per user and hour (see `atlas_proto::e2ee`).
#[derive(Debug, Clone, Copy)]
pub struct FailureCaps {
    /// Start of the window the caps apply to (an hour ago).
    pub since: OffsetDateTime,
    /// Counted failures per reporting user in the window.
    pub per_reporter: u64,
    /// Counted failures per sending user in the window.
    pub per_sender: u64,
}

/// The decryption-report part of the store.
#[async_trait::async_trait]
pub trait ReportStore: Send + Sync {
    /// Records a device's reports in one transaction; one change per report, in order.
    /// A report counts only for a message delivered to that device (or a group
    /// application message of a group it is in, sent by someone else). A new
    /// failure counts only while its reporter and its sender are under `caps`.
    async fn record_reports(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        reports: &[NewReport],
        caps: FailureCaps,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<ReportChange>>;
    /// Figures over reports changed at or after `since`; uncounted failures only in `uncounted`.
    async fn outcome_counts(&self, since: OffsetDateTime) -> StoreResult<OutcomeCounts>;
    /// Every report about one message (group id empty for 1:1).
    async fn message_reports(
        &self,
        group_id: &str,
        message_id: &str,
    ) -> StoreResult<Vec<ReportRecord>>;
    /// Reports of one user's devices changed at or after `since`, newest first.
    async fn user_reports(
        &self,
        user_id: &UserId,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<ReportRecord>>;
}

/// Unix milliseconds, the order both backends compare report times in.
pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The latency to store: what the device measured, never more than the
/// message's age (a device cannot have waited longer than the message existed).
pub(crate) fn capped_latency(
    reported: Option<u64>,
    created_at: OffsetDateTime,
    now: OffsetDateTime,
) -> u64 {
    let age = u64::try_from((now - created_at).whole_milliseconds()).unwrap_or(0);
    reported.map_or(age, |ms| ms.min(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_capped_by_the_message_age() {
        let created = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let now = created + time::Duration::milliseconds(1500);
        assert_eq!(capped_latency(Some(40), created, now), 40);
        assert_eq!(capped_latency(Some(u64::MAX), created, now), 1500);
        assert_eq!(capped_latency(None, created, now), 1500);
        // A message "created" in the future (clock trouble) gives zero, not a wrap-around.
        assert_eq!(capped_latency(Some(5), now, created), 0);
    }
}
