//! One group commit on the writer thread's connection: the queued writes in
//! arrival order, in one `BEGIN IMMEDIATE` transaction. Each write sees the
//! ones before it, so sequence numbers and retries within a batch need no
//! bookkeeping of their own. A write refused for the client's reason writes
//! nothing of its own (a send's proof id stays recorded: the proof is spent);
//! a database error fails the whole batch and every writer retries (sends are
//! idempotent).
use crate::accounts::device;
use crate::messages::{Checked, admit, classify, next_seq};
use crate::records::{CheckRow, id};
use crate::{NewMessage, ReceiptRecord, StoreError, StoreResult, StoredSend};
use atlas_proto::{DeviceId, MessageId, UserId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A write for the writer thread.
pub(crate) enum Job {
    /// A send (boxed: it is large, and the queue holds many writes).
    Send(Box<NewMessage>),
    /// A DPoP proof id and its expiry (Unix seconds).
    Jti(String, i64),
    /// An acknowledgement with its receipts signed.
    Ack(Box<AckJob>),
}

/// An acknowledgement prepared from a read of the device's queue.
pub(crate) struct AckJob {
    /// The acknowledging user.
    pub user_id: UserId,
    /// The acknowledging device.
    pub device_id: DeviceId,
    /// Everything up to this sequence number was processed.
    pub up_to: i64,
    /// When.
    pub now: OffsetDateTime,
    /// The undelivered messages the read found, in sequence order.
    pub expected: Vec<MessageId>,
    /// Their `delivered` receipts.
    pub receipts: Vec<ReceiptRecord>,
}

/// The outcome of one [`Job`].
pub(crate) enum Answer {
    /// The stored send.
    Send(StoredSend),
    /// Whether the proof id was new.
    Jti(bool),
    /// How many messages were acknowledged; `None` if the queue changed since the read.
    Ack(Option<u64>),
}

/// Runs `jobs` in one transaction and commits it (synced before it returns);
/// the outcome of each, in order. Each job runs under a savepoint, so one that
/// fails (even on a database error) leaves the others' writes alone.
pub(crate) fn commit(conn: &mut Connection, jobs: &[Job]) -> StoreResult<Vec<StoreResult<Answer>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        tx.prepare_cached("SAVEPOINT job")?.execute([])?;
        let answer = match job {
            Job::Jti(jti, expires_at) => insert_jti(&tx, jti, *expires_at).map(Answer::Jti),
            Job::Send(m) => send(&tx, m).map(Answer::Send),
            Job::Ack(job) => ack(&tx, job).map(Answer::Ack),
        };
        if let Err(e @ (StoreError::Sqlite(_) | StoreError::Corrupt(_))) = &answer {
            tracing::error!(error = %e, "a write failed; the rest of its batch goes on");
            tx.prepare_cached("ROLLBACK TO job")?.execute([])?;
        }
        tx.prepare_cached("RELEASE job")?.execute([])?;
        answers.push(answer);
    }
    tx.commit()?;
    Ok(answers)
}

/// How sqlx stores a time in SQLite (RFC 3339 text), so both drivers read each other's rows.
fn text(t: OffsetDateTime) -> StoreResult<String> {
    t.format(&Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("time {t}: {e}")))
}

fn time_of(s: &str) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| StoreError::Corrupt(format!("time {s}: {e}")))
}

/// Records a proof id; whether it was new.
fn insert_jti(tx: &Transaction, jti: &str, expires_at: i64) -> StoreResult<bool> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO dpop_jti (jti, expires_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    Ok(insert.execute(params![jti, expires_at])? == 1)
}

