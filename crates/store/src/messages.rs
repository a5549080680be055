//! 1:1 messages and their receipts: a send stored durably with one row per
//! recipient device and the device's next sequence number, the inbox, the
//! acknowledgement that turns rows into `delivered` receipts. How a send is
//! written is the backend's (SQLite group-commits, PostgreSQL locks rows);
//! the checks and reads are here.
use crate::accounts::{device, user, user_exists};
use crate::db::{Backend, Db, Tx, read, run};
use crate::records::{
    AckedMessage, CheckRow, DeliveredReceipts, NewMessage, ReceiptRecord, SendCheck, StoredSend,
    device_list_mismatch, id, opt_id,
};
use crate::{StoreError, StoreResult};
use atlas_proto::api::{DeviceListMismatch, InboxMessage};
use atlas_proto::receipt::ReceiptType;
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// The message part of the store.
#[async_trait::async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a send durably: one row per recipient device, each with the next
    /// sequence number of that device. Idempotent on the sender's client message id.
    async fn store_message(&self, message: &NewMessage) -> StoreResult<StoredSend>;
    /// Unacknowledged messages of a device with `seq > after`, in order.
    async fn inbox(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<InboxMessage>>;
    /// Marks messages up to `up_to_seq` delivered, drops their ciphertext and
    /// stores the `delivered` receipt `receipt` builds for each, all in one
    /// transaction; returns how many.
    async fn ack(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        up_to_seq: u64,
        now: OffsetDateTime,
        receipt: DeliveredReceipts<'_>,
    ) -> StoreResult<u64>;
    /// The receipts of a message, `accepted` first, then `delivered` by device.
    async fn receipts(&self, message_id: &str) -> StoreResult<Vec<ReceiptRecord>>;
    /// Replaces a receipt's signature after a reissue; false if there is no such receipt.
    async fn update_receipt(
        &self,
        receipt_id: &str,
        kid: &str,
        jws: &str,
        issued_at: OffsetDateTime,
    ) -> StoreResult<bool>;
}

/// When a stored send was accepted and where it went.
pub(crate) async fn deliveries_of(
    tx: &mut Tx,
    message_id: &str,
) -> StoreResult<(OffsetDateTime, Vec<(DeviceId, u64)>)> {
    let rows: Vec<(String, i64, OffsetDateTime)> = run!(
        tx,
        sqlx::query_as(
            "SELECT recipient_device_id, seq, created_at FROM messages WHERE message_id = $1 \
             ORDER BY recipient_device_id",
        )
        .bind(message_id),
        fetch_all
    )?;
    let mut accepted = OffsetDateTime::UNIX_EPOCH;
    let mut out = Vec::with_capacity(rows.len());
    for (recipient_device, seq, created_at) in rows {
        accepted = created_at;
        out.push((device(recipient_device)?, seq.max(0) as u64));
    }
    Ok((accepted, out))
}

/// What a send's check rows say before any rare follow-up query.
pub(crate) enum Checked {
    /// A retry of the stored send with this message id.
    Retry(String),
    /// New: the recipient's active devices with their last sequence numbers,
    /// and those whose queue is full.
    Devices(Vec<(DeviceId, i64)>, Vec<DeviceId>),
}

/// Reads a send's check rows (its idempotency record, the recipient's devices).
pub(crate) fn classify(m: &NewMessage, rows: Vec<CheckRow>) -> StoreResult<Checked> {
    let mut current = Vec::with_capacity(rows.len());
    let mut full = Vec::new();
    for (kind, value, hash, next_seq, queued) in rows {
        if kind == "d" {
            let device = device(value)?;
            if u64::try_from(queued).unwrap_or(0) >= m.queue_limit {
                full.push(device.clone());
            }
            current.push((device, next_seq));
            continue;
        }
        if hash.as_deref() != Some(m.request_hash.as_slice()) {
            return Err(StoreError::IdempotencyConflict);
        }
        return Ok(Checked::Retry(value));
    }
    Ok(Checked::Devices(current, full))
}

/// Admits a new send to the recipient's devices (known to exist when there are
/// none): its envelopes must match them and no queue it adds to may be full.
pub(crate) fn admit(
    m: &NewMessage,
    mut current: Vec<(DeviceId, i64)>,
    full: Vec<DeviceId>,
) -> StoreResult<Vec<(DeviceId, i64)>> {
    current.sort();
    let ids: Vec<DeviceId> = current.iter().map(|(d, _)| d.clone()).collect();
    // Devices the sender does not trust (not certified by the recipient's identity key) get no copy.
    let required: Vec<DeviceId> = ids
        .iter()
        .filter(|d| !m.untrusted_devices.contains(d))
        .cloned()
        .collect();
    if let Some(mismatch) = device_list_mismatch(&required, &m.envelopes).map(|mm| DeviceListMismatch {
        current: ids.clone(),
        ..mm
    })
        // A resend goes only to the devices that asked for it.
        && !(m.resend_of.is_some() && mismatch.extra.is_empty())
    {
        return Err(StoreError::DeviceListMismatch(mismatch));
    }
    if let Some(device) = full
        .into_iter()
        .find(|d| m.envelopes.iter().any(|e| e.device_id == *d))
    {
        return Err(StoreError::QueueFull(device));
    }
    Ok(current)
}

