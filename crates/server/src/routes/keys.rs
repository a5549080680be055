//! One-time and fallback keys: upload, count, claim, and the consistency
//! check that finds key material corrupted in the database.
use crate::auth::{DeviceAuth, LinkedDeviceAuth};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::limits::Limits;
use crate::state::AppState;
use atlas_proto::api::{
    ClaimedDevice, KeyCheckRequest, KeyCheckResponse, KeyCounts, KeyMismatch, KeysClaimRequest,
    KeysClaimResponse, KeysUploadRequest, PublicKey,
};
use atlas_proto::keys::{KeyStatus, KeyType, MismatchProblem};
use atlas_store::KeyCheckRecord;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

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
    LinkedDeviceAuth(auth): LinkedDeviceAuth,
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
        .stores
        .prekeys
        .upload_keys(&auth.user_id, &auth.device_id, &req, state.clock.now())
        .await?;
    Ok(Json(counts))
}

/// `GET /keys/count`.
pub async fn count(
    State(state): State<AppState>,
    LinkedDeviceAuth(auth): LinkedDeviceAuth,
) -> Result<Json<KeyCounts>, ApiError> {
    Ok(Json(
        state
            .stores
            .prekeys
            .key_counts(&auth.user_id, &auth.device_id)
            .await?,
    ))
}

/// `POST /keys/claim`: one key for every active device of a user.
pub async fn claim(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(req): ApiJson<KeysClaimRequest>,
) -> Result<Json<KeysClaimResponse>, ApiError> {
    let limits = &state.limits;
    let claimer = format!("{}/{}", auth.user_id, auth.device_id);
    Limits::take(
        &limits.claims,
        &state,
        &claimer,
        "key claims from this device",
    )?;
    // Past its one-time-key budget a user's devices answer with their fallback
    // key (as Matrix does): a drain cannot leave a user without keys.
    let kind = if limits
        .one_time_keys
        .allow(req.user_id.as_str(), state.clock.seconds())
    {
        atlas_store::ClaimKind::OneTimeFirst
    } else {
        tracing::warn!(target_user = %req.user_id, %claimer, "one-time key budget of a user spent: handing out fallback keys");
        atlas_store::ClaimKind::FallbackOnly
    };
    let claimed = state
        .stores
        .prekeys
        .claim_keys(&req.user_id, &req.device_ids, kind, state.clock.now())
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

/// Most keys one consistency check may carry (vodozemac holds at most 50
/// one-time keys; the rest is history the device may still keep).
pub const MAX_KEYS_PER_CHECK: usize = 2000;

/// `POST /keys/check`: compares the device's record of what it published with
/// the keys `user_keys` holds for it; with `repair`, revokes active one-time
/// and fallback keys that do not match, so no sender gets them again.
pub async fn check(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(req): ApiJson<KeyCheckRequest>,
) -> Result<Json<KeyCheckResponse>, ApiError> {
    if req.keys.len() > MAX_KEYS_PER_CHECK {
        return Err(ApiError::too_large(format!(
            "at most {MAX_KEYS_PER_CHECK} keys per check"
        )));
    }
    let published: std::collections::HashMap<(KeyType, &str), &str> = req
        .keys
        .iter()
        .map(|k| ((k.key_type, k.key_id.as_str()), k.key.as_str()))
        .collect();
    let stored = state
        .stores
        .key_checks
        .device_public_keys(&auth.user_id, &auth.device_id)
        .await?;
    // Active keys must all be the device's; older ones (consumed, rotated)
    // are compared where the device still remembers them, so a corrupted key
    // already handed out is found too.
    let mismatched: Vec<KeyMismatch> = stored
        .iter()
        .filter_map(|k| {
            let remembered = published.get(&(k.key_type, k.key_id.as_str()));
            let problem = match remembered {
                Some(key) if *key == k.public_key => return None,
                Some(_) => MismatchProblem::Differs,
                None if k.status == KeyStatus::Active => MismatchProblem::Unknown,
                None => return None,
            };
            Some(KeyMismatch {
                key_type: k.key_type,
                key_id: k.key_id.clone(),
                stored_key: k.public_key.clone(),
                problem,
            })
        })
        .collect();
    let active = stored
        .iter()
        .filter(|k| k.status == KeyStatus::Active)
        .count() as u64;
    let now = state.clock.now();
    let revoked = if req.repair && !mismatched.is_empty() {
        let ids: Vec<(KeyType, String)> = mismatched
            .iter()
            .map(|m| (m.key_type, m.key_id.clone()))
            .collect();
        state
            .stores
            .key_checks
            .revoke_keys(&auth.user_id, &auth.device_id, &ids, now)
            .await?
    } else {
        0
    };
    if !mismatched.is_empty() {
        tracing::warn!(user = %auth.user_id, device = %auth.device_id, mismatched = mismatched.len(), revoked,
            "key material in the database does not match what the device published");
    }
    state
        .stores
        .key_checks
        .record_key_check(&KeyCheckRecord {
            user_id: auth.user_id.to_string(),
            device_id: auth.device_id.to_string(),
            checked_at: now,
            checked: active,
            mismatched: mismatched
                .iter()
                .map(|m| format!("{}:{}", m.key_type, m.key_id))
                .collect(),
            repaired: revoked,
        })
        .await?;
    Ok(Json(KeyCheckResponse {
        checked: active,
        mismatched,
        revoked,
    }))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys/upload", post(upload))
        .route("/keys/count", get(count))
        .route("/keys/claim", post(claim))
        .route("/keys/check", post(check))
}
