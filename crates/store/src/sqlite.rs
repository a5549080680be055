//! SQLite backend: the embedded default. WAL with `synchronous = FULL`, so an
//! acknowledged write survives power loss; one writer connection (SQLite
//! serialises writers anyway, and this avoids busy-retries), several readers.
//! Sends are group-committed: concurrent sends share one transaction and one
//! fsync, and each is answered after the commit.
use crate::db::{Backend, Db, Tx};
use crate::migrations;
use crate::records::{CheckRow, SendCheck};
use crate::{NewMessage, StoreError, StoreResult, StoredSend};
use atlas_proto::api::OutgoingEnvelope;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most sends committed together.
const MAX_BATCH: usize = 512;

type Pending = (NewMessage, oneshot::Sender<StoreResult<StoredSend>>);

/// A write that joins the group commit, with where its answer goes.
enum Write {
    /// A send (boxed: it is large, and the queue holds many writes).
    Send(Box<Pending>),
    /// A DPoP proof id and its expiry (Unix seconds); answered whether it was new.
    Jti(String, i64, oneshot::Sender<StoreResult<bool>>),
}

/// The SQLite store.
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    db: Db,
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    fn db(&self) -> &Db {
        &self.db
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn store_message_durably(&self, m: &NewMessage) -> StoreResult<StoredSend> {
        let (answer, answered) = oneshot::channel();
        self.queue(Write::Send(Box::new((m.clone(), answer))))
            .await?;
        answered.await.map_err(|_| closed())?
    }

    /// Joins the next group commit, so recording a proof id costs a share of one fsync.
    async fn insert_jti_durably(&self, jti: &str, expires_at: i64) -> StoreResult<bool> {
        let (answer, answered) = oneshot::channel();
        self.queue(Write::Jti(jti.to_owned(), expires_at, answer))
            .await?;
        answered.await.map_err(|_| closed())?
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH` or a path) and migrates it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        if let Some(path) = sqlite_path(url) {
            owner_only(&path).map_err(sqlx::Error::Io)?;
        }
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Room for the batch statements of every size (crate::sql::SIZES) besides the fixed ones.
            .statement_cache_capacity(256);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrations::run_migrations(&Db::Sqlite {
            writer: writer.clone(),
            reader: writer.clone(),
        })
        .await?;
        if let Some(path) = sqlite_path(&url) {
            // SQLite gives its -wal and -shm files the database file's mode; make sure of it.
            for suffix in ["-wal", "-shm"] {
                let mut side = path.clone().into_os_string();
                side.push(suffix);
                let side = PathBuf::from(side);
                if side.exists() {
                    set_mode(&side, 0o600).map_err(sqlx::Error::Io)?;
                }
            }
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
        // The committer gets a thread of its own: on the shared runtime each of its
        // many small awaits would queue behind request handlers, and the single
        // writer, not the CPU, would set the pace.
        let committer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(sqlx::Error::Io)?;
        let pool = writer.clone();
        std::thread::Builder::new()
            .name("atlas-sqlite-commit".into())
            .spawn(move || committer.block_on(group_commit(pool, queue)))
            .map_err(sqlx::Error::Io)?;
        Ok(Self {
            db: Db::Sqlite { writer, reader },
            writes,
        })
    }

    async fn queue(&self, write: Write) -> StoreResult<()> {
        self.writes.send(write).await.map_err(|_| closed())
    }
}

/// The file a SQLite database URL names (`sqlite://PATH[?…]`, `sqlite:PATH` or a
/// bare path); `None` for PostgreSQL and in-memory databases.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next()?;
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// Creates the database file readable by its owner only, or makes an existing one so:
/// it holds every user's metadata and the server's (sealed) keys.
fn owner_only(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => set_mode(path, 0o600),
        Err(e) => Err(e),
    }
}

/// Sets a file's or directory's Unix permission bits (nothing elsewhere).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn closed() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

/// Commits whatever writes are queued, together, until the store is dropped.
async fn group_commit(writer: SqlitePool, mut queue: mpsc::Receiver<Write>) {
    while let Some(first) = queue.recv().await {
        let mut sends = Vec::new();
        let mut jtis = Vec::new();
        let mut next = Some(first);
        while let Some(write) = next.take() {
            match write {
                Write::Send(pending) => sends.push(*pending),
                Write::Jti(jti, expires_at, answer) => jtis.push((jti, expires_at, answer)),
            }
            if sends.len() + jtis.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        let entries: Vec<(&str, i64)> = jtis.iter().map(|(j, e, _)| (j.as_str(), *e)).collect();
        match commit_batch(&writer, &sends, &entries).await {
            Ok((results, fresh)) => {
                for ((_, answer), result) in sends.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
                for ((_, _, answer), fresh) in jtis.into_iter().zip(fresh) {
                    let _ = answer.send(Ok(fresh));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, sends = sends.len(), jtis = jtis.len(), "group commit failed");
                let failed = || {
                    StoreError::Database(sqlx::Error::Protocol(format!("batch not committed: {e}")))
                };
                for (_, answer) in sends {
                    let _ = answer.send(Err(failed()));
                }
                for (_, _, answer) in jtis {
                    let _ = answer.send(Err(failed()));
                }
            }
        }
    }
}

/// Inserts proof ids; for each, whether it was new (the first of equal ids in a batch wins).
async fn insert_jtis(
    tx: &mut sqlx::SqliteConnection,
    entries: &[(&str, i64)],
) -> Result<Vec<bool>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<(&str, i64)> = entries
        .iter()
        .copied()
        .filter(|(jti, _)| seen.insert(*jti))
        .collect();
    let mut inserted = std::collections::HashSet::new();
    for chunk in crate::sql::chunks_of_known_size(&unique) {
        let mut insert = QueryBuilder::<Sqlite>::new("INSERT INTO dpop_jti (jti, expires_at) ");
        insert.push_values(chunk, |mut row, (jti, expires_at)| {
            row.push_bind(*jti).push_bind(*expires_at);
        });
        insert.push(" ON CONFLICT DO NOTHING RETURNING jti");
        let fresh: Vec<String> = insert.build_query_scalar().fetch_all(&mut *tx).await?;
        inserted.extend(fresh);
    }
    Ok(entries
        .iter()
        .map(|(jti, _)| inserted.remove(*jti))
        .collect())
}

/// The SQLite connection under a batch's transaction.
fn sqlite(tx: &mut Tx) -> StoreResult<&mut sqlx::SqliteConnection> {
    tx.sqlite()
        .ok_or_else(|| StoreError::Corrupt("a SQLite batch on another backend".into()))
}

/// A [`CheckRow`] with the index of the send in its batch in front.
type IndexedCheckRow = (i64, String, String, Option<Vec<u8>>, i64, i64);

/// The check rows of many sends, in one round trip per chunk.
async fn check_rows(
    tx: &mut sqlx::SqliteConnection,
    batch: &[Pending],
) -> Result<Vec<Vec<CheckRow>>, StoreError> {
    let mut out = vec![Vec::new(); batch.len()];
    let mut offset = 0;
    for chunk in crate::sql::chunks_of_known_size(batch) {
        let mut query = QueryBuilder::<Sqlite>::new("");
        for (j, (m, _)) in chunk.iter().enumerate() {
            if j > 0 {
                query.push(" UNION ALL ");
            }
            // The index is bound too, so the statement text depends only on the chunk size.
            query
                .push("SELECT ")
                .push_bind((offset + j) as i64)
                .push(" AS idx, 's' AS kind, message_id AS value, request_hash AS hash, 0 AS next_seq, 0 AS queued FROM send_log WHERE sender_id = ")
                .push_bind(m.sender_id.as_str())
                .push(" AND sender_device_id = ")
                .push_bind(m.sender_device_id.as_str())
                .push(" AND client_message_id = ")
                .push_bind(m.client_message_id.as_str())
                .push(" UNION ALL SELECT ")
                .push_bind((offset + j) as i64)
                .push(", 'd', device_id, NULL, next_seq, next_seq - acked_seq FROM devices WHERE user_id = ")
                .push_bind(m.recipient_id.as_str())
                .push(" AND status = 'active'");
        }
        offset += chunk.len();
        let rows: Vec<IndexedCheckRow> = query.build_query_as().fetch_all(&mut *tx).await?;
        for (idx, kind, value, hash, next_seq, queued) in rows {
            let slot = usize::try_from(idx)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StoreError::Corrupt("check row index".into()))?;
            slot.push((kind, value, hash, next_seq, queued));
        }
    }
    Ok(out)
}

