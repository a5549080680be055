//! The admin API of the server's keys: receipt-signing keys (list, rotate with
//! overlap, revoke) and the access-token key (rotate, killing every token).
use crate::auth::operator::{Admin, scope};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::receipts::{SIGNING_PURPOSE, new_signing_key};
use crate::server_keys::ACCESS_TOKEN_PURPOSE;
use crate::state::AppState;
use atlas_crypto::jws::HmacJwsKey;
use atlas_proto::ErrorCode;
use atlas_proto::receipt::{
    RotateSigningRequest, SigningKeyView, SigningKeysResponse, TokenKeyRotated,
};
use atlas_proto::timestamp::{Timestamp, rfc3339};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Longest overlap accepted (one year): beyond it, revoke and reissue instead.
const MAX_OVERLAP_SECS: u64 = 366 * 24 * 3600;

async fn listing(state: &AppState) -> Result<Json<SigningKeysResponse>, ApiError> {
    let now = state.clock.now();
    let keys = state
        .stores
        .server_keys
        .server_keys(SIGNING_PURPOSE)
        .await?
        .into_iter()
        .map(|k| SigningKeyView {
            published: k.published(now),
            kid: k.key.kid,
            alg: k.key.alg,
            status: k.status,
            created_at: k.key.created_at.into(),
            retired_at: k.retired_at.map(Timestamp::from),
            publish_until: k.publish_until.map(rfc3339),
            revoked_at: k.revoked_at.map(Timestamp::from),
        })
        .collect();
    Ok(Json(SigningKeysResponse { keys }))
}

/// `GET /admin/signing-keys`.
pub async fn list(
    State(state): State<AppState>,
    _: Admin<scope::Keys>,
) -> Result<Json<SigningKeysResponse>, ApiError> {
    state
        .signing_keys
        .current(&state.keys, state.clock.now())
        .await?;
    listing(&state).await
}

/// `POST /admin/signing-keys/rotate`: a new key signs from now on; the previous
/// one stays in the JWKS for the overlap (default: the receipt lifetime, so
/// every receipt it signed keeps verifying until it expires).
pub async fn rotate(
    State(state): State<AppState>,
    operator: Admin<scope::Keys>,
    body: axum::body::Bytes,
) -> Result<Json<SigningKeysResponse>, ApiError> {
    // The body is optional: an empty POST rotates with the default overlap.
    let request: RotateSigningRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSigningRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid rotate request: {e}")))?
    };
    let overlap = match request.overlap_seconds {
        Some(s) if s > MAX_OVERLAP_SECS => {
            return Err(ApiError::invalid(format!(
                "overlap_seconds must be at most {MAX_OVERLAP_SECS}"
            )));
        }
        Some(s) => time::Duration::seconds(i64::try_from(s).unwrap_or(0)),
        None => state.receipts.ttl,
    };
    let now = state.clock.now();
    let next = new_signing_key(now);
    state.keys.rotate(&next, now + overlap, now).await?;
    state
        .announce(crate::control::ControlEvent::SigningKeysChanged)
        .await;
    tracing::warn!(token_id = %operator.token_id, kid = %next.kid, overlap_secs = overlap.whole_seconds(), "receipt-signing key rotated");
    listing(&state).await
}

/// `POST /admin/signing-keys/{kid}/revoke`: the key leaves the JWKS at once, so
/// receipts it signed stop verifying until reissued; revoking the active key
/// installs a new one in the same transaction.
pub async fn revoke(
    State(state): State<AppState>,
    operator: Admin<scope::Keys>,
    ApiPath(kid): ApiPath<String>,
) -> Result<Json<SigningKeysResponse>, ApiError> {
    if kid.is_empty() || kid.len() > 128 {
        return Err(ApiError::invalid("kid must be 1 to 128 characters"));
    }
    let now = state.clock.now();
    let revoked = state
        .keys
        .revoke(SIGNING_PURPOSE, &kid, &new_signing_key(now), now)
        .await?;
    if !revoked {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownKey,
            format!("no unrevoked receipt-signing key {kid}"),
        ));
    }
    state
        .announce(crate::control::ControlEvent::SigningKeysChanged)
        .await;
    tracing::warn!(token_id = %operator.token_id, %kid, "receipt-signing key revoked");
    listing(&state).await
}

/// `POST /admin/token-key/rotate`: a new access-token key, with no overlap: every
/// outstanding access token and unspent refresh token dies at once, and devices
/// re-authenticate with their device keys (the clients do so by themselves).
/// Other server processes pick the new key up at the first token they cannot verify.
pub async fn rotate_token_key(
    State(state): State<AppState>,
    operator: Admin<scope::Keys>,
) -> Result<Json<TokenKeyRotated>, ApiError> {
    let now = state.clock.now();
    let previous_kid = state.tokens.kid();
    let next = crate::new_hmac_key(ACCESS_TOKEN_PURPOSE, now);
    let secret: [u8; 32] = next
        .secret
        .clone()
        .try_into()
        .map_err(|_| ApiError::internal("new token key is not 32 bytes"))?;
    state.keys.rotate(&next, now, now).await?;
    let revoked = state
        .stores
        .refresh_tokens
        .revoke_refresh_tokens(None, now)
        .await?;
    state
        .tokens
        .install(HmacJwsKey::new(secret), next.kid.clone());
    state
        .announce(crate::control::ControlEvent::TokenKeyRotated)
        .await;
    tracing::warn!(token_id = %operator.token_id, kid = %next.kid, %previous_kid, refresh_tokens_revoked = revoked, "access-token key rotated: every token is dead, every socket closed");
    Ok(Json(TokenKeyRotated {
        kid: next.kid,
        previous_kid,
        rotated_at: now.into(),
        refresh_tokens_revoked: revoked,
    }))
}

/// Server keys, under `/admin` (scope `keys`).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/signing-keys", get(list))
        .route("/signing-keys/rotate", post(rotate))
        .route("/signing-keys/{kid}/revoke", post(revoke))
        .route("/token-key/rotate", post(rotate_token_key))
}
