//! `POST /token`: DPoP-bound access tokens for a device that proves possession
//! of its Ed25519 key (or presents a refresh token bound to the same DPoP key).
use crate::auth::tokens::{AccessClaims, Confirmation};
use crate::auth::{BINDING_FAILED, check_proof};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::limits::{ClientAddr, Limits};
use crate::state::AppState;
use atlas_proto::api::{TokenRequest, TokenResponse, token_signing_payload};
use atlas_proto::{DeviceId, ErrorCode, UserId};
use atlas_store::{RefreshTokenRecord, RefreshUse};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use sha2::{Digest, Sha256};

fn invalid_grant(description: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidGrant,
        description,
    )
}

/// Issues an access token and a refresh token.
pub async fn token(
    State(state): State<AppState>,
    ClientAddr(source): ClientAddr,
    method: Method,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Limits::take_shared(
        &state.limits.tokens,
        "token",
        &state,
        &source,
        "token requests from this address",
    )
    .await?;
    let proof = check_proof(&state, &method, "/token", &headers, None).await?;
    let now = state.clock.now();
    let (user_id, device_id, family) = match req {
        TokenRequest::DeviceSignature {
            user_id,
            device_id,
            iat,
            signature,
        } => {
            let window = state.config.iat_window;
            if iat < now.unix_timestamp() - window.max_age_secs
                || iat > now.unix_timestamp() + window.max_skew_secs
            {
                return Err(invalid_grant(
                    "device signature is stale or from the future",
                ));
            }
            let device = state
                .stores
                .accounts
                .device(&user_id, &device_id)
                .await?
                // A pending (linked, not yet certified) device gets a token too, to fetch its certificate.
                .filter(|d| d.status != atlas_proto::api::DeviceStatus::Revoked);
            let device = device.ok_or_else(|| invalid_grant("unknown or inactive device"))?;
            let payload = token_signing_payload(&user_id, &device_id, &proof.jkt, iat);
            atlas_crypto::device::verify(&device.keys.ed25519, payload.as_bytes(), &signature)
                .map_err(|_| invalid_grant("device signature does not verify"))?;
            let family = Family {
                id: atlas_crypto::random_id(),
                expires_at: now + time::Duration::seconds(state.config.refresh_token_ttl_secs),
            };
            (user_id, device_id, family)
        }
        TokenRequest::RefreshToken { refresh_token } => {
            let used = state
                .stores
                .refresh_tokens
                .use_refresh_token(&Sha256::digest(refresh_token.as_bytes()), now)
                .await?;
            let record = match used {
                RefreshUse::Fresh(record) => record,
                RefreshUse::Replayed {
                    family_id,
                    device_id,
                } => {
                    tracing::warn!(%family_id, %device_id, "a spent refresh token was presented again: its whole chain is revoked");
                    return Err(invalid_grant(
                        "refresh token was already used: every token of its chain is revoked",
                    ));
                }
                RefreshUse::Invalid => {
                    return Err(invalid_grant("refresh token is unknown or expired"));
                }
            };
            if record.jkt != proof.jkt {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidGrant,
                    BINDING_FAILED,
                ));
            }
            // The successor inherits the chain and its expiry: rotation never extends a chain.
            let family = Family {
                id: record.family_id,
                expires_at: record.expires_at,
            };
            (record.user_id, record.device_id, family)
        }
    };
    issue(&state, user_id, device_id, proof.jkt, family)
        .await
        .map(Json)
}

/// The refresh-token chain a grant continues or starts.
struct Family {
    id: String,
    expires_at: time::OffsetDateTime,
}

async fn issue(
    state: &AppState,
    user_id: UserId,
    device_id: DeviceId,
    jkt: String,
    family: Family,
) -> Result<TokenResponse, ApiError> {
    let now = state.clock.now();
    let ttl = state.config.access_token_ttl_secs;
    let claims = AccessClaims {
        iss: state.config.public_url.clone(),
        sub: user_id.clone(),
        did: device_id.clone(),
        cnf: Confirmation { jkt: jkt.clone() },
        iat: now.unix_timestamp(),
        exp: now.unix_timestamp() + ttl,
    };
    let refresh_token = atlas_proto::b64::encode(atlas_crypto::random_bytes::<32>());
    state
        .stores
        .refresh_tokens
        .insert_refresh_token(&RefreshTokenRecord {
            token_hash: Sha256::digest(refresh_token.as_bytes()).to_vec(),
            user_id,
            device_id,
            jkt,
            family_id: family.id,
            expires_at: family.expires_at,
        })
        .await?;
    Ok(TokenResponse {
        access_token: state.tokens.issue(&claims),
        token_type: "DPoP".into(),
        expires_in: ttl.max(0) as u64,
        refresh_token,
    })
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/token", post(token))
}
