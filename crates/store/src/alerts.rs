//! Alerts Alertmanager reported, kept 90 days for incidents' timelines.
use crate::db::{Backend, read, run};
use crate::e2ee::unix_ms;
use crate::{StoreError, StoreResult};
use atlas_proto::incident::AlertRecord;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// How long alerts are kept.
pub const ALERTS_KEPT: time::Duration = time::Duration::days(90);

/// The alert part of the store.
#[async_trait::async_trait]
pub trait AlertStore: Send + Sync {
    /// Records alerts (a later notification of the same alert and start
    /// updates it: resolved, with its end), forgetting those older than [`ALERTS_KEPT`].
    async fn record_alerts(&self, alerts: &[AlertRecord], now: OffsetDateTime) -> StoreResult<()>;
    /// Alerts that started or ended in `[from, until]`, oldest first, at most `limit`.
    async fn alerts_between(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<AlertRecord>>;
}

#[derive(sqlx::FromRow)]
struct Row {
    fingerprint: String,
    starts_at: OffsetDateTime,
    ends_at: Option<OffsetDateTime>,
    status: String,
    alertname: String,
    severity: String,
    summary: String,
    labels: String,
}

#[async_trait::async_trait]
impl<T: Backend> AlertStore for T {
    async fn record_alerts(&self, alerts: &[AlertRecord], now: OffsetDateTime) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        for a in alerts {
            let labels = serde_json::to_string(&a.labels)
                .map_err(|e| StoreError::Corrupt(format!("alert labels: {e}")))?;
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO alerts (fingerprint, starts_ms, starts_at, ends_at, status, \
                     alertname, severity, summary, labels, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (fingerprint, starts_ms) DO UPDATE SET ends_at = excluded.ends_at, \
                     status = excluded.status, summary = excluded.summary, \
                     received_at = excluded.received_at"
                )
                .bind(&a.fingerprint)
                .bind(unix_ms(a.starts_at.0))
                .bind(a.starts_at.0)
                .bind(a.ends_at.map(|t| t.0))
                .bind(&a.status)
                .bind(&a.alertname)
                .bind(&a.severity)
                .bind(&a.summary)
                .bind(labels)
                .bind(now),
                execute
            )?;
        }
        run!(
            &mut tx,
            sqlx::query("DELETE FROM alerts WHERE starts_ms < $1").bind(unix_ms(now - ALERTS_KEPT)),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn alerts_between(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<AlertRecord>> {
        let ends = self.db().dialect().epoch_seconds("ends_at");
        let sql = format!(
            "SELECT fingerprint, starts_at, ends_at, status, alertname, severity, summary, labels \
             FROM alerts WHERE (starts_ms >= $1 AND starts_ms <= $2) \
             OR (ends_at IS NOT NULL AND {ends} * 1000.0 >= $1 AND {ends} * 1000.0 <= $2 \
             AND starts_ms <= $2) \
             ORDER BY starts_ms LIMIT $3"
        );
        let rows: Vec<Row> = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(unix_ms(from))
                .bind(unix_ms(until))
                .bind(i64::from(limit)),
            fetch_all
        )?;
        rows.into_iter()
            .map(|r| {
                let labels: BTreeMap<String, String> = serde_json::from_str(&r.labels)
                    .map_err(|_| StoreError::Corrupt(format!("alert {}: labels", r.fingerprint)))?;
                Ok(AlertRecord {
                    fingerprint: r.fingerprint,
                    starts_at: r.starts_at.into(),
                    ends_at: r.ends_at.map(Into::into),
                    status: r.status,
                    alertname: r.alertname,
                    severity: r.severity,
                    summary: r.summary,
                    labels,
                })
            })
            .collect()
    }
}
