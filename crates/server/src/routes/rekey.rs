//! `POST /devices/rekey`: after an operator revoked its identity keys
//! (`atlas emergency revoke-keys identity`), a device publishes new device keys
//! certified by a new user identity key. The server checks both signatures, so
//! it cannot install keys of its own making; contacts see the new identity key
//! as a change of the one they pinned.
use crate::auth::RekeyingDeviceAuth;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::limits::ClientAddr;
use crate::routes::users::bad_certificate;
use crate::state::AppState;
use atlas_crypto::identity;
use atlas_proto::ErrorCode;
use atlas_proto::api::{RegisterResponse, RekeyRequest};
use atlas_proto::audit::{AuditOutcome, NewAuditEntry};
use atlas_store::{NewIdentity, RekeyOutcome};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

/// `POST /devices/rekey`.
pub async fn rekey(
    State(state): State<AppState>,
    RekeyingDeviceAuth(auth): RekeyingDeviceAuth,
    ClientAddr(source): ClientAddr,
    ApiJson(req): ApiJson<RekeyRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if req.device.device_id != auth.device_id {
        return Err(ApiError::invalid(
            "device.device_id must be the calling device's id",
        ));
    }
    atlas_crypto::device::verify_device_keys(&auth.user_id, &req.device).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidSignature,
            format!("device keys rejected: {e}"),
        )
    })?;
    identity::check_identity_key(&req.identity_key).map_err(bad_certificate)?;
    identity::verify_certificate(
        &req.identity_key,
        &auth.user_id,
        &req.device,
        &req.certificate,
    )
    .map_err(bad_certificate)?;
    let now = state.clock.now();
    let new_identity = NewIdentity {
        identity_key: &req.identity_key,
        certificate: &req.certificate,
    };
    let outcome = state
        .stores
        .identities
        .rekey_device(&auth.user_id, &req.device, &new_identity, now)
        .await?;
    match outcome {
        RekeyOutcome::Done => {}
        RekeyOutcome::NotRekeying => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::InvalidRequest,
                "this device's keys were not revoked: there is nothing to re-key",
            ));
        }
        RekeyOutcome::IdentityReplaced => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::IdentityReplaced,
                "another device of this user re-keyed first with its own identity key: \
                 remove this device and link it again with a code from that one",
            ));
        }
    }
    state
        .announce(crate::control::ControlEvent::DeviceChanged(
            auth.user_id.clone(),
            auth.device_id.clone(),
        ))
        .await;
    tracing::warn!(user_id = %auth.user_id, device_id = %auth.device_id, "device re-keyed after an identity revocation");
    let detail = serde_json::json!({
        "identity_key": req.identity_key,
        "ed25519": req.device.ed25519,
        "curve25519": req.device.curve25519,
    });
    let _ = state
        .audit
        .record(NewAuditEntry {
            at: now.into(),
            actor: format!("device:{}/{}", auth.user_id, auth.device_id),
            actor_label: String::new(),
            source,
            action: "device.rekey".into(),
            target: format!("{}/{}", auth.user_id, auth.device_id),
            outcome: AuditOutcome::Ok,
            detail: detail.to_string(),
        })
        .await;
    Ok(Json(RegisterResponse {
        user_id: auth.user_id,
        device_id: auth.device_id,
    }))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/devices/rekey", post(rekey))
}
