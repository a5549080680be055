//! Sends committed together on PostgreSQL: a few committer tasks each take
//! whatever sends have queued and store them in one transaction of six round
//! trips — the proof ids, the idempotency records, the recipients' devices
//! (locked, in one canonical order), then every row in one statement — instead
//! of about eight round trips and a commit per send. Each send is answered
//! after its batch commits. A batch that fails on the database (a concurrent
//! copy of a send on another replica, a deadlock, an outage) is stored again
//! send by send on the one-transaction path, which tells each its own outcome.
use super::store_alone;
use crate::accounts::{device, user_exists};
use crate::db::Tx;
use crate::messages::{Checked, admit, classify, deliveries_of, next_seq};
use crate::records::{CheckRow, id};
use crate::{NewMessage, StoreError, StoreResult, StoredSend};
use atlas_proto::DeviceId;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most sends in one transaction.
const MAX_BATCH: usize = 256;
/// Transactions in flight at once (each on a connection of the pool).
pub(crate) const COMMITTERS: usize = 4;

/// A queued send and where its answer goes.
pub(crate) type Pending = (NewMessage, oneshot::Sender<StoreResult<StoredSend>>);

/// Starts the committers; they stop when the store (the queue's sender) is dropped.
pub(crate) fn start(pool: PgPool, queue: mpsc::Receiver<Pending>) {
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..COMMITTERS {
        let (pool, queue) = (pool.clone(), queue.clone());
        tokio::spawn(async move {
            loop {
                let batch = {
                    let mut queue = queue.lock().await;
                    let Some(first) = queue.recv().await else {
                        return;
                    };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    batch
                };
                commit(&pool, batch).await;
            }
        });
    }
}

/// Stores `batch` in one transaction, or each send alone if that fails.
async fn commit(pool: &PgPool, batch: Vec<Pending>) {
    let (messages, answers): (Vec<NewMessage>, Vec<_>) = batch.into_iter().unzip();
    match store_batch(pool, &messages).await {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, sends = messages.len(), "batch not committed; storing its sends one by one");
            for (message, answer) in messages.iter().zip(answers) {
                let _ = answer.send(store_alone(pool, message).await);
            }
        }
    }
}

/// One transaction for the batch; each send's outcome (a refusal writes nothing but its proof id).
async fn store_batch(
    pool: &PgPool,
    batch: &[NewMessage],
) -> StoreResult<Vec<StoreResult<StoredSend>>> {
    let mut tx = Tx::Postgres(pool.begin().await?);
    let mut fresh = insert_proof_ids(&mut tx, batch).await?;
    let mut logged = logged_sends(&mut tx, batch).await?;
    let devices = recipient_devices(&mut tx, batch).await?;
    let mut assigned: HashMap<(String, DeviceId), i64> = HashMap::new();
    let mut accepted: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut results: Vec<StoreResult<StoredSend>> = Vec::with_capacity(batch.len());
    let mut rows = Rows::default();
    for (i, m) in batch.iter().enumerate() {
        // A proof id is spent by the first send of the batch that carries it.
        if m.proof_id
            .as_ref()
            .is_some_and(|(jti, _)| !fresh.remove(jti.as_str()))
        {
            results.push(Err(StoreError::Replay));
            continue;
        }
        let key = (
            m.sender_id.as_str(),
            m.sender_device_id.as_str(),
            m.client_message_id.as_str(),
        );
        if let Some(&first) = accepted.get(&key) {
            // A retry that arrived in the same batch as its original.
            let same = batch[first].request_hash == m.request_hash;
            results.push(match (same, &results[first]) {
                (true, Ok(stored)) => Ok(StoredSend {
                    duplicate: true,
                    ..stored.clone()
                }),
                _ => Err(StoreError::IdempotencyConflict),
            });
            continue;
        }
        let mut check: Vec<CheckRow> = logged.remove(&i).into_iter().collect();
        // Earlier sends of this batch to a device count as stored.
        check.extend(
            devices
                .get(m.recipient_id.as_str())
                .into_iter()
                .flatten()
                .map(|(kind, name, hash, stored_next, queued)| {
                    let next = device(name.clone())
                        .ok()
                        .and_then(|d| assigned.get(&(m.recipient_id.to_string(), d)).copied())
                        .unwrap_or(*stored_next);
                    (
                        kind.clone(),
                        name.clone(),
                        hash.clone(),
                        next,
                        queued + next - stored_next,
                    )
                }),
        );
        let current = match classify(m, check) {
            Ok(Checked::Retry(message_id)) => {
                let (accepted_at, deliveries) = deliveries_of(&mut tx, &message_id).await?;
                results.push(Ok(StoredSend {
                    message_id: id(message_id)?,
                    accepted_at,
                    deliveries,
                    duplicate: true,
                }));
                continue;
            }
            Ok(Checked::Devices(current, _))
                if current.is_empty() && !user_exists(&mut tx, m.recipient_id.as_str()).await? =>
            {
                results.push(Err(StoreError::UnknownUser));
                continue;
            }
            Ok(Checked::Devices(current, full)) => admit(m, current, full),
            Err(refused) => Err(refused),
        };
        let current = match current {
            Ok(current) => current,
            Err(refused) => {
                results.push(Err(refused));
                continue;
            }
        };
        let mut deliveries = Vec::with_capacity(m.envelopes.len());
        for envelope in &m.envelopes {
            let seq = next_seq(&current, &envelope.device_id);
            assigned.insert(
                (m.recipient_id.to_string(), envelope.device_id.clone()),
                seq,
            );
            rows.message(m, envelope, seq);
            deliveries.push((envelope.device_id.clone(), seq as u64));
        }
        rows.logged(m);
        accepted.insert(key, results.len());
        results.push(Ok(StoredSend {
            message_id: m.message_id.clone(),
            accepted_at: m.now,
            deliveries,
            duplicate: false,
        }));
    }
    rows.write(&mut tx, assigned).await?;
    tx.commit().await?;
    Ok(results)
}

