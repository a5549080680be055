//! Storage of incidents and their timelines. The lifecycle rules live in
//! `atlas_ops::incident`; here a change is saved only if the incident is still
//! at the version the change was made from (its count of timeline entries).
use crate::db::{Backend, read, run};
use crate::{StoreError, StoreResult};
use atlas_proto::IncidentId;
use atlas_proto::incident::{
    Component, ComponentStatus, Impact, Incident, IncidentEvent, IncidentStatus, Severity,
    TimelineEntry,
};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The incident part of the store.
#[async_trait::async_trait]
pub trait IncidentStore: Send + Sync {
    /// Stores a new incident with its first entries and the notifications
    /// they make; false if the id is taken.
    async fn create_incident(
        &self,
        incident: &Incident,
        entries: &[TimelineEntry],
        notices: &[NewNotification],
    ) -> StoreResult<bool>;
    /// One incident.
    async fn incident(&self, id: &IncidentId) -> StoreResult<Option<Incident>>;
    /// Its timeline, in order.
    async fn incident_timeline(&self, id: &IncidentId) -> StoreResult<Vec<TimelineEntry>>;
    /// Saves `incident`, appends `entries` and queues `notices`, if it still
    /// has `version` entries; false when another change came first.
    async fn save_incident(
        &self,
        incident: &Incident,
        version: u64,
        entries: &[TimelineEntry],
        notices: &[NewNotification],
    ) -> StoreResult<bool>;
    /// The latest incidents, newest first; with `open_only`, those not closed.
    async fn incidents(&self, open_only: bool, limit: u32) -> StoreResult<Vec<Incident>>;
    /// What the messages and decryption reports of `[from, until)` say: a
    /// scan of that window, for an operator's post-mortem, not a hot path.
    async fn impact(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
        late_after_secs: u64,
    ) -> StoreResult<Impact>;
    /// Adds requests answered in the minute starting at `minute_ms`, by
    /// status class (`2xx`, `4xx`, `5xx` …), forgetting minutes older than 90 days.
    async fn add_request_counts(&self, minute_ms: i64, counts: &[(String, u64)])
    -> StoreResult<()>;
    /// An incident's notifications, oldest first.
    async fn incident_notifications(&self, id: &IncidentId)
    -> StoreResult<Vec<NotificationRecord>>;
    /// Takes the oldest pending notification of `destination` for `lease`,
    /// if it is due and no one holds it: notifications of one destination go
    /// out one at a time, in order, whichever replica sends them.
    async fn claim_notification(
        &self,
        destination: &str,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> StoreResult<Option<NotificationRecord>>;
    /// Records attempt `attempt` of a claimed notification and what follows.
    async fn finish_notification(
        &self,
        notification_id: &str,
        attempt: &Attempt<'_>,
    ) -> StoreResult<()>;
    /// Notifications by destination and status, for `/metrics`.
    async fn notification_counts(&self) -> StoreResult<Vec<(String, String, u64)>>;
}

/// A notification to queue.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// Its id (a UUID).
    pub notification_id: String,
    /// `slack` or `pagerduty`.
    pub destination: String,
    /// What, in a few words.
    pub summary: String,
    /// The JSON body, without secrets.
    pub payload: String,
    /// When.
    pub created_at: OffsetDateTime,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NotificationRecord {
    /// Its id.
    pub notification_id: String,
    /// The incident.
    pub incident_id: String,
    /// `slack` or `pagerduty`.
    pub destination: String,
    /// What, in a few words.
    pub summary: String,
    /// The JSON body.
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// How the last attempt failed.
    pub last_error: Option<String>,
    /// Queued when.
    pub created_at: OffsetDateTime,
    /// Next attempt not before (Unix ms).
    pub next_attempt_ms: i64,
    /// Delivered when.
    pub delivered_at: Option<OffsetDateTime>,
}

/// One delivery attempt and what follows it.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// 1, 2 …
    pub number: u32,
    /// When it ended.
    pub at: OffsetDateTime,
    /// HTTP status or network error, in words.
    pub outcome: &'a str,
    /// `delivered`, `pending` (retry at `retry_at`) or `failed`.
    pub status: &'a str,
    /// When to try again (pending).
    pub retry_at: OffsetDateTime,
    /// The destination's other notifications wait until then (its pace,
    /// kept whichever replica sends the next one).
    pub others_not_before: OffsetDateTime,
}

