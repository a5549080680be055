//! Storage of decryption outcome reports and the figures `/health/e2ee` and
//! `atlas diagnose` read from them.
use crate::db::{Backend, Tx, read, run};
use crate::{StoreError, StoreResult};
use atlas_proto::e2ee::{FailureCode, UnknownFailureCode};
use atlas_proto::{DeviceId, GroupId, UserId};
use time::OffsetDateTime;

/// One report as the server accepts it (codes already validated).
#[derive(Debug, Clone)]
pub struct NewReport {
    /// 1:1 message id, or a group log position.
    pub message_id: String,
    /// The group, for a group message.
    pub group_id: Option<GroupId>,
    /// Whether it decrypted.
    pub success: bool,
    /// Failure code.
    pub code: Option<FailureCode>,
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
    pub code: Option<FailureCode>,
    /// First failure code.
    pub first_code: Option<FailureCode>,
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

/// A `decryption_reports` row as stored (latency signed).
#[derive(sqlx::FromRow)]
struct ReportRow {
    group_id: String,
    message_id: String,
    user_id: String,
    device_id: String,
    sender_id: String,
    sender_device_id: String,
    status: String,
    code: Option<String>,
    first_code: Option<String>,
    latency_ms: Option<i64>,
    first_reported_at: OffsetDateTime,
    reported_at: OffsetDateTime,
}

/// A stored failure code, checked again on the way out.
fn stored_code(code: Option<String>) -> StoreResult<Option<FailureCode>> {
    code.map(|c| {
        c.parse()
            .map_err(|e: UnknownFailureCode| StoreError::Corrupt(e.to_string()))
    })
    .transpose()
}

impl TryFrom<ReportRow> for ReportRecord {
    type Error = StoreError;
    fn try_from(r: ReportRow) -> StoreResult<Self> {
        Ok(Self {
            group_id: r.group_id,
            message_id: r.message_id,
            user_id: r.user_id,
            device_id: r.device_id,
            sender_id: r.sender_id,
            sender_device_id: r.sender_device_id,
            status: r.status,
            code: stored_code(r.code)?,
            first_code: stored_code(r.first_code)?,
            latency_ms: r.latency_ms.map(|v| v.max(0) as u64),
            first_reported_at: r.first_reported_at,
            reported_at: r.reported_at,
        })
    }
}

/// Sender (user, device) and acceptance time of a message the device received, if it did.
async fn received_message(
    tx: &mut Tx,
    user_id: &str,
    device_id: &str,
    report: &NewReport,
) -> StoreResult<Option<(String, String, OffsetDateTime)>> {
    let Some(group_id) = &report.group_id else {
        return Ok(run!(
            tx,
            sqlx::query_as(
                "SELECT sender_id, sender_device_id, created_at FROM messages \
                 WHERE message_id = $1 AND recipient_id = $2 AND recipient_device_id = $3",
            )
            .bind(&report.message_id)
            .bind(user_id)
            .bind(device_id),
            fetch_optional
        )?);
    };
    let Ok(seq) = report.message_id.parse::<i64>() else {
        return Ok(None);
    };
    let member = format!("{user_id}/{device_id}");
    let row: Option<(String, OffsetDateTime)> = run!(
        tx,
        sqlx::query_as(
            "SELECT m.sender_id, m.created_at FROM mls_messages m \
             JOIN mls_group_members g ON g.group_id = m.group_id AND g.member_id = $3 \
             WHERE m.group_id = $1 AND m.seq = $2 AND m.kind = 'application' AND m.sender_id <> $3",
        )
        .bind(group_id.as_str())
        .bind(seq)
        .bind(&member),
        fetch_optional
    )?;
    Ok(row.map(|(sender, at)| {
        let (user, device) = sender.split_once('/').unwrap_or((sender.as_str(), ""));
        (user.to_owned(), device.to_owned(), at)
    }))
}

/// Whether one more failure from `user` about a message from `sender` still counts.
async fn under_failure_caps(
    tx: &mut Tx,
    user: &str,
    sender: &str,
    caps: FailureCaps,
) -> StoreResult<bool> {
    let (by_reporter, by_sender): (i64, i64) = run!(
        tx,
        sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM decryption_reports WHERE user_id = $1 AND counted = 1 \
                  AND first_code IS NOT NULL AND reported_ms >= $3), \
               (SELECT COUNT(*) FROM decryption_reports WHERE sender_id = $2 AND counted = 1 \
                  AND first_code IS NOT NULL AND reported_ms >= $3)",
        )
        .bind(user)
        .bind(sender)
        .bind(unix_ms(caps.since)),
        fetch_one
    )?;
    Ok((by_reporter.max(0) as u64) < caps.per_reporter
        && (by_sender.max(0) as u64) < caps.per_sender)
}

