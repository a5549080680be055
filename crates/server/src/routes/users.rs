//! Registration (a new user with its identity key, or a linked device that
//! waits for certification), link tokens and device lists.
use crate::auth::DeviceAuth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::limits::{ClientAddr, Limits};
use crate::state::AppState;
use crate::state::Registration;
use atlas_crypto::identity;
use atlas_proto::api::{
    DeviceInfo, DeviceListResponse, LinkTokenResponse, RegisterRequest, RegisterResponse,
};
use atlas_proto::{ErrorCode, UserId};
use atlas_store::{NewIdentity, PROBE_PREFIX};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

/// A refused certificate, identity key or removal signature.
pub fn bad_certificate(e: identity::IdentityError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidCertificate,
        format!("not signed by the user's identity key: {e}"),
    )
}

/// Whether a new user may register under the server's registration mode.
fn allowed_to_register(mode: &Registration, given: Option<&str>) -> Result<(), ApiError> {
    let refused = |why: &str| ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, why);
    match (mode, given) {
        (Registration::Open, _) => Ok(()),
        (Registration::Closed, _) => Err(refused("this server registers no new users")),
        // Digests are compared, so the time taken says nothing about the token.
        (Registration::Token(expected), Some(given))
            if Sha256::digest(expected.as_bytes()) == Sha256::digest(given.as_bytes()) =>
        {
            Ok(())
        }
        (Registration::Token(_), _) => Err(refused(
            "this server registers new users with a registration token only",
        )),
    }
}

/// How long a device link token stays valid.
const LINK_TOKEN_TTL: time::Duration = time::Duration::minutes(10);

/// `POST /users`: a new user with its first device, or (with `link_token`) a new device.
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(source): ClientAddr,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    Limits::take_shared(
        &state.limits.registrations,
        "registration",
        &state,
        &source,
        "registrations from this address",
    )
    .await?;
    // A reserved probe registers as any user, whatever the registration mode:
    // an operator asked for it. Unreserved, its prefix is nobody's.
    let probe = req.user_id.as_str().starts_with(PROBE_PREFIX);
    if probe && !state.stores.probes.is_reserved_probe(&req.user_id).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::ReservedUserId,
            format!("user ids starting with {PROBE_PREFIX} are kept for recovery probes"),
        ));
    }
    if req.link_token.is_none() && !probe {
        allowed_to_register(&state.registration, req.registration_token.as_deref())?;
    }
    atlas_crypto::device::verify_device_keys(&req.user_id, &req.device).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidSignature,
            format!("device keys rejected: {e}"),
        )
    })?;
    let now = state.clock.now();
    let status = match (&req.link_token, &req.identity_key, &req.certificate) {
        (None, Some(identity_key), Some(certificate)) => {
            identity::check_identity_key(identity_key).map_err(bad_certificate)?;
            identity::verify_certificate(identity_key, &req.user_id, &req.device, certificate)
                .map_err(bad_certificate)?;
            let identity = NewIdentity {
                identity_key,
                certificate,
            };
            state
                .stores
                .accounts
                .create_user(&req.user_id, &req.device, &identity, now)
                .await?;
            "active"
        }
        (None, _, _) => {
            return Err(ApiError::invalid(
                "a new user needs identity_key and the certificate of its first device",
            ));
        }
        (Some(token), None, None) => {
            let proof = req.link_proof.as_deref().unwrap_or_default();
            if proof.is_empty() || proof.len() > 128 {
                return Err(ApiError::invalid(
                    "a linked device needs link_proof (from the link code)",
                ));
            }
            state
                .stores
                .accounts
                .add_device(
                    &req.user_id,
                    &req.device,
                    &Sha256::digest(token.as_bytes()),
                    proof,
                    now,
                )
                .await?;
            "pending"
        }
        (Some(_), _, _) => {
            return Err(ApiError::invalid(
                "a linked device is certified by an existing device, not at registration",
            ));
        }
    };
    tracing::info!(user_id = %req.user_id, device_id = %req.device.device_id, status, "device registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            user_id: req.user_id,
            device_id: req.device.device_id,
        }),
    ))
}

/// `POST /devices/link-tokens`: a single-use token for adding a device to the caller's user.
pub async fn link_token(
    State(state): State<AppState>,
    auth: DeviceAuth,
) -> Result<(StatusCode, Json<LinkTokenResponse>), ApiError> {
    let token = atlas_proto::b64::encode(atlas_crypto::random_bytes::<32>());
    let expires_at = state.clock.now() + LINK_TOKEN_TTL;
    state
        .stores
        .accounts
        .create_link_token(&auth.user_id, &Sha256::digest(token.as_bytes()), expires_at)
        .await?;
    let expires_at = expires_at.into();
    Ok((
        StatusCode::CREATED,
        Json(LinkTokenResponse {
            link_token: token,
            expires_at,
        }),
    ))
}

/// `GET /users/{user_id}/devices`: every device of a user with its key status.
pub async fn devices(
    State(state): State<AppState>,
    _auth: DeviceAuth,
    ApiPath(user_id): ApiPath<UserId>,
) -> Result<Json<DeviceListResponse>, ApiError> {
    let devices = state.stores.accounts.devices(&user_id).await?;
    let identity_key = state.stores.accounts.identity_key(&user_id).await?;
    let devices = devices
        .into_iter()
        .map(|d| DeviceInfo {
            keys: d.keys,
            status: d.status,
            created_at: d.created_at.into(),
            one_time_keys_available: d.one_time_keys,
            fallback_key: d.fallback_key,
            certificate: d.certificate,
            revocation: d.revocation,
        })
        .collect();
    Ok(Json(DeviceListResponse {
        user_id,
        identity_key,
        devices,
    }))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", post(register))
        .route("/users/{user_id}/devices", get(devices))
        .route("/devices/link-tokens", post(link_token))
}