/// The sequence number a new message to `device` gets: one past the last of
/// the device in `current` (which [`admit`] checked holds it).
pub(crate) fn next_seq(current: &[(DeviceId, i64)], device: &DeviceId) -> i64 {
    current
        .iter()
        .find(|(d, _)| d == device)
        .map_or(0, |(_, seq)| *seq)
        + 1
}

/// The verdict on a send from its check rows; queries only in the rare cases
/// (a retry needs the original's deliveries, no devices needs the user checked).
pub(crate) async fn judge(
    tx: &mut Tx,
    m: &NewMessage,
    rows: Vec<CheckRow>,
) -> StoreResult<SendCheck> {
    match classify(m, rows)? {
        Checked::Retry(value) => {
            let (accepted_at, deliveries) = deliveries_of(tx, &value).await?;
            Ok(SendCheck::Duplicate(StoredSend {
                message_id: id(value)?,
                accepted_at,
                deliveries,
                duplicate: true,
            }))
        }
        Checked::Devices(current, _)
            if current.is_empty() && !user_exists(tx, m.recipient_id.as_str()).await? =>
        {
            Err(StoreError::UnknownUser)
        }
        Checked::Devices(current, full) => admit(m, current, full).map(|_| SendCheck::Accept),
    }
}

/// Inserts receipts in a few multi-row statements.
pub(crate) async fn insert_receipts(tx: &mut Tx, receipts: &[&ReceiptRecord]) -> StoreResult<()> {
    for chunk in crate::sql::chunks_of_known_size(receipts) {
        run!(tx, receipt_rows(chunk).build(), execute)?;
    }
    Ok(())
}

/// One multi-row `INSERT` of receipts, for either backend.
fn receipt_rows<DB>(chunk: &[&ReceiptRecord]) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: Default,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> OffsetDateTime: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut insert = sqlx::QueryBuilder::<DB>::new(
        "INSERT INTO receipts (receipt_id, message_id, receipt_type, device_id, sender_id, \
         recipient_id, kid, jws, issued_at, expires_at, created_at) ",
    );
    insert.push_values(chunk, |mut row, r| {
        row.push_bind(r.receipt_id.as_str())
            .push_bind(r.message_id.as_str())
            .push_bind(r.receipt_type.as_str())
            .push_bind(r.device_id.as_ref().map_or("", |d| d.as_str()))
            .push_bind(r.sender_id.as_str())
            .push_bind(r.recipient_id.as_str())
            .push_bind(r.kid.as_str())
            .push_bind(r.jws.as_str())
            .push_bind(r.issued_at)
            .push_bind(r.expires_at)
            .push_bind(r.issued_at);
    });
    insert.push(" ON CONFLICT DO NOTHING");
    insert
}

/// An inbox row.
#[derive(sqlx::FromRow)]
struct InboxRow {
    seq: i64,
    message_id: String,
    sender_id: String,
    sender_device_id: String,
    encryption_algorithm: String,
    msg_type: i64,
    body: String,
    created_at: OffsetDateTime,
    session_id: Option<String>,
    resend_of: Option<String>,
}

/// A receipt row.
#[derive(sqlx::FromRow)]
struct ReceiptRow {
    receipt_id: String,
    message_id: String,
    receipt_type: String,
    device_id: String,
    sender_id: String,
    recipient_id: String,
    kid: String,
    jws: String,
    issued_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

#[async_trait::async_trait]
impl<T: Backend> MessageStore for T {
    async fn store_message(&self, m: &NewMessage) -> StoreResult<StoredSend> {
        self.store_message_durably(m).await
    }

    async fn inbox(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<InboxMessage>> {
        let rows: Vec<InboxRow> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT seq, message_id, sender_id, sender_device_id, encryption_algorithm, msg_type, \
                   body, created_at, session_id, resend_of \
                 FROM messages WHERE recipient_id = $1 AND recipient_device_id = $2 AND seq > $3 \
                   AND delivered_at IS NULL \
                 ORDER BY seq LIMIT $4",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit)),
            fetch_all
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(InboxMessage {
                    seq: r.seq.max(0) as u64,
                    message_id: id(r.message_id)?,
                    sender_id: user(r.sender_id)?,
                    sender_device_id: device(r.sender_device_id)?,
                    encryption_algorithm: r.encryption_algorithm,
                    msg_type: u8::try_from(r.msg_type).unwrap_or(u8::MAX),
                    body: r.body,
                    created_at: r.created_at.into(),
                    session_id: opt_id(r.session_id)?,
                    resend_of: opt_id(r.resend_of)?,
                })
            })
            .collect()
    }

