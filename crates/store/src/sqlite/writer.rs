//! The writer thread: the hot writes (sends, proof ids, acknowledgements) go
//! to one thread that owns a SQLite connection of its own and commits whatever
//! has queued since its last commit in one transaction and one fsync (group
//! commit), answering each write after that commit. A statement there is a
//! function call: no hop to a driver's worker thread and back per statement,
//! which under load cost more than SQLite's own work.
//!
//! The store's other writes (rare: registrations, admin acts) keep sqlx's
//! writer connection; both take the [`WriteGate`] for their transaction, so
//! they queue in arrival order instead of meeting on SQLite's file lock.
use super::batch::{self, AckJob, Answer, Job};
use crate::db::WriteGate;
use crate::{NewMessage, StoreError, StoreResult, StoredSend};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most writes committed together.
const MAX_BATCH: usize = 512;

/// A write with where its answer goes.
struct Queued {
    job: Job,
    answer: oneshot::Sender<StoreResult<Answer>>,
}

/// The handle to the writer thread; the thread ends when this is dropped.
pub(crate) struct Writer {
    queue: mpsc::Sender<Queued>,
}

impl Writer {
    /// Opens the database at `path` for writing and starts the thread.
    pub(crate) fn start(path: &Path, gate: WriteGate) -> StoreResult<Self> {
        let conn = open(path)?;
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("atlas-sqlite-writer".into())
            .spawn(move || run(conn, &gate, jobs))
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Self { queue })
    }

    async fn submit(&self, job: Job) -> StoreResult<Answer> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Queued { job, answer })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Stores a send (see [`crate::MessageStore::store_message`]).
    pub(crate) async fn send(&self, message: NewMessage) -> StoreResult<StoredSend> {
        match self.submit(Job::Send(Box::new(message))).await? {
            Answer::Send(stored) => Ok(stored),
            _ => Err(mixed_up()),
        }
    }

    /// Records a proof id; whether it was new.
    pub(crate) async fn jti(&self, jti: String, expires_at: i64) -> StoreResult<bool> {
        match self.submit(Job::Jti(jti, expires_at)).await? {
            Answer::Jti(fresh) => Ok(fresh),
            _ => Err(mixed_up()),
        }
    }

    /// Applies an acknowledgement prepared from a read; `None` if the device's
    /// queue changed since that read (read again).
    pub(crate) async fn ack(&self, job: AckJob) -> StoreResult<Option<u64>> {
        match self.submit(Job::Ack(Box::new(job))).await? {
            Answer::Ack(acked) => Ok(acked),
            _ => Err(mixed_up()),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

fn mixed_up() -> StoreError {
    StoreError::Corrupt("the writer thread answered another kind of write".into())
}

/// The writer's connection: the same durability settings as sqlx's pools
/// (WAL, `synchronous = FULL`: a commit is on disk when it returns).
fn open(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Commits what is queued, together, until every handle is dropped.
fn run(mut conn: Connection, gate: &WriteGate, mut jobs: mpsc::Receiver<Queued>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut queued = vec![first];
        while queued.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(next) => queued.push(next),
                Err(_) => break,
            }
        }
        let (work, answers): (Vec<Job>, Vec<_>) =
            queued.into_iter().map(|q| (q.job, q.answer)).unzip();
        let committed = {
            let _held = gate.blocking_lock();
            batch::commit(&mut conn, &work)
        };
        match committed {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = work.len(), "group commit failed");
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Database(sqlx::Error::Protocol(format!(
                        "batch not committed: {e}"
                    )))));
                }
            }
        }
    }
}
