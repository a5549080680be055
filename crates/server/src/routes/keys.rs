//! One-time and fallback keys: upload, count, claim.
use crate::auth::DeviceAuth;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use atlas_proto::api::{
    ClaimedDevice, KeyCounts, KeysClaimRequest, KeysClaimResponse, KeysUploadRequest, PublicKey,
};
use axum::Json;
use axum::extract::State;

/// Most keys one upload may carry.
pub const MAX_KEYS_PER_UPLOAD: usize = 100;

fn check_key(key: &PublicKey) -> Result<(), ApiError> {
    if key.key_id.is_empty() || key.key_id.len() > 64 {
        return Err(ApiError::invalid("key_id must be 1 to 64 characters"));
    }
    atlas_crypto::device::check_curve25519(&key.key).map_err(|_| {
        ApiError::invalid(format!("key {} is not a Curve25519 public key", key.key_id))
    })?;
    Ok(())
}

/// `POST /keys/upload`.
pub async fn upload(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(req): ApiJson<KeysUploadRequest>,
) -> Result<Json<KeyCounts>, ApiError> {
    if req.one_time_keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(ApiError::too_large(format!(
            "at most {MAX_KEYS_PER_UPLOAD} one-time keys per upload"
        )));
    }
    req.one_time_keys
        .iter()
        .chain(req.fallback_key.iter())
        .try_for_each(check_key)?;
    let counts = state
        .store
        .upload_keys(&auth.user_id, &auth.device_id, &req, state.clock.now())
        .await?;
    Ok(Json(counts))
}

/// `GET /keys/count`.
pub async fn count(
    State(state): State<AppState>,
    auth: DeviceAuth,
) -> Result<Json<KeyCounts>, ApiError> {
    Ok(Json(
        state
            .store
            .key_counts(&auth.user_id, &auth.device_id)
            .await?,
    ))
}

/// `POST /keys/claim`: one key for every active device of a user.
pub async fn claim(
    State(state): State<AppState>,
    _auth: DeviceAuth,
    ApiJson(req): ApiJson<KeysClaimRequest>,
) -> Result<Json<KeysClaimResponse>, ApiError> {
    let claimed = state
        .store
        .claim_keys(&req.user_id, &req.device_ids, state.clock.now())
        .await?;
    let devices = claimed
        .into_iter()
        .map(|c| ClaimedDevice {
            keys: c.keys,
            one_time_key: c.key,
        })
        .collect();
    Ok(Json(KeysClaimResponse {
        user_id: req.user_id,
        devices,
    }))
}
