//! [`crate::ReportStore`] in the SQL both backends share (see `sql.rs`).

/// Implements [`crate::ReportStore`] for a backend struct with `writer` and `reader` pools.
macro_rules! impl_report_store {
    ($store:ty, $db:ty, lock_rows = $lock_rows:literal) => {
        impl $store {
            fn report_record(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::ReportRecord> {
                use sqlx::Row;
                Ok($crate::ReportRecord {
                    group_id: row.try_get("group_id")?,
                    message_id: row.try_get("message_id")?,
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    sender_id: row.try_get("sender_id")?,
                    sender_device_id: row.try_get("sender_device_id")?,
                    status: row.try_get("status")?,
                    code: row.try_get("code")?,
                    first_code: row.try_get("first_code")?,
                    latency_ms: row.try_get::<Option<i64>, _>("latency_ms")?.map(|v| v.max(0) as u64),
                    first_reported_at: row.try_get("first_reported_at")?,
                    reported_at: row.try_get("reported_at")?,
                })
            }

            /// Sender and acceptance time of a message the device received, if it did.
            async fn received_message(
                conn: &mut <$db as sqlx::Database>::Connection,
                user_id: &str,
                device_id: &str,
                report: &$crate::NewReport,
            ) -> $crate::StoreResult<Option<(String, String, time::OffsetDateTime)>> {
                let Some(group_id) = &report.group_id else {
                    return Ok(sqlx::query_as(
                        "SELECT sender_id, sender_device_id, created_at FROM messages \
                         WHERE message_id = $1 AND recipient_id = $2 AND recipient_device_id = $3",
                    )
                    .bind(&report.message_id)
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_optional(&mut *conn)
                    .await?);
                };
                let Ok(seq) = report.message_id.parse::<i64>() else {
                    return Ok(None);
                };
                let member = format!("{user_id}/{device_id}");
                let row: Option<(String, time::OffsetDateTime)> = sqlx::query_as(
                    "SELECT m.sender_id, m.created_at FROM mls_messages m \
                     JOIN mls_group_members g ON g.group_id = m.group_id AND g.member_id = $3 \
                     WHERE m.group_id = $1 AND m.seq = $2 AND m.kind = 'application' AND m.sender_id <> $3",
                )
                .bind(group_id)
                .bind(seq)
                .bind(&member)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(row.map(|(sender, at)| {
                    let (user, device) = sender.split_once('/').unwrap_or((sender.as_str(), ""));
                    (user.to_owned(), device.to_owned(), at)
                }))
            }
        }

        impl $store {
            /// Whether one more failure from `user` about a message from `sender` still counts.
            async fn under_failure_caps(
                conn: &mut <$db as sqlx::Database>::Connection,
                user: &str,
                sender: &str,
                caps: $crate::FailureCaps,
            ) -> $crate::StoreResult<bool> {
                let (by_reporter, by_sender): (i64, i64) = sqlx::query_as(
                    "SELECT \
                       (SELECT COUNT(*) FROM decryption_reports WHERE user_id = $1 AND counted = 1 AND first_code IS NOT NULL AND reported_ms >= $3), \
                       (SELECT COUNT(*) FROM decryption_reports WHERE sender_id = $2 AND counted = 1 AND first_code IS NOT NULL AND reported_ms >= $3)",
                )
                .bind(user)
                .bind(sender)
                .bind($crate::e2ee::unix_ms(caps.since))
                .fetch_one(&mut *conn)
                .await?;
                Ok((by_reporter.max(0) as u64) < caps.per_reporter && (by_sender.max(0) as u64) < caps.per_sender)
            }
        }

        #[async_trait::async_trait]
        impl $crate::ReportStore for $store {
            async fn record_reports(
                &self,
                user_id: &atlas_proto::UserId,
                device_id: &atlas_proto::DeviceId,
                reports: &[$crate::NewReport],
                caps: $crate::FailureCaps,
                now: time::OffsetDateTime,
            ) -> $crate::StoreResult<Vec<$crate::ReportChange>> {
                use $crate::ReportChange;
                let (user, device) = (user_id.as_str(), device_id.as_str());
                let now_ms = $crate::e2ee::unix_ms(now);
                let mut tx = self.writer.begin().await?;
                let mut changes: Vec<Option<ReportChange>> = reports.iter().map(|_| None).collect();
                // Rows are locked in one canonical order, whatever order the request listed them in.
                let mut order: Vec<(&$crate::NewReport, &mut Option<ReportChange>)> = reports.iter().zip(changes.iter_mut()).collect();
                order.sort_by(|(a, _), (b, _)| (a.group_id.as_deref(), &a.message_id).cmp(&(b.group_id.as_deref(), &b.message_id)));
                for (report, slot) in order {
                    let Some((sender, sender_device, created_at)) =
                        Self::received_message(&mut tx, user, device, report).await?
                    else {
                        *slot = Some(ReportChange::UnknownMessage);
                        continue;
                    };
                    let group = report.group_id.as_deref().unwrap_or("");
                    let previous: Option<(String,)> = sqlx::query_as(concat!(
                        "SELECT status FROM decryption_reports WHERE group_id = $1 AND message_id = $2 AND user_id = $3 AND device_id = $4",
                        $lock_rows
                    ))
                    .bind(group)
                    .bind(&report.message_id)
                    .bind(user)
                    .bind(device)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let latency = report.success.then(|| {
                        i64::try_from($crate::e2ee::capped_latency(report.latency_ms, created_at, now)).unwrap_or(i64::MAX)
                    });
                    let change = match (previous.as_ref().map(|p| p.0.as_str()), report.success) {
                        (None, success) => {
                            let counted = success || Self::under_failure_caps(&mut tx, user, &sender, caps).await?;
                            sqlx::query(
                                "INSERT INTO decryption_reports (group_id, message_id, user_id, device_id, sender_id, sender_device_id, \
                                   status, code, first_code, latency_ms, first_reported_at, reported_at, reported_ms, counted) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $10, $11, $12)",
                            )
                            .bind(group)
                            .bind(&report.message_id)
                            .bind(user)
                            .bind(device)
                            .bind(&sender)
                            .bind(&sender_device)
                            .bind(if success { "success" } else { "failure" })
                            .bind(report.code.as_deref())
                            .bind(latency)
                            .bind(now)
                            .bind(now_ms)
                            .bind(i64::from(counted))
                            .execute(&mut *tx)
                            .await?;
                            match (success, counted) {
                                (true, _) => ReportChange::Succeeded,
                                (false, true) => ReportChange::Failed,
                                (false, false) => ReportChange::FailedUncounted,
                            }
                        }
                        (Some("failure"), true) => {
                            sqlx::query(
                                "UPDATE decryption_reports SET status = 'recovered', latency_ms = $5, reported_at = $6, reported_ms = $7 \
                                 WHERE group_id = $1 AND message_id = $2 AND user_id = $3 AND device_id = $4",
                            )
                            .bind(group)
                            .bind(&report.message_id)
                            .bind(user)
                            .bind(device)
                            .bind(latency)
                            .bind(now)
                            .bind(now_ms)
                            .execute(&mut *tx)
                            .await?;
                            ReportChange::Recovered
                        }
                        (Some("failure"), false) => {
                            sqlx::query(
                                "UPDATE decryption_reports SET code = $5 \
                                 WHERE group_id = $1 AND message_id = $2 AND user_id = $3 AND device_id = $4",
                            )
                            .bind(group)
                            .bind(&report.message_id)
                            .bind(user)
                            .bind(device)
                            .bind(report.code.as_deref())
                            .execute(&mut *tx)
                            .await?;
                            ReportChange::Unchanged
                        }
                        _ => ReportChange::Unchanged,
                    };
                    *slot = Some(change);
                }
                tx.commit().await?;
                Ok(changes.into_iter().map(|c| c.unwrap_or(ReportChange::Unchanged)).collect())
            }

            async fn outcome_counts(&self, since: time::OffsetDateTime) -> $crate::StoreResult<$crate::OutcomeCounts> {
                let since_ms = $crate::e2ee::unix_ms(since);
                let rows: Vec<(String, Option<String>, i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT status, code, counted, COUNT(*), CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT), COUNT(latency_ms) \
                     FROM decryption_reports WHERE reported_ms >= $1 GROUP BY status, code, counted ORDER BY status, code",
                )
                .bind(since_ms)
                .fetch_all(&self.reader)
                .await?;
                let (reporters, senders): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(DISTINCT user_id), COUNT(DISTINCT sender_id) FROM decryption_reports \
                     WHERE reported_ms >= $1 AND status = 'failure' AND counted = 1",
                )
                .bind(since_ms)
                .fetch_one(&self.reader)
                .await?;
                let mut counts = $crate::OutcomeCounts {
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

            async fn message_reports(&self, group_id: &str, message_id: &str) -> $crate::StoreResult<Vec<$crate::ReportRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM decryption_reports WHERE group_id = $1 AND message_id = $2 ORDER BY user_id, device_id",
                )
                .bind(group_id)
                .bind(message_id)
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::report_record).collect()
            }

            async fn user_reports(&self, user_id: &atlas_proto::UserId, since: time::OffsetDateTime, limit: u32) -> $crate::StoreResult<Vec<$crate::ReportRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM decryption_reports WHERE user_id = $1 AND reported_ms >= $2 ORDER BY reported_ms DESC, message_id LIMIT $3",
                )
                .bind(user_id.as_str())
                .bind($crate::e2ee::unix_ms(since))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::report_record).collect()
            }
        }
    };
}

pub(crate) use impl_report_store;
