//! Receipts: the public JWKS, the latest receipts of a message, and reissue.
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::receipts::{ReissueError, SIGNING_PURPOSE, resign, view};
use crate::state::AppState;
use atlas_crypto::receipt::published_jwk;
use atlas_proto::receipt::ReceiptsResponse;
use atlas_proto::{ErrorCode, MessageId};
use atlas_store::ReceiptRecord;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;

/// Longest message id accepted in a path (ours are 36-character UUIDs).
const MAX_MESSAGE_ID_LEN: usize = 64;

/// `GET /.well-known/jwks.json`: the active and the retired-but-published receipt keys.
pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let now = state.clock.now();
    // Creates the first key, so a fresh server publishes the key its first receipt will use.
    state.signing_keys.current(&state.keys, now).await?;
    let keys = state
        .keys
        .all(SIGNING_PURPOSE)
        .await?
        .into_iter()
        .filter(|k| k.published(now))
        .map(|k| published_jwk(&k.key.kid, &k.key.secret).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    // Short caching: a revoked key must disappear from verifiers' view quickly.
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(json!({ "keys": keys })),
    ))
}

/// The receipts of `message_id` if `caller` may see them: the sender, the
/// recipient, or an operator. Others learn nothing, not even that it exists.
async fn visible(
    state: &AppState,
    caller: &Caller,
    message_id: &str,
) -> Result<Vec<ReceiptRecord>, ApiError> {
    if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID_LEN {
        return Err(ApiError::invalid(format!(
            "message id must be 1 to {MAX_MESSAGE_ID_LEN} characters"
        )));
    }
    if let Caller::Operator(op) = caller {
        op.require(atlas_proto::OperatorScope::Receipts)?;
    }
    let receipts = state.stores.messages.receipts(message_id).await?;
    let allowed = match (caller, receipts.first()) {
        (_, None) => false,
        (Caller::Operator(_), Some(_)) => true,
        (Caller::Device(d), Some(r)) => d.user_id == r.sender_id || d.user_id == r.recipient_id,
    };
    if !allowed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownMessage,
            "no receipts for this message id visible to you",
        ));
    }
    Ok(receipts)
}

fn response(
    message_id: MessageId,
    receipts: &[ReceiptRecord],
) -> Result<Json<ReceiptsResponse>, ApiError> {
    Ok(Json(ReceiptsResponse {
        message_id,
        receipts: receipts.iter().map(view).collect::<Result<_, _>>()?,
    }))
}

/// `GET /receipts/{message_id}`: the latest receipts (sender or recipient with DPoP, operator with Bearer).
pub async fn latest(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(message_id): ApiPath<MessageId>,
) -> Result<Json<ReceiptsResponse>, ApiError> {
    let receipts = visible(&state, &caller, &message_id).await?;
    response(message_id, &receipts)
}

/// `POST /receipts/{message_id}/reissue`: signs every still-valid receipt of the
/// message again with the current key (sender with DPoP, operator with Bearer).
/// Validity comes from `receipts.expires_at`; an expired receipt is left as it is.
pub async fn reissue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(message_id): ApiPath<MessageId>,
) -> Result<Json<ReceiptsResponse>, ApiError> {
    let mut receipts = visible(&state, &caller, &message_id).await?;
    if let Caller::Device(d) = &caller
        && receipts.first().is_some_and(|r| r.sender_id != d.user_id)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "only the sender or an operator may reissue receipts",
        ));
    }
    let now = state.clock.now();
    let signer = state.signing_keys.current(&state.keys, now).await?;
    let mut expired = Vec::new();
    for record in &mut receipts {
        match resign(record, &signer, now) {
            Ok(jws) => {
                state
                    .stores
                    .messages
                    .update_receipt(&record.receipt_id, signer.kid(), &jws, now)
                    .await?;
                record.kid = signer.kid().to_owned();
                record.jws = jws;
                record.issued_at = now;
            }
            Err(ReissueError::Expired {
                receipt_id,
                expires_at,
            }) => {
                expired.push(json!({ "receipt_id": receipt_id, "expires_at": expires_at }));
            }
            Err(e @ ReissueError::Unreadable(_)) => return Err(ApiError::internal(e)),
        }
    }
    if expired.len() == receipts.len() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ReceiptExpired,
            "every receipt of this message has expired: extend receipts.expires_at first, then reissue",
        )
        .with_details(json!({ "expired": expired })));
    }
    let by = match &caller {
        Caller::Operator(op) => format!("operator {}", op.token_id),
        Caller::Device(d) => format!("{}/{}", d.user_id, d.device_id),
    };
    tracing::info!(%message_id, kid = signer.kid(), %by, reissued = receipts.len() - expired.len(), "receipts reissued");
    response(message_id, &receipts)
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/receipts/{message_id}", get(latest))
        .route("/receipts/{message_id}/reissue", post(reissue))
}
