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
    /// Stores a new incident with its first entries; false if the id is taken.
    async fn create_incident(
        &self,
        incident: &Incident,
        entries: &[TimelineEntry],
    ) -> StoreResult<bool>;
    /// One incident.
    async fn incident(&self, id: &IncidentId) -> StoreResult<Option<Incident>>;
    /// Its timeline, in order.
    async fn incident_timeline(&self, id: &IncidentId) -> StoreResult<Vec<TimelineEntry>>;
    /// Saves `incident` and appends `entries`, if it still has `version`
    /// entries; false when another change came first.
    async fn save_incident(
        &self,
        incident: &Incident,
        version: u64,
        entries: &[TimelineEntry],
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
}

/// The columns of an incident, in [`Row`] order.
const COLUMNS: &str = "incident_id, severity, status, description, commander, declared_at, \
     declared_by, last_update_at, resolved_at, closed_at, closed_by, resolution, components, \
     updated_at, events";

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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
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
                .bind(version(incident.events)),
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
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let updated = run!(
            &mut tx,
            sqlx::query(
                "UPDATE incidents SET severity = $2, status = $3, commander = $4, \
                 last_update_at = $5, resolved_at = $6, closed_at = $7, closed_by = $8, \
                 resolution = $9, components = $10, updated_at = $11, events = $12 \
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
            .bind(version(expected)),
            execute
        )?;
        if updated == 0 {
            return Ok(false);
        }
        insert_entries(&mut tx, &incident.id, entries).await?;
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
        })
    }
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
