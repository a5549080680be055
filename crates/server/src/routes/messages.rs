//! 1:1 messages: send (one ciphertext per recipient device), fetch, ack.
use crate::auth::{DeferredDeviceAuth, DeviceAuth, ProofId, replayed};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::receipts::{MessageFacts, ciphertext_digest, view, view_signed};
use crate::state::AppState;
use atlas_crypto::olm::Ciphertext;
use atlas_proto::api::{
    AckRequest, AckResponse, Delivery, InboxMessage, InboxResponse, SendRequest, SendResponse,
};
use atlas_proto::receipt::{CiphertextDigest, ReceiptType};
use atlas_proto::timestamp::Timestamp;
use atlas_proto::{MessageId, RequestId};
use atlas_store::{AckedMessage, NewMessage, ResendOutcome, StoreError};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Most envelopes (recipient devices) in one send.
pub const MAX_ENVELOPES: usize = 64;
/// Default and largest page of `GET /messages`.
pub const PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

fn validate(req: &SendRequest, max_envelope_bytes: usize) -> Result<(), ApiError> {
    if req.encryption_algorithm.is_empty() || req.encryption_algorithm.len() > 64 {
        return Err(ApiError::invalid(
            "encryption_algorithm must be 1 to 64 characters",
        ));
    }
    if req.envelopes.is_empty() {
        return Err(ApiError::invalid("at least one envelope is required"));
    }
    if req.envelopes.len() > MAX_ENVELOPES || req.untrusted_devices.len() > MAX_ENVELOPES {
        return Err(ApiError::too_large(format!(
            "at most {MAX_ENVELOPES} envelopes (and untrusted devices) per send"
        )));
    }
    for e in &req.envelopes {
        if e.msg_type > 1 {
            return Err(ApiError::invalid(
                "msg_type must be 0 (pre-key) or 1 (normal)",
            ));
        }
        if e.body.len() > max_envelope_bytes {
            return Err(ApiError::too_large(format!(
                "ciphertext exceeds {max_envelope_bytes} bytes"
            )));
        }
        if e.body.is_empty()
            || !e
                .body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(ApiError::invalid("body must be base64"));
        }
    }
    Ok(())
}

/// The resend requests a send with `resend_of` answers. Each envelope must go
/// to a device that asked this sending device for that message (a request
/// already answered counts too, so a retried resend gets the stored answer).
async fn resend_requests_answered(
    state: &AppState,
    auth: &DeviceAuth,
    req: &SendRequest,
    original: &MessageId,
) -> Result<Vec<RequestId>, ApiError> {
    let pending: Vec<_> = state
        .stores
        .repair
        .resend_requests(original)
        .await?
        .into_iter()
        .filter(|r| {
            (r.status == "pending" || r.status == "resent")
                && r.sender_id == auth.user_id.as_str()
                && r.sender_device_id == auth.device_id.as_str()
                && r.recipient_id == req.recipient_id.as_str()
        })
        .collect();
    req.envelopes
        .iter()
        .map(|e| {
            pending
                .iter()
                .find(|r| r.recipient_device_id == e.device_id.as_str())
                .map(|r| r.request_id.clone())
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "no pending resend request of {original} for device {}",
                        e.device_id
                    ))
                })
        })
        .collect()
}

/// A UUIDv7 from the server clock, so a message id carries its acceptance time
/// (receipt verifiers check the two agree).
fn message_id(now: time::OffsetDateTime) -> Result<MessageId, ApiError> {
    let nanos = now.unix_timestamp_nanos().max(0);
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(nanos / 1_000_000_000).unwrap_or(0),
        u32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    );
    MessageId::new(uuid::Uuid::new_v7(ts).to_string()).map_err(ApiError::internal)
}

/// `POST /messages`: stores the send and its signed `accepted` receipt durably,
/// then pushes to connected devices.
pub async fn send(
    State(state): State<AppState>,
    deferred: DeferredDeviceAuth,
    body: Result<ApiJson<SendRequest>, ApiError>,
) -> Result<(StatusCode, Json<SendResponse>), ApiError> {
    let DeferredDeviceAuth { auth, proof_id } = deferred;
    let outcome = match body {
        Ok(ApiJson(req)) => store_send(&state, auth, req, proof_id.as_ref()).await,
        Err(e) => Err(StoreOrApi::Api(e)),
    };
    match outcome {
        Ok(answer) => Ok(answer),
        Err(StoreOrApi::Store(StoreError::Replay)) => Err(replayed(&state)),
        Err(StoreOrApi::Api(e)) => {
            // Refused before the store saw it: the proof is spent here (or was: a replay).
            if let Some(proof_id) = &proof_id {
                proof_id.record(&state).await?;
            }
            Err(e)
        }
        Err(StoreOrApi::Store(e)) => {
            // The store refused it, possibly after recording the proof id with the refusal.
            if let Some(proof_id) = &proof_id {
                proof_id.spend(&state).await?;
            }
            Err(e.into())
        }
    }
}

/// A send's failure: from the store (a replay is told apart), or any other refusal.
enum StoreOrApi {
    Store(StoreError),
    Api(ApiError),
}