    async fn ack(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        up_to_seq: u64,
        now: OffsetDateTime,
        receipt: DeliveredReceipts<'_>,
    ) -> StoreResult<u64> {
        self.ack_durably(user_id, device_id, up_to_seq, now, receipt)
            .await
    }

    async fn receipts(&self, message_id: &str) -> StoreResult<Vec<ReceiptRecord>> {
        let rows: Vec<ReceiptRow> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT receipt_id, message_id, receipt_type, device_id, sender_id, recipient_id, kid, \
                   jws, issued_at, expires_at \
                 FROM receipts WHERE message_id = $1 ORDER BY receipt_type, device_id",
            )
            .bind(message_id),
            fetch_all
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(ReceiptRecord {
                    receipt_type: ReceiptType::parse(&r.receipt_type).ok_or_else(|| {
                        StoreError::Corrupt(format!("receipt type {}", r.receipt_type))
                    })?,
                    device_id: if r.device_id.is_empty() {
                        None
                    } else {
                        Some(device(r.device_id)?)
                    },
                    receipt_id: r.receipt_id,
                    message_id: id(r.message_id)?,
                    sender_id: user(r.sender_id)?,
                    recipient_id: user(r.recipient_id)?,
                    kid: r.kid,
                    jws: r.jws,
                    issued_at: r.issued_at,
                    expires_at: r.expires_at,
                })
            })
            .collect()
    }

    async fn update_receipt(
        &self,
        receipt_id: &str,
        kid: &str,
        jws: &str,
        issued_at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query(
                "UPDATE receipts SET kid = $1, jws = $2, issued_at = $3 WHERE receipt_id = $4"
            )
            .bind(kid)
            .bind(jws)
            .bind(issued_at)
            .bind(receipt_id),
            execute
        )?;
        tx.commit().await?;
        Ok(done > 0)
    }
}

/// The messages a device acknowledges up to `up_to`, unacknowledged, in
/// sequence order, with what their `delivered` receipts need.
pub(crate) fn acked_rows_sql(for_update: &str) -> String {
    format!(
        "SELECT message_id, sender_id, sender_device_id, body, created_at FROM messages \
     WHERE recipient_id = $1 AND recipient_device_id = $2 AND seq <= $3 AND delivered_at IS NULL \
     ORDER BY seq{for_update}"
    )
}

/// [`MessageStore::ack`] in one transaction on `db`: reads the messages (locking
/// them on PostgreSQL), marks them delivered and stores their receipts.
pub(crate) async fn ack_in_transaction(
    db: &Db,
    user_id: &UserId,
    device_id: &DeviceId,
    up_to_seq: u64,
    now: OffsetDateTime,
    receipt: DeliveredReceipts<'_>,
) -> StoreResult<u64> {
    let (user_id_str, device_id_str) = (user_id.as_str(), device_id.as_str());
    let up_to = i64::try_from(up_to_seq).unwrap_or(i64::MAX);
    let mut tx = db.begin().await?;
    let sql = acked_rows_sql(tx.dialect().for_update());
    let rows: Vec<AckedRow> = run!(
        &mut tx,
        sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(user_id_str)
            .bind(device_id_str)
            .bind(up_to),
        fetch_all
    )?;
    let count = rows.len() as u64;
    let receipts = rows
        .into_iter()
        .map(|row| acked(row).map(|m| receipt(&m)))
        .collect::<StoreResult<Vec<_>>>()?;
    run!(
        &mut tx,
        sqlx::query(
            "UPDATE messages SET delivered_at = $1, body = '' \
             WHERE recipient_id = $2 AND recipient_device_id = $3 AND seq <= $4 AND delivered_at IS NULL",
        )
        .bind(now)
        .bind(user_id_str)
        .bind(device_id_str)
        .bind(up_to),
        execute
    )?;
    let refs: Vec<&ReceiptRecord> = receipts.iter().collect();
    insert_receipts(&mut tx, &refs).await?;
    run!(
        &mut tx,
        sqlx::query(
            "UPDATE devices SET acked_seq = CASE WHEN $3 < next_seq THEN $3 ELSE next_seq END \
             WHERE user_id = $1 AND device_id = $2 AND acked_seq < $3",
        )
        .bind(user_id_str)
        .bind(device_id_str)
        .bind(up_to),
        execute
    )?;
    tx.commit().await?;
    Ok(count)
}

/// A row of [`acked_rows_sql`].
pub(crate) type AckedRow = (String, String, String, String, OffsetDateTime);

/// The message an acknowledged row is.
pub(crate) fn acked(row: AckedRow) -> StoreResult<AckedMessage> {
    let (message_id, sender_id, sender_device_id, body, accepted_at) = row;
    Ok(AckedMessage {
        message_id: id(message_id)?,
        sender_id: user(sender_id)?,
        sender_device_id: device(sender_device_id)?,
        body,
        accepted_at,
    })
}
