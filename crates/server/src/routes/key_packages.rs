//! MLS KeyPackages: publish, count, claim one per device.
use crate::auth::{DeviceAuth, LinkedDeviceAuth};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::groups::{caller_member, decode};
use crate::state::AppState;
use atlas_crypto::mls::{check_key_package, signature_key_statement};
use atlas_proto::mls::{
    ClaimedKeyPackage, KeyPackageClaim, KeyPackageClaimResponse, KeyPackageStock, KeyPackageUpload,
};
use atlas_store::{KeyPackageCounts, NewKeyPackage};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

/// Most KeyPackages in one upload.
pub const MAX_UPLOAD: usize = 100;

fn stock(c: KeyPackageCounts) -> KeyPackageStock {
    KeyPackageStock {
        available: c.available,
        last_resort: c.last_resort,
    }
}

/// `POST /mls/key-packages`: each must be valid, for the caller's device,
/// marked last resort exactly when given as `last_resort`, and carry the
/// signature key the device's Ed25519 key signed in `signature_key_binding`.
pub async fn upload(
    State(state): State<AppState>,
    LinkedDeviceAuth(auth): LinkedDeviceAuth,
    ApiJson(req): ApiJson<KeyPackageUpload>,
) -> Result<Json<KeyPackageStock>, ApiError> {
    if req.key_packages.len() > MAX_UPLOAD {
        return Err(ApiError::too_large(format!(
            "at most {MAX_UPLOAD} KeyPackages per upload"
        )));
    }
    let me = caller_member(&auth);
    let binding = req
        .signature_key_binding
        .ok_or_else(|| ApiError::invalid("signature_key_binding is required"))?;
    let device = state
        .stores
        .accounts
        .device(&auth.user_id, &auth.device_id)
        .await?
        .ok_or_else(|| ApiError::invalid("unknown device"))?;
    let given = req
        .key_packages
        .iter()
        .map(|p| (p, false))
        .chain(req.last_resort.iter().map(|p| (p, true)));
    let mut packages = Vec::new();
    for (text, last_resort) in given {
        let bytes = decode(text, "key package")?;
        let checked = check_key_package(&bytes)
            .map_err(|e| ApiError::invalid(format!("KeyPackage refused: {e}")))?;
        if checked.member.to_string() != me {
            return Err(ApiError::invalid(format!(
                "KeyPackage names {}, not the calling device {me}",
                checked.member
            )));
        }
        let statement = signature_key_statement(&checked.member, &checked.signature_key);
        atlas_crypto::device::verify(&device.keys.ed25519, statement.as_bytes(), &binding)
            .map_err(|_| {
                ApiError::invalid(
                    "signature_key_binding is not this device's signature of the KeyPackage's signature key",
                )
            })?;
        if checked.last_resort != last_resort {
            return Err(ApiError::invalid(
                "the last-resort extension must be set on last_resort and only there",
            ));
        }
        packages.push(NewKeyPackage {
            key_package_ref: checked.reference,
            bytes,
            last_resort,
            binding: Some(binding.clone()),
        });
    }
    let counts = state
        .stores
        .key_packages
        .upload_key_packages(&auth.user_id, &auth.device_id, &packages, state.clock.now())
        .await?;
    Ok(Json(stock(counts)))
}

/// `GET /mls/key-packages/count`.
pub async fn count(
    State(state): State<AppState>,
    LinkedDeviceAuth(auth): LinkedDeviceAuth,
) -> Result<Json<KeyPackageStock>, ApiError> {
    let counts = state
        .stores
        .key_packages
        .key_package_counts(&auth.user_id, &auth.device_id)
        .await?;
    Ok(Json(stock(counts)))
}

/// `POST /mls/key-packages/claim`: one KeyPackage per device of a user.
pub async fn claim(
    State(state): State<AppState>,
    _auth: DeviceAuth,
    ApiJson(req): ApiJson<KeyPackageClaim>,
) -> Result<Json<KeyPackageClaimResponse>, ApiError> {
    let claimed = state
        .stores
        .key_packages
        .claim_key_packages(&req.user_id, &req.devices, state.clock.now())
        .await?;
    Ok(Json(KeyPackageClaimResponse {
        key_packages: claimed
            .into_iter()
            .map(|(device_id, package)| {
                let (key_package, signature_key_binding) = match package {
                    Some(p) => (Some(atlas_proto::b64::encode_std(p.bytes)), p.binding),
                    None => (None, None),
                };
                ClaimedKeyPackage {
                    device_id,
                    key_package,
                    signature_key_binding,
                }
            })
            .collect(),
    }))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mls/key-packages", post(upload))
        .route("/mls/key-packages/count", get(count))
        .route("/mls/key-packages/claim", post(claim))
}