impl From<StoreError> for StoreOrApi {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<ApiError> for StoreOrApi {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<StoreOrApi> for ApiError {
    fn from(e: StoreOrApi) -> Self {
        match e {
            StoreOrApi::Store(e) => e.into(),
            StoreOrApi::Api(e) => e,
        }
    }
}

/// Validates, signs the receipt and stores a send, recording its proof id in the same transaction.
async fn store_send(
    state: &AppState,
    auth: DeviceAuth,
    req: SendRequest,
    proof_id: Option<&ProofId>,
) -> Result<(StatusCode, Json<SendResponse>), StoreOrApi> {
    validate(&req, state.config.max_envelope_bytes)?;
    let digests = req
        .envelopes
        .iter()
        .map(|e| {
            ciphertext_digest(&e.body)
                .map(|sha256| CiphertextDigest {
                    device_id: e.device_id.clone(),
                    sha256,
                })
                .ok_or_else(|| ApiError::invalid("body must be base64"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answering = match &req.resend_of {
        Some(original) => resend_requests_answered(state, &auth, &req, original).await?,
        None => Vec::new(),
    };
    let request_hash =
        Sha256::digest(serde_json::to_vec(&req).map_err(ApiError::internal)?).to_vec();
    let now = state.clock.now();
    let message_id = message_id(now)?;
    let signer = state.signing_keys.current(&state.keys, now).await?;
    let facts = MessageFacts {
        message_id: &message_id,
        sender_id: &auth.user_id,
        sender_device_id: &auth.device_id,
        recipient_id: &req.recipient_id,
        accepted_at: now,
    };
    let (receipt, signed) = state.receipts.issue(&signer, &facts, digests, None, now);
    let message = NewMessage {
        message_id,
        sender_id: auth.user_id,
        sender_device_id: auth.device_id,
        recipient_id: req.recipient_id,
        client_message_id: req.client_message_id,
        request_hash,
        encryption_algorithm: req.encryption_algorithm,
        prekey_keys: req
            .envelopes
            .iter()
            .filter(|e| e.msg_type == 0)
            .filter_map(|e| {
                let body = Ciphertext {
                    msg_type: e.msg_type,
                    body: e.body.clone(),
                };
                Some((e.device_id.clone(), body.prekey_info()?.one_time_key))
            })
            .collect(),
        envelopes: req.envelopes,
        untrusted_devices: req.untrusted_devices,
        queue_limit: state.limits.config.queued_per_device,
        resend_of: req.resend_of,
        proof_id: proof_id.map(|p| (p.jti.clone(), p.expires_at)),
        now,
        receipt,
    };
    let stored = state.stores.messages.store_message(&message).await?;
    let accepted_at = Timestamp::from(stored.accepted_at);
    if !stored.duplicate {
        for (envelope, (device_id, seq)) in message.envelopes.iter().zip(&stored.deliveries) {
            let pushed = InboxMessage {
                seq: *seq,
                message_id: stored.message_id.clone(),
                sender_id: message.sender_id.clone(),
                sender_device_id: message.sender_device_id.clone(),
                encryption_algorithm: message.encryption_algorithm.clone(),
                msg_type: envelope.msg_type,
                body: envelope.body.clone(),
                created_at: accepted_at,
                session_id: envelope.session_id.clone(),
                resend_of: message.resend_of.clone(),
            };
            state
                .fanout
                .publish(&message.recipient_id, device_id, pushed);
        }
    }
    for request_id in answering {
        state
            .stores
            .repair
            .complete_resend(
                &request_id,
                (&message.sender_id, &message.sender_device_id),
                ResendOutcome::Resent(&stored.message_id),
                now,
            )
            .await?;
    }
    let deliveries = stored
        .deliveries
        .into_iter()
        .map(|(device_id, seq)| Delivery { device_id, seq })
        .collect();
    let (status, receipt) = if stored.duplicate {
        let stored_receipts = state.stores.messages.receipts(&stored.message_id).await?;
        let accepted = stored_receipts
            .iter()
            .find(|r| r.receipt_type == ReceiptType::Accepted)
            .ok_or_else(|| ApiError::internal("stored send without its accepted receipt"))?;
        (StatusCode::OK, view(accepted)?)
    } else {
        (StatusCode::CREATED, view_signed(&message.receipt, signed))
    };
    Ok((
        status,
        Json(SendResponse {
            message_id: stored.message_id,
            accepted_at,
            deliveries,
            duplicate: stored.duplicate,
            receipt,
        }),
    ))
}

/// Query of `GET /messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    /// Return messages with a greater sequence number.
    #[serde(default)]
    pub after: u64,
    /// Page size (default 100, at most 500).
    pub limit: Option<u32>,
}

/// `GET /messages`: the caller's unacknowledged messages in sequence order.
pub async fn inbox(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<Json<InboxResponse>, ApiError> {
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let mut messages = state
        .stores
        .messages
        .inbox(&auth.user_id, &auth.device_id, q.after, limit + 1)
        .await?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    let next_after = messages.last().map_or(q.after, |m| m.seq);
    Ok(Json(InboxResponse {
        messages,
        next_after,
        more,
    }))
}

/// `POST /messages/ack`: everything up to `up_to_seq` was processed; each
/// message gets a signed `delivered` receipt for this device.
pub async fn ack(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(req): ApiJson<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let now = state.clock.now();
    let signer = state.signing_keys.current(&state.keys, now).await?;
    let delivered = |m: &AckedMessage| {
        let facts = MessageFacts {
            message_id: &m.message_id,
            sender_id: &m.sender_id,
            sender_device_id: &m.sender_device_id,
            recipient_id: &auth.user_id,
            accepted_at: m.accepted_at,
        };
        // Stored bodies passed the base64 check at send time.
        let digest = CiphertextDigest {
            device_id: auth.device_id.clone(),
            sha256: ciphertext_digest(&m.body).unwrap_or_default(),
        };
        let (record, _) = state.receipts.issue(
            &signer,
            &facts,
            vec![digest],
            Some((&auth.device_id, now)),
            now,
        );
        record
    };
    let acknowledged = state
        .stores
        .messages
        .ack(
            &auth.user_id,
            &auth.device_id,
            req.up_to_seq,
            now,
            &delivered,
        )
        .await?;
    Ok(Json(AckResponse { acknowledged }))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/messages", post(send).get(inbox))
        .route("/messages/ack", post(ack))
}