/// The columns of [`NotificationRecord`].
const NOTIFICATION: &str = "notification_id, incident_id, destination, summary, payload, status, \
     attempts, last_error, created_at, next_attempt_ms, delivered_at";

/// The columns of an incident, in [`Row`] order.
const COLUMNS: &str = "incident_id, severity, status, description, commander, declared_at, \
     declared_by, last_update_at, resolved_at, closed_at, closed_by, resolution, components, \
     updated_at, events, paged";

/// An `incidents` row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    incident_id: String,
    severity: String,
    status: String,
    description: String,
    commander: String,
    declared_at: OffsetDateTime,
    declared_by: String,
    last_update_at: OffsetDateTime,
    resolved_at: Option<OffsetDateTime>,
    closed_at: Option<OffsetDateTime>,
    closed_by: Option<String>,
    resolution: Option<String>,
    components: String,
    updated_at: OffsetDateTime,
    events: i64,
    paged: i64,
}

impl Row {
    fn into_incident(self) -> StoreResult<Incident> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("incident {}: {what}", self.incident_id));
        let components: BTreeMap<String, String> =
            serde_json::from_str(&self.components).map_err(|_| corrupt("components"))?;
        let components = components
            .iter()
            .map(|(c, s)| Some((Component::parse(c)?, ComponentStatus::parse(s)?)))
            .collect::<Option<BTreeMap<_, _>>>()
            .ok_or_else(|| corrupt("components"))?;
        Ok(Incident {
            id: IncidentId::new(self.incident_id.as_str()).map_err(|_| corrupt("id"))?,
            severity: Severity::parse(&self.severity).ok_or_else(|| corrupt("severity"))?,
            status: IncidentStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            events: u64::try_from(self.events).map_err(|_| corrupt("events"))?,
            components,
            description: self.description,
            commander: self.commander,
            declared_at: self.declared_at,
            declared_by: self.declared_by,
            last_update_at: self.last_update_at,
            resolved_at: self.resolved_at,
            closed_at: self.closed_at,
            closed_by: self.closed_by,
            resolution: self.resolution,
            updated_at: self.updated_at,
            paged: self.paged != 0,
        })
    }
}