/// Records one report whose message the device received; what it changed.
async fn record_one(
    tx: &mut Tx,
    (user, device): (&str, &str),
    report: &NewReport,
    (sender, sender_device, created_at): (String, String, OffsetDateTime),
    caps: FailureCaps,
    now: OffsetDateTime,
) -> StoreResult<ReportChange> {
    let group = report.group_id.as_deref().unwrap_or("");
    let previous_sql = format!(
        "SELECT status FROM decryption_reports \
         WHERE group_id = $1 AND message_id = $2 AND user_id = $3 AND device_id = $4{}",
        tx.dialect().for_update()
    );
    let previous: Option<(String,)> = run!(
        tx,
        sqlx::query_as(sqlx::AssertSqlSafe(previous_sql.as_str()))
            .bind(group)
            .bind(&report.message_id)
            .bind(user)
            .bind(device),
        fetch_optional
    )?;
    let latency = report.success.then(|| {
        i64::try_from(capped_latency(report.latency_ms, created_at, now)).unwrap_or(i64::MAX)
    });
    let now_ms = unix_ms(now);
    Ok(
        match (previous.as_ref().map(|p| p.0.as_str()), report.success) {
            (None, success) => {
                let counted = success || under_failure_caps(tx, user, &sender, caps).await?;
                run!(
                    tx,
                    sqlx::query(
                        "INSERT INTO decryption_reports (group_id, message_id, user_id, device_id, \
                       sender_id, sender_device_id, status, code, first_code, latency_ms, \
                       first_reported_at, reported_at, reported_ms, counted) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $10, $11, $12)",
                    )
                    .bind(group)
                    .bind(&report.message_id)
                    .bind(user)
                    .bind(device)
                    .bind(&sender)
                    .bind(&sender_device)
                    .bind(if success { "success" } else { "failure" })
                    .bind(report.code.map(FailureCode::as_str))
                    .bind(latency)
                    .bind(now)
                    .bind(now_ms)
                    .bind(i64::from(counted)),
                    execute
                )?;
                match (success, counted) {
                    (true, _) => ReportChange::Succeeded,
                    (false, true) => ReportChange::Failed,
                    (false, false) => ReportChange::FailedUncounted,
                }
            }
            (Some("failure"), true) => {
                run!(
                    tx,
                    sqlx::query(
                        "UPDATE decryption_reports \
                     SET status = 'recovered', latency_ms = $5, reported_at = $6, reported_ms = $7 \
                     WHERE group_id = $1 AND message_id = $2 AND user_id = $3 AND device_id = $4",
                    )
                    .bind(group)
                    .bind(&report.message_id)
                    .bind(user)
                    .bind(device)
                    .bind(latency)
                    .bind(now)
                    .bind(now_ms),
                    execute
                )?;
                ReportChange::Recovered
            }
            (Some("failure"), false) => {
                run!(
                    tx,
                    sqlx::query(
                        "UPDATE decryption_reports SET code = $5 \
                     WHERE group_id = $1 AND message_id = $2 AND user_id = $3 AND device_id = $4",
                    )
                    .bind(group)
                    .bind(&report.message_id)
                    .bind(user)
                    .bind(device)
                    .bind(report.code.map(FailureCode::as_str)),
                    execute
                )?;
                ReportChange::Unchanged
            }
            _ => ReportChange::Unchanged,
        },
    )
}