/// One transaction for the whole batch, in a handful of round trips: one query
/// checks every send, then the writes of all accepted sends go out as a few
/// multi-row statements, with sequence numbers assigned here, since this task
/// is the only writer. A send refused for a client reason writes nothing; a database
/// error fails the batch and every sender retries (sends are idempotent).
/// Proof ids queued meanwhile are recorded in the same transaction.
async fn commit_batch(
    writer: &SqlitePool,
    batch: &[Pending],
    jtis: &[(&str, i64)],
) -> Result<(Vec<StoreResult<StoredSend>>, Vec<bool>), StoreError> {
    let mut tx = Tx::Sqlite(writer.begin().await?);
    // Proof ids of sends are recorded in this transaction too: a replayed send is refused.
    let mut all_jtis: Vec<(&str, i64)> = jtis.to_vec();
    all_jtis.extend(
        batch
            .iter()
            .filter_map(|(m, _)| m.proof_id.as_ref().map(|(j, e)| (j.as_str(), *e))),
    );
    let mut fresh = insert_jtis(sqlite(&mut tx)?, &all_jtis).await?;
    let mut send_fresh = fresh.split_off(jtis.len()).into_iter();
    let mut results: Vec<StoreResult<StoredSend>> = Vec::with_capacity(batch.len());
    let mut next_seq: HashMap<(&str, &str), i64> = HashMap::new();
    let mut accepted: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut rows: Vec<(&NewMessage, &OutgoingEnvelope, i64)> = Vec::new();
    let mut logged: Vec<&NewMessage> = Vec::new();
    let checks = check_rows(sqlite(&mut tx)?, batch).await?;
    for ((m, _), checked) in batch.iter().zip(checks) {
        if m.proof_id.is_some() && send_fresh.next() == Some(false) {
            results.push(Err(StoreError::Replay));
            continue;
        }
        let key = (
            m.sender_id.as_str(),
            m.sender_device_id.as_str(),
            m.client_message_id.as_str(),
        );
        if let Some(&first) = accepted.get(&key) {
            // A retry that arrived in the same batch as the original.
            let same = batch
                .get(first)
                .is_some_and(|(original, _)| original.request_hash == m.request_hash);
            results.push(match (same, results.get(first)) {
                (true, Some(Ok(stored))) => Ok(StoredSend {
                    duplicate: true,
                    ..stored.clone()
                }),
                _ => Err(StoreError::IdempotencyConflict),
            });
            continue;
        }
        match crate::messages::judge(&mut tx, m, checked).await {
            Ok(SendCheck::Duplicate(stored)) => results.push(Ok(stored)),
            Ok(SendCheck::Accept(devices)) => {
                let mut deliveries = Vec::with_capacity(m.envelopes.len());
                for envelope in &m.envelopes {
                    let stored_seq = devices
                        .iter()
                        .find(|(d, _)| *d == envelope.device_id)
                        .map_or(0, |(_, seq)| *seq);
                    let seq = next_seq
                        .entry((m.recipient_id.as_str(), envelope.device_id.as_str()))
                        .or_insert(stored_seq);
                    *seq += 1;
                    rows.push((m, envelope, *seq));
                    deliveries.push((envelope.device_id.clone(), *seq as u64));
                }
                logged.push(m);
                accepted.insert(key, results.len());
                results.push(Ok(StoredSend {
                    message_id: m.message_id.clone(),
                    accepted_at: m.now,
                    deliveries,
                    duplicate: false,
                }));
            }
            Err(e @ (StoreError::Database(_) | StoreError::Corrupt(_))) => return Err(e),
            Err(refused) => results.push(Err(refused)),
        }
    }
    for chunk in crate::sql::chunks_of_known_size(&rows) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (message_id, recipient_device_id, recipient_id, sender_id, sender_device_id, \
             encryption_algorithm, msg_type, body, seq, created_at, session_id, resend_of, prekey_key) ",
        );
        insert.push_values(chunk, |mut row, (m, envelope, seq)| {
            row.push_bind(m.message_id.as_str())
                .push_bind(envelope.device_id.as_str())
                .push_bind(m.recipient_id.as_str())
                .push_bind(m.sender_id.as_str())
                .push_bind(m.sender_device_id.as_str())
                .push_bind(m.encryption_algorithm.as_str())
                .push_bind(i64::from(envelope.msg_type))
                .push_bind(envelope.body.as_str())
                .push_bind(*seq)
                .push_bind(m.now)
                .push_bind(envelope.session_id.as_deref())
                .push_bind(m.resend_of.as_deref())
                .push_bind(m.prekey_key(&envelope.device_id));
        });
        insert.build().execute(sqlite(&mut tx)?).await?;
    }
    for chunk in crate::sql::chunks_of_known_size(&logged) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO send_log (sender_id, sender_device_id, client_message_id, message_id, request_hash, created_at) ",
        );
        insert.push_values(chunk, |mut row, m| {
            row.push_bind(m.sender_id.as_str())
                .push_bind(m.sender_device_id.as_str())
                .push_bind(m.client_message_id.as_str())
                .push_bind(m.message_id.as_str())
                .push_bind(m.request_hash.as_slice())
                .push_bind(m.now);
        });
        insert.build().execute(sqlite(&mut tx)?).await?;
    }
    let receipts: Vec<_> = logged.iter().map(|m| &m.receipt).collect();
    crate::messages::insert_receipts(&mut tx, &receipts).await?;
    let counters: Vec<_> = next_seq.into_iter().collect();
    for chunk in crate::sql::chunks_of_known_size(&counters) {
        let mut update =
            QueryBuilder::<Sqlite>::new("UPDATE devices SET next_seq = v.column3 FROM (");
        update.push_values(chunk, |mut row, ((user, device), seq)| {
            row.push_bind(*user).push_bind(*device).push_bind(*seq);
        });
        update.push(") AS v WHERE devices.user_id = v.column1 AND devices.device_id = v.column2");
        update.build().execute(sqlite(&mut tx)?).await?;
    }
    tx.commit().await?;
    Ok((results, fresh))
}