fn pg(tx: &mut Tx) -> StoreResult<&mut sqlx::PgConnection> {
    tx.postgres()
        .ok_or_else(|| StoreError::Corrupt("a PostgreSQL batch on another backend".into()))
}

/// Records the batch's proof ids (sorted, so two batches never wait on each other
/// in opposite orders); the ones that were new.
async fn insert_proof_ids(tx: &mut Tx, batch: &[NewMessage]) -> StoreResult<HashSet<String>> {
    let mut ids: Vec<(&str, i64)> = batch
        .iter()
        .filter_map(|m| m.proof_id.as_ref().map(|(j, e)| (j.as_str(), *e)))
        .collect();
    ids.sort_unstable();
    ids.dedup_by(|a, b| a.0 == b.0);
    let (jtis, expiries): (Vec<&str>, Vec<i64>) = ids.into_iter().unzip();
    let fresh: Vec<String> = sqlx::query_scalar(
        "INSERT INTO dpop_jti (jti, expires_at) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING RETURNING jti",
    )
    .bind(jtis)
    .bind(expiries)
    .fetch_all(pg(tx)?)
    .await?;
    Ok(fresh.into_iter().collect())
}

/// The idempotency records the batch's sends already have, by index in the batch.
async fn logged_sends(tx: &mut Tx, batch: &[NewMessage]) -> StoreResult<HashMap<usize, CheckRow>> {
    let senders: Vec<&str> = batch.iter().map(|m| m.sender_id.as_str()).collect();
    let devices: Vec<&str> = batch.iter().map(|m| m.sender_device_id.as_str()).collect();
    let ids: Vec<&str> = batch.iter().map(|m| m.client_message_id.as_str()).collect();
    let found: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT k.idx, s.message_id, s.request_hash \
         FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(sender, device, cmid, idx) \
         JOIN send_log s ON s.sender_id = k.sender AND s.sender_device_id = k.device \
           AND s.client_message_id = k.cmid",
    )
    .bind(senders)
    .bind(devices)
    .bind(ids)
    .fetch_all(pg(tx)?)
    .await?;
    Ok(found
        .into_iter()
        .map(|(idx, message_id, hash)| {
            let i = usize::try_from(idx - 1).unwrap_or(usize::MAX);
            (i, ("s".to_owned(), message_id, Some(hash), 0, 0))
        })
        .collect())
}

/// The active devices of every recipient, locked in one canonical order (so
/// concurrent batches and single sends never deadlock), as check rows by user.
async fn recipient_devices(
    tx: &mut Tx,
    batch: &[NewMessage],
) -> StoreResult<HashMap<String, Vec<CheckRow>>> {
    let mut users: Vec<&str> = batch.iter().map(|m| m.recipient_id.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT user_id, device_id, next_seq, next_seq - acked_seq FROM devices \
         WHERE user_id = ANY($1) AND status = 'active' ORDER BY user_id, device_id FOR UPDATE",
    )
    .bind(users)
    .fetch_all(pg(tx)?)
    .await?;
    let mut by_user: HashMap<String, Vec<CheckRow>> = HashMap::new();
    for (user, device, next_seq, queued) in rows {
        by_user
            .entry(user)
            .or_default()
            .push(("d".to_owned(), device, None, next_seq, queued));
    }
    Ok(by_user)
}

/// The rows of a batch's accepted sends, column by column (for `UNNEST`).
#[derive(Default)]
struct Rows {
    message_id: Vec<String>,
    device: Vec<String>,
    recipient: Vec<String>,
    sender: Vec<String>,
    sender_device: Vec<String>,
    algorithm: Vec<String>,
    msg_type: Vec<i64>,
    body: Vec<String>,
    seq: Vec<i64>,
    created_at: Vec<OffsetDateTime>,
    session_id: Vec<Option<String>>,
    resend_of: Vec<Option<String>>,
    prekey_key: Vec<Option<String>>,
    log: Vec<(String, String, String, String, Vec<u8>, OffsetDateTime)>,
    receipts: Vec<crate::ReceiptRecord>,
}