/// The components as stored: `{"delivery": "partial_outage", …}`.
fn components_json(incident: &Incident) -> String {
    let map: BTreeMap<&str, &str> = incident
        .components
        .iter()
        .map(|(c, s)| (c.as_str(), s.as_str()))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// `events` as a column value.
fn version(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl<T: Backend> IncidentStore for T {
    async fn create_incident(
        &self,
        incident: &Incident,
        entries: &[TimelineEntry],
        notices: &[NewNotification],
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let taken: Option<(i64,)> = run!(
            &mut tx,
            sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM incidents WHERE incident_id = $1")
                .bind(incident.id.as_str()),
            fetch_optional
        )?;
        if taken.is_some() {
            return Ok(false);
        }
        let sql = format!(
            "INSERT INTO incidents ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        let inserted = run!(
            &mut tx,
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(incident.id.as_str())
                .bind(incident.severity.as_str())
                .bind(incident.status.as_str())
                .bind(&incident.description)
                .bind(&incident.commander)
                .bind(incident.declared_at)
                .bind(&incident.declared_by)
                .bind(incident.last_update_at)
                .bind(incident.resolved_at)
                .bind(incident.closed_at)
                .bind(&incident.closed_by)
                .bind(&incident.resolution)
                .bind(components_json(incident))
                .bind(incident.updated_at)
                .bind(version(incident.events))
                .bind(i64::from(incident.paged)),
            execute
        );
        // Two replicas declaring in the same second: the primary key decides.
        if let Err(sqlx::Error::Database(e)) = &inserted
            && e.is_unique_violation()
        {
            return Ok(false);
        }
        inserted.map_err(StoreError::Database)?;
        insert_entries(&mut tx, &incident.id, entries).await?;
        insert_notices(&mut tx, &incident.id, notices).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn incident(&self, id: &IncidentId) -> StoreResult<Option<Incident>> {
        let sql = format!("SELECT {COLUMNS} FROM incidents WHERE incident_id = $1");
        let row: Option<Row> = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(id.as_str()),
            fetch_optional
        )?;
        row.map(Row::into_incident).transpose()
    }

    async fn incident_timeline(&self, id: &IncidentId) -> StoreResult<Vec<TimelineEntry>> {
        let rows: Vec<(i64, OffsetDateTime, String, String)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT seq, at, actor, detail FROM incident_events \
                 WHERE incident_id = $1 ORDER BY seq"
            )
            .bind(id.as_str()),
            fetch_all
        )?;
        rows.into_iter()
            .map(|(seq, at, actor, detail)| {
                let event: IncidentEvent = serde_json::from_str(&detail)
                    .map_err(|_| StoreError::Corrupt(format!("incident {id}: event {seq}")))?;
                Ok(TimelineEntry {
                    seq: seq.max(0) as u64,
                    at: at.into(),
                    actor,
                    event,
                })
            })
            .collect()
    }

    async fn save_incident(
        &self,
        incident: &Incident,
        expected: u64,
        entries: &[TimelineEntry],
        notices: &[NewNotification],
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let updated = run!(
            &mut tx,
            sqlx::query(
                "UPDATE incidents SET severity = $2, status = $3, commander = $4, \
                 last_update_at = $5, resolved_at = $6, closed_at = $7, closed_by = $8, \
                 resolution = $9, components = $10, updated_at = $11, events = $12, paged = $14 \
                 WHERE incident_id = $1 AND events = $13"
            )
            .bind(incident.id.as_str())
            .bind(incident.severity.as_str())
            .bind(incident.status.as_str())
            .bind(&incident.commander)
            .bind(incident.last_update_at)
            .bind(incident.resolved_at)
            .bind(incident.closed_at)
            .bind(&incident.closed_by)
            .bind(&incident.resolution)
            .bind(components_json(incident))
            .bind(incident.updated_at)
            .bind(version(incident.events))
            .bind(version(expected))
            .bind(i64::from(incident.paged)),
            execute
        )?;
        if updated == 0 {
            return Ok(false);
        }
        insert_entries(&mut tx, &incident.id, entries).await?;
        insert_notices(&mut tx, &incident.id, notices).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn incidents(&self, open_only: bool, limit: u32) -> StoreResult<Vec<Incident>> {
        let filter = if open_only {
            "WHERE status <> 'closed' "
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM incidents {filter}ORDER BY declared_at DESC, incident_id DESC LIMIT $1"
        );
        let rows: Vec<Row> = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(i64::from(limit)),
            fetch_all
        )?;
        rows.into_iter().map(Row::into_incident).collect()
    }

    async fn impact(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
        late_after_secs: u64,
    ) -> StoreResult<Impact> {
        let d = self.db().dialect();
        let (created, delivered) = (
            d.epoch_seconds("created_at"),
            d.epoch_seconds("delivered_at"),
        );
        let late = format!("{delivered} - {created} > $3");
        let sql = format!(
            "SELECT COUNT(DISTINCT message_id), COUNT(*), \
             COUNT(CASE WHEN delivered_at IS NOT NULL AND {late} THEN 1 END), \
             COUNT(CASE WHEN delivered_at IS NULL THEN 1 END), \
             COUNT(DISTINCT CASE WHEN delivered_at IS NULL OR {late} THEN recipient_id END) \
             FROM messages WHERE {created} >= $1 AND {created} < $2"
        );
        let (messages, copies, delivered_late, undelivered, users_delayed): (
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(epoch(from))
                .bind(epoch(until))
                .bind(late_after_secs as f64),
            fetch_one
        )?;
        let reported = d.epoch_seconds("first_reported_at");
        let window = format!("first_code IS NOT NULL AND {reported} >= $1 AND {reported} < $2");
        let sql = format!(
            "SELECT first_code, COUNT(*) FROM decryption_reports WHERE {window} GROUP BY first_code"
        );
        let by_code: Vec<(String, i64)> = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(epoch(from))
                .bind(epoch(until)),
            fetch_all
        )?;
        let by_class: Vec<(String, i64)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT class, CAST(SUM(requests) AS BIGINT) FROM request_minutes \
                 WHERE minute_ms >= $1 AND minute_ms < $2 GROUP BY class"
            )
            .bind(crate::e2ee::unix_ms(from) / 60_000 * 60_000)
            .bind(crate::e2ee::unix_ms(until)),
            fetch_all
        )?;
        let class = |c: &str| {
            by_class
                .iter()
                .filter(|(k, _)| k == c)
                .map(|(_, n)| count(*n))
                .sum()
        };
        let requests = by_class.iter().map(|(_, n)| count(*n)).sum();
        let (client_errors, server_errors) = (class("4xx"), class("5xx"));
        let sql = format!("SELECT COUNT(DISTINCT user_id) FROM decryption_reports WHERE {window}");
        let (users_failing,): (i64,) = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(epoch(from))
                .bind(epoch(until)),
            fetch_one
        )?;
        Ok(Impact {
            from: Some(from.into()),
            until: Some(until.into()),
            messages: count(messages),
            copies: count(copies),
            delivered_late: count(delivered_late),
            undelivered: count(undelivered),
            late_after_secs,
            users_delayed: count(users_delayed),
            decryption_failures: by_code.into_iter().map(|(c, n)| (c, count(n))).collect(),
            users_failing: count(users_failing),
            requests,
            client_errors,
            server_errors,
        })
    }

    async fn add_request_counts(
        &self,
        minute_ms: i64,
        counts: &[(String, u64)],
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        for (class, n) in counts.iter().filter(|(_, n)| *n > 0) {
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO request_minutes (minute_ms, class, requests) VALUES ($1, $2, $3) \
                     ON CONFLICT (minute_ms, class) DO UPDATE \
                     SET requests = request_minutes.requests + excluded.requests"
                )
                .bind(minute_ms)
                .bind(class)
                .bind(version(*n)),
                execute
            )?;
        }
        run!(
            &mut tx,
            sqlx::query("DELETE FROM request_minutes WHERE minute_ms < $1")
                .bind(minute_ms - 90 * 86_400_000),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn incident_notifications(
        &self,
        id: &IncidentId,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let sql = format!(
            "SELECT {NOTIFICATION} FROM notifications WHERE incident_id = $1 \
             ORDER BY created_ms, notification_id"
        );
        Ok(read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(id.as_str()),
            fetch_all
        )?)
    }

    async fn claim_notification(
        &self,
        destination: &str,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> StoreResult<Option<NotificationRecord>> {
        // Most looks find nothing due: answer those from a reader, without
        // taking the write lock (SQLite's writer serves the send path).
        let now_ms = crate::e2ee::unix_ms(now);
        let due: Option<(i64,)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT CAST(1 AS BIGINT) FROM notifications WHERE destination = $1 \
                 AND status = 'pending' AND next_attempt_ms <= $2 AND lease_until_ms <= $2 LIMIT 1"
            )
            .bind(destination)
            .bind(now_ms),
            fetch_optional
        )?;
        if due.is_none() {
            return Ok(None);
        }
        let mut tx = self.db().begin().await?;
        let lock = tx.dialect().for_update();
        let sql = format!(
            "SELECT {NOTIFICATION}, lease_until_ms FROM notifications \
             WHERE destination = $1 AND status = 'pending' \
             ORDER BY created_ms, notification_id LIMIT 1{lock}"
        );
        #[derive(sqlx::FromRow)]
        struct Head {
            #[sqlx(flatten)]
            record: NotificationRecord,
            lease_until_ms: i64,
        }
        let head: Option<Head> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(destination),
            fetch_optional
        )?;
        let Some(head) =
            head.filter(|h| h.lease_until_ms <= now_ms && h.record.next_attempt_ms <= now_ms)
        else {
            return Ok(None);
        };
        run!(
            &mut tx,
            sqlx::query("UPDATE notifications SET lease_until_ms = $2 WHERE notification_id = $1")
                .bind(&head.record.notification_id)
                .bind(crate::e2ee::unix_ms(now + lease)),
            execute
        )?;
        tx.commit().await?;
        Ok(Some(head.record))
    }

    async fn finish_notification(
        &self,
        notification_id: &str,
        attempt: &Attempt<'_>,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO notification_attempts (notification_id, attempt, at, outcome) \
                 VALUES ($1, $2, $3, $4)"
            )
            .bind(notification_id)
            .bind(i64::from(attempt.number))
            .bind(attempt.at)
            .bind(attempt.outcome),
            execute
        )?;
        let delivered = (attempt.status == "delivered").then_some(attempt.at);
        let error = (attempt.status != "delivered").then_some(attempt.outcome);
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE notifications SET status = $2, attempts = $3, last_error = $4, \
                 next_attempt_ms = $5, lease_until_ms = 0, delivered_at = $6 \
                 WHERE notification_id = $1"
            )
            .bind(notification_id)
            .bind(attempt.status)
            .bind(i64::from(attempt.number))
            .bind(error)
            .bind(crate::e2ee::unix_ms(attempt.retry_at))
            .bind(delivered),
            execute
        )?;
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE notifications SET next_attempt_ms = $2 WHERE status = 'pending' \
                 AND next_attempt_ms < $2 AND notification_id <> $1 AND destination = \
                 (SELECT destination FROM notifications WHERE notification_id = $1)"
            )
            .bind(notification_id)
            .bind(crate::e2ee::unix_ms(attempt.others_not_before)),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn notification_counts(&self) -> StoreResult<Vec<(String, String, u64)>> {
        let rows: Vec<(String, String, i64)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT destination, status, COUNT(*) FROM notifications GROUP BY destination, status"
            ),
            fetch_all
        )?;
        Ok(rows.into_iter().map(|(d, s, n)| (d, s, count(n))).collect())
    }
}

