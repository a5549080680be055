//! Cross-signing of a user's devices: an existing device certifies a linked one
//! (the server checks the certificate against the user's identity key, which it
//! cannot forge), the newcomer fetches its certificate and the sealed identity
//! key once, and a device is removed by the identity key's signature — or by an
//! operator for a stolen phone.
use crate::auth::operator::{Admin, scope};
use crate::auth::{DeviceAuth, LinkedDeviceAuth};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::routes::users::bad_certificate;
use crate::state::AppState;
use atlas_crypto::identity;
use atlas_proto::api::{
    CertificateClaim, CertifyRequest, PendingDevice, PendingDevicesResponse, RevokeDeviceRequest,
};
use atlas_proto::{DeviceId, ErrorCode, UserId};
use atlas_store::DeviceRecord;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Longest certificate or signature accepted (an Ed25519 signature is 86 characters).
const MAX_SIGNATURE: usize = 128;
/// Longest sealed identity key accepted.
const MAX_TRANSFER: usize = 256;

fn unknown_device() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownDevice,
        "no such device",
    )
}

async fn device_of(
    state: &AppState,
    user_id: &UserId,
    device_id: &DeviceId,
) -> Result<DeviceRecord, ApiError> {
    state
        .stores
        .accounts
        .device(user_id, device_id)
        .await?
        .ok_or_else(unknown_device)
}

async fn identity_key(state: &AppState, user_id: &UserId) -> Result<String, ApiError> {
    state
        .stores
        .accounts
        .identity_key(user_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::InvalidCertificate,
                "the user has no identity key",
            )
        })
}

/// `GET /devices/pending`: linked devices of the caller's user waiting for a certificate.
pub async fn pending(
    State(state): State<AppState>,
    auth: DeviceAuth,
) -> Result<Json<PendingDevicesResponse>, ApiError> {
    let devices = state
        .stores
        .accounts
        .devices(&auth.user_id)
        .await?
        .into_iter()
        .filter(|d| d.status == atlas_proto::api::DeviceStatus::Pending)
        .filter_map(|d| {
            Some(PendingDevice {
                link_token_hash: atlas_proto::b64::encode(d.link_token_hash?),
                link_proof: d.link_proof?,
                created_at: d.created_at.into(),
                keys: d.keys,
            })
        })
        .collect();
    Ok(Json(PendingDevicesResponse { devices }))
}

/// `POST /devices/{device_id}/certificate`: a device of the same user certifies a pending one.
pub async fn certify(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(device_id): ApiPath<DeviceId>,
    ApiJson(req): ApiJson<CertifyRequest>,
) -> Result<StatusCode, ApiError> {
    if req.certificate.len() > MAX_SIGNATURE || req.identity_transfer.len() > MAX_TRANSFER {
        return Err(ApiError::too_large(
            "certificate or identity transfer too long",
        ));
    }
    let device = device_of(&state, &auth.user_id, &device_id).await?;
    let key = identity_key(&state, &auth.user_id).await?;
    identity::verify_certificate(&key, &auth.user_id, &device.keys, &req.certificate)
        .map_err(bad_certificate)?;
    let certified = state
        .stores
        .accounts
        .certify_device(
            &auth.user_id,
            &device_id,
            &req.certificate,
            &req.identity_transfer,
        )
        .await?;
    if !certified {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Forbidden,
            "the device is not waiting for a certificate",
        ));
    }
    state
        .announce(crate::control::ControlEvent::DeviceChanged(
            auth.user_id.clone(),
            device_id.clone(),
        ))
        .await;
    tracing::info!(user_id = %auth.user_id, %device_id, by = %auth.device_id, "device certified");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /devices/certificate/claim`: the calling device's status and certificate;
/// the sealed identity key is handed out once.
pub async fn claim(
    State(state): State<AppState>,
    LinkedDeviceAuth(auth): LinkedDeviceAuth,
) -> Result<Json<CertificateClaim>, ApiError> {
    let record = state
        .stores
        .accounts
        .claim_certificate(&auth.user_id, &auth.device_id)
        .await?
        .ok_or_else(unknown_device)?;
    Ok(Json(CertificateClaim {
        status: record.status,
        certificate: record.certificate,
        identity_transfer: record.identity_transfer,
    }))
}

async fn remove(
    state: &AppState,
    user_id: &UserId,
    device_id: &DeviceId,
    revocation: Option<&str>,
) -> Result<StatusCode, ApiError> {
    let removed = state
        .stores
        .accounts
        .revoke_device(user_id, device_id, revocation, state.clock.now())
        .await?;
    state
        .announce(crate::control::ControlEvent::DeviceRevoked(
            user_id.clone(),
            device_id.clone(),
        ))
        .await;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown_device())
    }
}

/// `POST /devices/{device_id}/revoke`: a device of the user removes one (itself
/// included), signed by the identity key so the server cannot fake a removal.
pub async fn revoke(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(device_id): ApiPath<DeviceId>,
    ApiJson(req): ApiJson<RevokeDeviceRequest>,
) -> Result<StatusCode, ApiError> {
    if req.signature.len() > MAX_SIGNATURE {
        return Err(ApiError::too_large("signature too long"));
    }
    let device = device_of(&state, &auth.user_id, &device_id).await?;
    let key = identity_key(&state, &auth.user_id).await?;
    identity::verify_revocation(&key, &auth.user_id, &device.keys, &req.signature)
        .map_err(bad_certificate)?;
    let answer = remove(&state, &auth.user_id, &device_id, Some(&req.signature)).await?;
    tracing::warn!(user_id = %auth.user_id, %device_id, by = %auth.device_id, "device removed by its user");
    Ok(answer)
}

/// `POST /admin/devices/{user_id}/{device_id}/revoke`: an operator removes a
/// device (a stolen phone) without the user's identity key; listed with no signature.
pub async fn admin_revoke(
    State(state): State<AppState>,
    operator: Admin<scope::Devices>,
    ApiPath((user_id, device_id)): ApiPath<(UserId, DeviceId)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    device_of(&state, &user_id, &device_id).await?;
    remove(&state, &user_id, &device_id, None).await?;
    tracing::warn!(token_id = %operator.token_id, %user_id, %device_id, "operator removed a device");
    Ok(Json(serde_json::json!({
        "user_id": user_id,
        "device_id": device_id,
        "status": "revoked",
        "revoked_by": operator.token_id,
    })))
}

/// This module's routes for devices.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices/pending", get(pending))
        .route("/devices/certificate/claim", post(claim))
        .route("/devices/{device_id}/certificate", post(certify))
        .route("/devices/{device_id}/revoke", post(revoke))
}

/// This module's routes for operators (scope `devices`), under `/admin`.
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/devices/{user_id}/{device_id}/revoke", post(admin_revoke))
}
