//! PostgreSQL backend, for several server processes sharing one database.
//! Concurrent claims and sends are made safe by row locks (`FOR UPDATE SKIP
//! LOCKED` on key claims, the device row on sequence numbers).
use crate::db::{Backend, Db, Tx};
use crate::migrations;
use crate::records::{CheckRow, SendCheck};
use crate::{NewMessage, StoreError, StoreResult, StoredSend};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

mod batch;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: PgPool,
    db: Db,
    sends: mpsc::Sender<batch::Pending>,
}

#[async_trait::async_trait]
impl Backend for PostgresStore {
    fn db(&self) -> &Db {
        &self.db
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    /// One statement, committed before it returns; the primary key tells a replay.
    async fn insert_jti_durably(&self, jti: &str, expires_at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO dpop_jti (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Joins the next batch of sends (see `batch.rs`).
    async fn store_message_durably(&self, m: &NewMessage) -> StoreResult<StoredSend> {
        let (answer, answered) = oneshot::channel();
        let closed = || StoreError::Database(sqlx::Error::PoolClosed);
        self.sends
            .send((m.clone(), answer))
            .await
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }
}

/// One send in a transaction of its own; the device row lock orders concurrent sends to a device.
pub(crate) async fn store_alone(pool: &PgPool, m: &NewMessage) -> StoreResult<StoredSend> {
    match store_once(pool, m).await {
        // A concurrent copy of this send committed first: this attempt rolled
        // back, and the next one finds the stored original (or the conflict).
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            store_once(pool, m).await
        }
        result => result,
    }
}

/// The PostgreSQL connection under a send's transaction.
fn pg(tx: &mut Tx) -> StoreResult<&mut sqlx::PgConnection> {
    tx.postgres()
        .ok_or_else(|| StoreError::Corrupt("a PostgreSQL send on another backend".into()))
}

impl PostgresStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        let db = Db::Postgres(pool.clone());
        migrations::run_migrations(&db).await?;
        let (sends, queue) = mpsc::channel(1024);
        batch::start(pool.clone(), queue);
        Ok(Self { db, pool, sends })
    }
}

async fn store_once(pool: &PgPool, m: &NewMessage) -> StoreResult<StoredSend> {
    let mut tx = Tx::Postgres(pool.begin().await?);
    if let Some((jti, expires_at)) = &m.proof_id {
        let recorded = sqlx::query(
            "INSERT INTO dpop_jti (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(pg(&mut tx)?)
        .await?;
        if recorded.rows_affected() == 0 {
            return Err(StoreError::Replay);
        }
    }
    if let SendCheck::Duplicate(stored) = check_send(&mut tx, m).await? {
        return Ok(stored);
    }
    // Device rows are locked in one canonical order, whatever order the client
    // listed them in: two sends to the same devices in opposite orders would
    // otherwise each hold the lock the other waits for.
    let mut envelopes: Vec<&atlas_proto::api::OutgoingEnvelope> = m.envelopes.iter().collect();
    envelopes.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    let mut deliveries = Vec::with_capacity(m.envelopes.len());
    for envelope in envelopes {
        let seq: i64 = sqlx::query_scalar("UPDATE devices SET next_seq = next_seq + 1 WHERE user_id = $1 AND device_id = $2 RETURNING next_seq")
                .bind(m.recipient_id.as_str())
                .bind(envelope.device_id.as_str())
                .fetch_one(pg(&mut tx)?)
                .await?;
        sqlx::query(
                "INSERT INTO messages (message_id, recipient_device_id, recipient_id, sender_id, sender_device_id, \
                   encryption_algorithm, msg_type, body, seq, created_at, session_id, resend_of, prekey_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(m.message_id.as_str())
            .bind(envelope.device_id.as_str())
            .bind(m.recipient_id.as_str())
            .bind(m.sender_id.as_str())
            .bind(m.sender_device_id.as_str())
            .bind(&m.encryption_algorithm)
            .bind(i64::from(envelope.msg_type))
            .bind(&envelope.body)
            .bind(seq)
            .bind(m.now)
            .bind(envelope.session_id.as_deref())
            .bind(m.resend_of.as_deref())
            .bind(m.prekey_key(&envelope.device_id))
            .execute(pg(&mut tx)?)
            .await?;
        deliveries.push((envelope.device_id.clone(), seq as u64));
    }
    sqlx::query(
            "INSERT INTO send_log (sender_id, sender_device_id, client_message_id, message_id, request_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(m.sender_id.as_str())
        .bind(m.sender_device_id.as_str())
        .bind(m.client_message_id.as_str())
        .bind(m.message_id.as_str())
        .bind(&m.request_hash)
        .bind(m.now)
        .execute(pg(&mut tx)?)
        .await?;
    crate::messages::insert_receipts(&mut tx, &[&m.receipt]).await?;
    tx.commit().await?;
    Ok(StoredSend {
        message_id: m.message_id.clone(),
        accepted_at: m.now,
        deliveries,
        duplicate: false,
    })
}

/// Decides whether a send is a retry, is refused, or may be stored (then
/// with the recipient's current devices and their last sequence numbers).
async fn check_send(tx: &mut Tx, m: &NewMessage) -> StoreResult<SendCheck> {
    // One round trip for both the idempotency record and the recipient's devices.
    let rows: Vec<CheckRow> = sqlx::query_as(
            "SELECT 's' AS kind, message_id AS value, request_hash AS hash, 0 AS next_seq, 0 AS queued FROM send_log \
               WHERE sender_id = $1 AND sender_device_id = $2 AND client_message_id = $3 \
             UNION ALL \
             SELECT 'd', device_id, NULL, next_seq, next_seq - acked_seq FROM devices WHERE user_id = $4 AND status = 'active'",
        )
        .bind(m.sender_id.as_str())
        .bind(m.sender_device_id.as_str())
        .bind(m.client_message_id.as_str())
        .bind(m.recipient_id.as_str())
        .fetch_all(pg(tx)?)
        .await?;
    crate::messages::judge(tx, m, rows).await
}