/// Queues notifications in an open transaction.
async fn insert_notices(
    tx: &mut crate::db::Tx,
    id: &IncidentId,
    notices: &[NewNotification],
) -> StoreResult<()> {
    for n in notices {
        let ms = crate::e2ee::unix_ms(n.created_at);
        run!(
            &mut *tx,
            sqlx::query(
                "INSERT INTO notifications (notification_id, incident_id, destination, summary, \
                 payload, status, attempts, created_at, created_ms, next_attempt_ms, lease_until_ms) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $7, 0)"
            )
            .bind(&n.notification_id)
            .bind(id.as_str())
            .bind(&n.destination)
            .bind(&n.summary)
            .bind(&n.payload)
            .bind(n.created_at)
            .bind(ms),
            execute
        )?;
    }
    Ok(())
}

/// Seconds since the Unix epoch, as [`crate::db::Dialect::epoch_seconds`] reads columns.
fn epoch(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// A count as stored.
fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// Appends timeline entries in an open transaction.
async fn insert_entries(
    tx: &mut crate::db::Tx,
    id: &IncidentId,
    entries: &[TimelineEntry],
) -> StoreResult<()> {
    for entry in entries {
        let detail = serde_json::to_string(&entry.event)
            .map_err(|e| StoreError::Corrupt(format!("incident {id}: {e}")))?;
        run!(
            &mut *tx,
            sqlx::query(
                "INSERT INTO incident_events (incident_id, seq, at, actor, detail) \
                 VALUES ($1, $2, $3, $4, $5)"
            )
            .bind(id.as_str())
            .bind(version(entry.seq))
            .bind(entry.at.0)
            .bind(&entry.actor)
            .bind(detail),
            execute
        )?;
    }
    Ok(())
}