/// Stores one send, or says why not: the checks first, then the writes.
fn send(tx: &Transaction, m: &NewMessage) -> StoreResult<StoredSend> {
    if let Some((jti, expires_at)) = &m.proof_id
        && !insert_jti(tx, jti, *expires_at)?
    {
        return Err(StoreError::Replay);
    }
    let current = match classify(m, check_rows(tx, m)?)? {
        Checked::Retry(message_id) => return stored(tx, message_id),
        Checked::Devices(current, _)
            if current.is_empty() && !user_exists(tx, m.recipient_id.as_str())? =>
        {
            return Err(StoreError::UnknownUser);
        }
        Checked::Devices(current, full) => admit(m, current, full)?,
    };
    let now = text(m.now)?;
    let mut advance = tx.prepare_cached(
        "UPDATE devices SET next_seq = next_seq + 1 WHERE user_id = ?1 AND device_id = ?2",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (message_id, recipient_device_id, recipient_id, sender_id, sender_device_id, \
           encryption_algorithm, msg_type, body, seq, created_at, session_id, resend_of, prekey_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let mut deliveries = Vec::with_capacity(m.envelopes.len());
    for envelope in &m.envelopes {
        let seq = next_seq(&current, &envelope.device_id);
        advance.execute(params![
            m.recipient_id.as_str(),
            envelope.device_id.as_str()
        ])?;
        insert.execute(params![
            m.message_id.as_str(),
            envelope.device_id.as_str(),
            m.recipient_id.as_str(),
            m.sender_id.as_str(),
            m.sender_device_id.as_str(),
            m.encryption_algorithm,
            i64::from(envelope.msg_type),
            envelope.body,
            seq,
            now,
            envelope.session_id.as_deref(),
            m.resend_of.as_deref(),
            m.prekey_key(&envelope.device_id),
        ])?;
        deliveries.push((envelope.device_id.clone(), seq.max(0) as u64));
    }
    tx.prepare_cached(
        "INSERT INTO send_log (sender_id, sender_device_id, client_message_id, message_id, request_hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        m.sender_id.as_str(),
        m.sender_device_id.as_str(),
        m.client_message_id.as_str(),
        m.message_id.as_str(),
        m.request_hash,
        now,
    ])?;
    insert_receipt(tx, &m.receipt)?;
    Ok(StoredSend {
        message_id: m.message_id.clone(),
        accepted_at: m.now,
        deliveries,
        duplicate: false,
    })
}

/// The send's idempotency record (if any) and the recipient's active devices.
fn check_rows(tx: &Transaction, m: &NewMessage) -> StoreResult<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let logged = tx
        .prepare_cached(
            "SELECT message_id, request_hash FROM send_log \
             WHERE sender_id = ?1 AND sender_device_id = ?2 AND client_message_id = ?3",
        )?
        .query_row(
            params![
                m.sender_id.as_str(),
                m.sender_device_id.as_str(),
                m.client_message_id.as_str()
            ],
            |r| Ok(("s".to_owned(), r.get(0)?, Some(r.get(1)?), 0, 0)),
        )
        .optional()?;
    rows.extend(logged);
    let mut devices = tx.prepare_cached(
        "SELECT device_id, next_seq, next_seq - acked_seq FROM devices \
         WHERE user_id = ?1 AND status = 'active'",
    )?;
    let found = devices.query_map([m.recipient_id.as_str()], |r| {
        Ok(("d".to_owned(), r.get(0)?, None, r.get(1)?, r.get(2)?))
    })?;
    for row in found {
        rows.push(row?);
    }
    Ok(rows)
}

/// A stored send, answered to its retry.
fn stored(tx: &Transaction, message_id: String) -> StoreResult<StoredSend> {
    let mut select = tx.prepare_cached(
        "SELECT recipient_device_id, seq, created_at FROM messages WHERE message_id = ?1 \
         ORDER BY recipient_device_id",
    )?;
    let rows = select.query_map([message_id.as_str()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut accepted_at = OffsetDateTime::UNIX_EPOCH;
    let mut deliveries = Vec::new();
    for row in rows {
        let (recipient_device, seq, created_at) = row?;
        accepted_at = time_of(&created_at)?;
        deliveries.push((device(recipient_device)?, seq.max(0) as u64));
    }
    Ok(StoredSend {
        message_id: id(message_id)?,
        accepted_at,
        deliveries,
        duplicate: true,
    })
}

fn user_exists(tx: &Transaction, user_id: &str) -> StoreResult<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?
        .exists([user_id])?)
}

fn insert_receipt(tx: &Transaction, r: &ReceiptRecord) -> StoreResult<()> {
    let issued_at = text(r.issued_at)?;
    tx.prepare_cached(
        "INSERT INTO receipts (receipt_id, message_id, receipt_type, device_id, sender_id, \
           recipient_id, kid, jws, issued_at, expires_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9) ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        r.receipt_id,
        r.message_id.as_str(),
        r.receipt_type.as_str(),
        r.device_id.as_ref().map_or("", |d| d.as_str()),
        r.sender_id.as_str(),
        r.recipient_id.as_str(),
        r.kid,
        r.jws,
        issued_at,
        text(r.expires_at)?,
    ])?;
    Ok(())
}

/// Marks the acknowledged messages delivered (dropping their ciphertext) and
/// stores their receipts, if the device's queue is still what the read found.
fn ack(tx: &Transaction, job: &AckJob) -> StoreResult<Option<u64>> {
    let (user, device) = (job.user_id.as_str(), job.device_id.as_str());
    let mut select = tx.prepare_cached(
        "SELECT message_id FROM messages WHERE recipient_id = ?1 AND recipient_device_id = ?2 \
           AND seq <= ?3 AND delivered_at IS NULL ORDER BY seq",
    )?;
    let found = select.query_map(params![user, device, job.up_to], |r| r.get::<_, String>(0))?;
    let mut pending = Vec::with_capacity(job.expected.len());
    for message_id in found {
        pending.push(message_id?);
    }
    if pending.len() != job.expected.len()
        || pending
            .iter()
            .zip(&job.expected)
            .any(|(a, b)| a != b.as_str())
    {
        return Ok(None);
    }
    tx.prepare_cached(
        "UPDATE messages SET delivered_at = ?1, body = '' \
         WHERE recipient_id = ?2 AND recipient_device_id = ?3 AND seq <= ?4 AND delivered_at IS NULL",
    )?
    .execute(params![text(job.now)?, user, device, job.up_to])?;
    for receipt in &job.receipts {
        insert_receipt(tx, receipt)?;
    }
    tx.prepare_cached(
        "UPDATE devices SET acked_seq = CASE WHEN ?3 < next_seq THEN ?3 ELSE next_seq END \
         WHERE user_id = ?1 AND device_id = ?2 AND acked_seq < ?3",
    )?
    .execute(params![user, device, job.up_to])?;
    Ok(Some(pending.len() as u64))
}
