//! Storage of the audit log: entries appended one at a time in index order,
//! each with the seal its appender computed for that index, and the signed
//! checkpoints. The cryptography lives in `atlas_crypto::audit_log`.
use crate::db::{Backend, read, run};
use crate::{StoreError, StoreResult};
use atlas_proto::audit::{AuditEntry, AuditOutcome, NewAuditEntry};
use time::OffsetDateTime;

/// Advisory lock id held by an appender (PostgreSQL).
const AUDIT_LOCK: i64 = 0x0041_5544_4954;

/// Computes the seal of an entry once its index is known.
pub type Sealer<'a> = &'a (dyn Fn(u64) -> Vec<u8> + Send + Sync);

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Entries it covers.
    pub size: u64,
    /// The signed note.
    pub note: String,
}

/// Which entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// At or after this time.
    pub since: Option<OffsetDateTime>,
    /// Whose action starts with this.
    pub action: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// The audit part of the store.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `entry` at the next index, sealed by `seal(index)`, atomically
    /// with respect to other appenders; the index.
    async fn append_audit(&self, entry: &NewAuditEntry, seal: Sealer<'_>) -> StoreResult<u64>;
    /// Entries from index `from` on, in order, at most `limit`, with their seals.
    async fn audit_entries(&self, from: u64, limit: u32)
    -> StoreResult<Vec<(AuditEntry, Vec<u8>)>>;
    /// Entries matching `filter`, newest first.
    async fn audit_list(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;
    /// How many entries there are (the next index).
    async fn audit_size(&self) -> StoreResult<u64>;
    /// Stores a checkpoint; false if one of that size exists.
    async fn add_audit_checkpoint(
        &self,
        checkpoint: &StoredCheckpoint,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Every checkpoint, smallest first.
    async fn audit_checkpoints(&self) -> StoreResult<Vec<StoredCheckpoint>>;
    /// The largest checkpoint and when it was made.
    async fn latest_audit_checkpoint(
        &self,
    ) -> StoreResult<Option<(StoredCheckpoint, OffsetDateTime)>>;
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    at_ms: i64,
    actor: String,
    actor_label: String,
    source: String,
    action: String,
    target: String,
    outcome: String,
    detail: String,
    seal: Vec<u8>,
}

impl Row {
    fn into_entry(self) -> StoreResult<(AuditEntry, Vec<u8>)> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("audit entry {}: {what}", self.seq));
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.at_ms) * 1_000_000)
            .map_err(|_| corrupt("time"))?;
        // An unknown outcome is tampering, not a reason to hide the row from
        // the verifier: it is shown as failed, and its digest will not match.
        let outcome = AuditOutcome::parse(&self.outcome).unwrap_or(AuditOutcome::Failed);
        let seq = u64::try_from(self.seq).map_err(|_| corrupt("index"))?;
        Ok((
            AuditEntry {
                seq,
                entry: NewAuditEntry {
                    at: at.into(),
                    actor: self.actor,
                    actor_label: self.actor_label,
                    source: self.source,
                    action: self.action,
                    target: self.target,
                    outcome,
                    detail: self.detail,
                },
            },
            self.seal,
        ))
    }
}

const COLUMNS: &str =
    "seq, at_ms, actor, actor_label, source, action, target, outcome, detail, seal";

fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl<T: Backend> AuditStore for T {
    async fn append_audit(&self, entry: &NewAuditEntry, seal: Sealer<'_>) -> StoreResult<u64> {
        let mut tx = self.db().begin().await?;
        if let Some(conn) = tx.postgres() {
            // One appender at a time across replicas; readers are not blocked.
            // An advisory lock, not LOCK TABLE: that needs UPDATE or DELETE
            // rights, which the serving role should not have on this table.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let (next,): (i64,) = run!(
            &mut tx,
            sqlx::query_as("SELECT CAST(COALESCE(MAX(seq) + 1, 0) AS BIGINT) FROM audit_log"),
            fetch_one
        )?;
        let index = u64::try_from(next).map_err(|_| StoreError::Corrupt("audit index".into()))?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO audit_log (seq, at_ms, actor, actor_label, source, action, target, \
                 outcome, detail, seal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            )
            .bind(next)
            .bind(ms(entry.at.0))
            .bind(&entry.actor)
            .bind(&entry.actor_label)
            .bind(&entry.source)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(entry.outcome.as_str())
            .bind(&entry.detail)
            .bind(seal(index)),
            execute
        )?;
        tx.commit().await?;
        Ok(index)
    }

    async fn audit_entries(
        &self,
        from: u64,
        limit: u32,
    ) -> StoreResult<Vec<(AuditEntry, Vec<u8>)>> {
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2");
        let rows: Vec<Row> = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(i64::try_from(from).unwrap_or(i64::MAX))
                .bind(i64::from(limit)),
            fetch_all
        )?;
        rows.into_iter().map(Row::into_entry).collect()
    }

    async fn audit_list(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE at_ms >= $1 \
             AND substr(action, 1, length($2)) = $2 ORDER BY seq DESC LIMIT $3"
        );
        let rows: Vec<Row> = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(filter.since.map_or(i64::MIN, ms))
                .bind(filter.action.clone().unwrap_or_default())
                .bind(i64::from(filter.limit)),
            fetch_all
        )?;
        rows.into_iter()
            .map(|r| r.into_entry().map(|(entry, _)| entry))
            .collect()
    }

    async fn audit_size(&self) -> StoreResult<u64> {
        let (size,): (i64,) = read!(
            self.db(),
            sqlx::query_as("SELECT CAST(COALESCE(MAX(seq) + 1, 0) AS BIGINT) FROM audit_log"),
            fetch_one
        )?;
        u64::try_from(size).map_err(|_| StoreError::Corrupt("audit index".into()))
    }

    async fn add_audit_checkpoint(
        &self,
        checkpoint: &StoredCheckpoint,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let added = run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO audit_checkpoints (size, note, created_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (size) DO NOTHING"
            )
            .bind(i64::try_from(checkpoint.size).unwrap_or(i64::MAX))
            .bind(&checkpoint.note)
            .bind(ms(now)),
            execute
        )?;
        tx.commit().await?;
        Ok(added == 1)
    }

    async fn audit_checkpoints(&self) -> StoreResult<Vec<StoredCheckpoint>> {
        let rows: Vec<(i64, String)> = read!(
            self.db(),
            sqlx::query_as("SELECT size, note FROM audit_checkpoints ORDER BY size"),
            fetch_all
        )?;
        Ok(rows
            .into_iter()
            .map(|(size, note)| StoredCheckpoint {
                size: u64::try_from(size).unwrap_or(0),
                note,
            })
            .collect())
    }

    async fn latest_audit_checkpoint(
        &self,
    ) -> StoreResult<Option<(StoredCheckpoint, OffsetDateTime)>> {
        let row: Option<(i64, String, i64)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT size, note, created_ms FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
            ),
            fetch_optional
        )?;
        Ok(row.map(|(size, note, created)| {
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(created) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            (
                StoredCheckpoint {
                    size: u64::try_from(size).unwrap_or(0),
                    note,
                },
                at,
            )
        }))
    }
}