#[async_trait::async_trait]
impl<T: Backend> ReportStore for T {
    async fn record_reports(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        reports: &[NewReport],
        caps: FailureCaps,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<ReportChange>> {
        let reporter = (user_id.as_str(), device_id.as_str());
        let mut tx = self.db().begin().await?;
        // Rows are locked in one canonical order, whatever order the request listed them in.
        let mut order: Vec<usize> = (0..reports.len()).collect();
        order.sort_by_key(|&i| {
            (
                reports[i].group_id.as_deref(),
                reports[i].message_id.as_str(),
            )
        });
        let mut changes = vec![ReportChange::Unchanged; reports.len()];
        for i in order {
            let report = &reports[i];
            changes[i] = match received_message(&mut tx, reporter.0, reporter.1, report).await? {
                None => ReportChange::UnknownMessage,
                Some(message) => record_one(&mut tx, reporter, report, message, caps, now).await?,
            };
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn outcome_counts(&self, since: OffsetDateTime) -> StoreResult<OutcomeCounts> {
        let since_ms = unix_ms(since);
        let rows: Vec<(String, Option<String>, i64, i64, i64, i64)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT status, code, counted, COUNT(*), \
                   CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT), COUNT(latency_ms) \
                 FROM decryption_reports WHERE reported_ms >= $1 \
                 GROUP BY status, code, counted ORDER BY status, code",
            )
            .bind(since_ms),
            fetch_all
        )?;
        let (reporters, senders): (i64, i64) = read!(
            self.db(),
            sqlx::query_as(
                "SELECT COUNT(DISTINCT user_id), COUNT(DISTINCT sender_id) FROM decryption_reports \
                 WHERE reported_ms >= $1 AND status = 'failure' AND counted = 1",
            )
            .bind(since_ms),
            fetch_one
        )?;
        let mut counts = OutcomeCounts {
            failing_reporters: reporters.max(0) as u64,
            failing_senders: senders.max(0) as u64,
            ..Default::default()
        };
        let (mut latency_sum, mut latency_n) = (0u64, 0u64);
        for (status, code, counted, n, latency, with_latency) in rows {
            let n = n.max(0) as u64;
            if counted == 0 {
                counts.uncounted += n;
                continue;
            }
            counts.reported += n;
            latency_sum = latency_sum.saturating_add(latency.max(0) as u64);
            latency_n += with_latency.max(0) as u64;
            match status.as_str() {
                "success" => counts.succeeded += n,
                "recovered" => counts.recovered += n,
                _ => {
                    counts.failed += n;
                    counts.failures_by_code.push((code.unwrap_or_default(), n));
                }
            }
        }
        counts.avg_latency_ms = latency_sum.checked_div(latency_n).unwrap_or(0);
        Ok(counts)
    }

    async fn message_reports(
        &self,
        group_id: &str,
        message_id: &str,
    ) -> StoreResult<Vec<ReportRecord>> {
        let rows: Vec<ReportRow> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT * FROM decryption_reports WHERE group_id = $1 AND message_id = $2 \
                 ORDER BY user_id, device_id",
            )
            .bind(group_id)
            .bind(message_id),
            fetch_all
        )?;
        rows.into_iter().map(ReportRecord::try_from).collect()
    }

    async fn user_reports(
        &self,
        user_id: &UserId,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<ReportRecord>> {
        let rows: Vec<ReportRow> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT * FROM decryption_reports WHERE user_id = $1 AND reported_ms >= $2 \
                 ORDER BY reported_ms DESC, message_id LIMIT $3",
            )
            .bind(user_id.as_str())
            .bind(unix_ms(since))
            .bind(i64::from(limit)),
            fetch_all
        )?;
        rows.into_iter().map(ReportRecord::try_from).collect()
    }
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