impl Rows {
    fn message(&mut self, m: &NewMessage, e: &atlas_proto::api::OutgoingEnvelope, seq: i64) {
        self.message_id.push(m.message_id.to_string());
        self.device.push(e.device_id.to_string());
        self.recipient.push(m.recipient_id.to_string());
        self.sender.push(m.sender_id.to_string());
        self.sender_device.push(m.sender_device_id.to_string());
        self.algorithm.push(m.encryption_algorithm.clone());
        self.msg_type.push(i64::from(e.msg_type));
        self.body.push(e.body.clone());
        self.seq.push(seq);
        self.created_at.push(m.now);
        self.session_id
            .push(e.session_id.as_ref().map(|s| s.to_string()));
        self.resend_of
            .push(m.resend_of.as_ref().map(|r| r.to_string()));
        self.prekey_key
            .push(m.prekey_key(&e.device_id).map(str::to_owned));
    }

    fn logged(&mut self, m: &NewMessage) {
        self.log.push((
            m.sender_id.to_string(),
            m.sender_device_id.to_string(),
            m.client_message_id.to_string(),
            m.message_id.to_string(),
            m.request_hash.clone(),
            m.now,
        ));
        self.receipts.push(m.receipt.clone());
    }

    /// Every row of the batch and the devices' new sequence numbers, in one statement.
    async fn write(
        self,
        tx: &mut Tx,
        next_seq: HashMap<(String, DeviceId), i64>,
    ) -> StoreResult<()> {
        if self.log.is_empty() {
            return Ok(());
        }
        let (mut users, mut devices, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
        for ((user, device), seq) in next_seq {
            users.push(user);
            devices.push(device.to_string());
            seqs.push(seq);
        }
        let mut log = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (a, b, c, d, e, f) in self.log {
            log.0.push(a);
            log.1.push(b);
            log.2.push(c);
            log.3.push(d);
            log.4.push(e);
            log.5.push(f);
        }
        let r = &self.receipts;
        let text = |f: fn(&crate::ReceiptRecord) -> String| r.iter().map(f).collect::<Vec<_>>();
        let times =
            |f: fn(&crate::ReceiptRecord) -> OffsetDateTime| r.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "WITH m AS (\
               INSERT INTO messages (message_id, recipient_device_id, recipient_id, sender_id, sender_device_id, \
                 encryption_algorithm, msg_type, body, seq, created_at, session_id, resend_of, prekey_key) \
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::bigint[], $8::text[], $9::bigint[], $10::timestamptz[], $11::text[], $12::text[], $13::text[])), \
             l AS (\
               INSERT INTO send_log (sender_id, sender_device_id, client_message_id, message_id, request_hash, created_at) \
               SELECT * FROM UNNEST($14::text[], $15::text[], $16::text[], $17::text[], $18::bytea[], $19::timestamptz[])), \
             r AS (\
               INSERT INTO receipts (receipt_id, message_id, receipt_type, device_id, sender_id, recipient_id, kid, jws, \
                 issued_at, expires_at, created_at) \
               SELECT a, b, c, d, e, f, g, h, i, j, i FROM UNNEST($20::text[], $21::text[], $22::text[], $23::text[], \
                 $24::text[], $25::text[], $26::text[], $27::text[], $28::timestamptz[], $29::timestamptz[]) \
                 AS x(a, b, c, d, e, f, g, h, i, j) \
               ON CONFLICT DO NOTHING) \
             UPDATE devices SET next_seq = v.seq \
             FROM UNNEST($30::text[], $31::text[], $32::bigint[]) AS v(user_id, device_id, seq) \
             WHERE devices.user_id = v.user_id AND devices.device_id = v.device_id",
        )
        .bind(self.message_id)
        .bind(self.device)
        .bind(self.recipient)
        .bind(self.sender)
        .bind(self.sender_device)
        .bind(self.algorithm)
        .bind(self.msg_type)
        .bind(self.body)
        .bind(self.seq)
        .bind(self.created_at)
        .bind(self.session_id)
        .bind(self.resend_of)
        .bind(self.prekey_key)
        .bind(log.0)
        .bind(log.1)
        .bind(log.2)
        .bind(log.3)
        .bind(log.4)
        .bind(log.5)
        .bind(text(|r| r.receipt_id.clone()))
        .bind(text(|r| r.message_id.to_string()))
        .bind(text(|r| r.receipt_type.as_str().to_owned()))
        .bind(text(|r| r.device_id.as_ref().map_or_else(String::new, |d| d.to_string())))
        .bind(text(|r| r.sender_id.to_string()))
        .bind(text(|r| r.recipient_id.to_string()))
        .bind(text(|r| r.kid.clone()))
        .bind(text(|r| r.jws.clone()))
        .bind(times(|r| r.issued_at))
        .bind(times(|r| r.expires_at))
        .bind(users)
        .bind(devices)
        .bind(seqs)
        .execute(pg(tx)?)
        .await?;
        Ok(())
    }
}
