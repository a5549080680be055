//! Authentication: RFC 9449 DPoP proofs on every client request, bound access
//! tokens, and replay detection.
pub mod device_status;
pub mod jti;
pub mod operator;
pub mod tokens;

use crate::error::ApiError;
use crate::state::AppState;
use atlas_crypto::dpop::{self, DpopError, ExpectedRequest, VerifiedProof};
use atlas_proto::{DeviceId, ErrorCode, UserId};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use device_status::DeviceState;

/// Message the runbook expects for proof failures.
pub const INVALID_PROOF: &str = "Invalid DPoP proof";
/// Message the runbook expects when the token is bound to another key.
pub const BINDING_FAILED: &str = "Token binding failed";

/// A request authenticated by a DPoP-bound access token and a valid proof.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    /// The user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// Access token expiry (Unix seconds).
    pub expires_at: i64,
}

fn proof_error(state: &AppState, e: DpopError) -> ApiError {
    match e {
        DpopError::NonceRequired | DpopError::NonceInvalid => {
            state.metrics.dpop("use_nonce");
            ApiError::unauthorized(ErrorCode::UseDpopNonce, format!("{INVALID_PROOF}: {e}"))
                .with_nonce(state.nonces.issue(state.clock.unix()))
        }
        e => {
            state.metrics.dpop("invalid");
            ApiError::unauthorized(ErrorCode::InvalidDpopProof, format!("{INVALID_PROOF}: {e}"))
        }
    }
}

/// Checks the `DPoP` header of a request: signature, method, URL, time, `ath`,
/// nonce, and finally replay (last, so a bad proof cannot poison the cache).
pub async fn check_proof(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    access_token: Option<&str>,
) -> Result<VerifiedProof, ApiError> {
    verify_proof(state, method, path, headers, access_token, None, true)
        .await
        .map(|(verified, _)| verified)
}

/// [`check_proof`]; with `record` false the proof id is left for the caller to
/// record (a send records it in the send's own transaction).
async fn verify_proof(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    access_token: Option<&str>,
    device: Option<String>,
    record: bool,
) -> Result<(VerifiedProof, ProofId), ApiError> {
    let mut values = headers.get_all("dpop").iter();
    let proof = match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .map_err(|_| proof_error(state, DpopError::Malformed("header is not ASCII")))?,
        (None, _) => {
            return Err(proof_error(
                state,
                DpopError::Malformed("DPoP header missing"),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(proof_error(
                state,
                DpopError::Malformed("more than one DPoP header"),
            ));
        }
    };
    let htu = format!("{}{}", state.config.public_url, path);
    let now = state.clock.unix();
    let expected = ExpectedRequest {
        htm: method.as_str(),
        htu: &htu,
        access_token,
        now,
    };
    let verified = dpop::verify_proof(proof, &expected, state.config.iat_window)
        .map_err(|e| proof_error(state, e))?;
    match &verified.nonce {
        Some(nonce) => state
            .nonces
            .check(nonce, now)
            .map_err(|e| proof_error(state, e))?,
        None if state.config.require_dpop_nonce => {
            return Err(proof_error(state, DpopError::NonceRequired));
        }
        None => {}
    }
    let proof_id = ProofId {
        used: jti::JtiUse {
            at: state.clock.now(),
            request: format!("{method} {path}"),
            jkt: verified.jkt.clone(),
            device,
        },
        jti: verified.jti.clone(),
        expires_at: (verified.iat
            + state.config.iat_window.max_age_secs
            + state.config.iat_window.max_skew_secs)
            .max(now + 1),
    };
    if record {
        proof_id.record(state).await?;
    }
    Ok((verified, proof_id))
}

/// A proof id to remember until its proof could no longer be accepted anyway.
#[derive(Debug, Clone)]
pub struct ProofId {
    /// The proof's `jti`.
    pub jti: String,
    /// Until when (Unix seconds).
    pub expires_at: i64,
    /// Who used it, for the operator reading the cache.
    pub used: jti::JtiUse,
}

/// The answer to a proof whose id was used before.
pub fn replayed(state: &AppState) -> ApiError {
    state.metrics.dpop("replay");
    ApiError::unauthorized(
        ErrorCode::InvalidDpopProof,
        format!("{INVALID_PROOF}: jti was already used (replay)"),
    )
}

impl ProofId {
    /// Records the id durably where the request's own write may have done so
    /// already (a refused send): an id found recorded is no replay here.
    pub async fn spend(&self, state: &AppState) -> Result<(), ApiError> {
        state
            .jti
            .insert_new(&self.jti, self.expires_at, &self.used)
            .await?;
        Ok(())
    }

    /// Records the id durably; a replay if it was recorded before.
    pub async fn record(&self, state: &AppState) -> Result<(), ApiError> {
        let fresh = state
            .jti
            .insert_new(&self.jti, self.expires_at, &self.used)
            .await?;
        if !fresh {
            return Err(replayed(state));
        }
        state.metrics.dpop("valid");
        Ok(())
    }
}

/// The `Authorization` header split into scheme and (trimmed) credentials.
pub fn authorization(parts: &Parts) -> Option<(&str, &str)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    Some((scheme, token.trim()))
}

impl DeviceAuth {
    /// Checks the token and the proof of a request, whatever the device's standing
    /// (recording the proof id unless `record` is false).
    async fn authenticate(
        parts: &Parts,
        state: &AppState,
        record: bool,
    ) -> Result<(Self, DeviceState, ProofId), ApiError> {
        let (scheme, token) = authorization(parts).ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "missing Authorization: DPoP <token>",
            )
        })?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "DPoP-bound token presented as Bearer: use Authorization: DPoP",
            ));
        }
        if !scheme.eq_ignore_ascii_case("dpop") || token.is_empty() {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "unsupported authorization scheme",
            ));
        }
        let now = state.clock.unix();
        let claims = match state.tokens.verify(token, now) {
            Err(tokens::TokenError::UnknownKey) if tokens::reload_key(state).await => {
                state.tokens.verify(token, now)
            }
            verified => verified,
        }
        .map_err(|e| ApiError::unauthorized(ErrorCode::InvalidToken, e.to_string()))?;
        let (proof, proof_id) = verify_proof(
            state,
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            Some(token),
            Some(format!("{}/{}", claims.sub, claims.did)),
            record,
        )
        .await?;
        if proof.jkt != claims.cnf.jkt {
            state.metrics.dpop("binding_failed");
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                BINDING_FAILED,
            ));
        }
        let standing = state
            .device_statuses
            .standing(state.stores.accounts.as_ref(), &claims.sub, &claims.did)
            .await?;
        if standing.state == DeviceState::Gone {
            // A removed device's tokens die with it.
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "this device has been removed",
            ));
        }
        if standing
            .tokens_after
            .is_some_and(|after| claims.iat < after)
        {
            // Captured before an identity revocation or the re-key after it.
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "issued before this device's keys were revoked or replaced: sign in again",
            ));
        }
        let standing = standing.state;
        let auth = DeviceAuth {
            user_id: claims.sub,
            device_id: claims.did,
            expires_at: claims.exp,
        };
        Ok((auth, standing, proof_id))
    }
}

/// Why a device that is not active is refused.
fn not_active(state: DeviceState) -> ApiError {
    match state {
        DeviceState::Rekey => ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            ErrorCode::RekeyRequired,
            "an operator revoked this device's identity keys: make new ones and publish them \
             with POST /devices/rekey (any sync of the SDK does it)",
        ),
        _ => pending_error(),
    }
}

fn pending_error() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        ErrorCode::DevicePending,
        "this device waits for another device of its user to certify it \
         (any sync there does it)",
    )
}

impl FromRequestParts<AppState> for DeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Self::authenticate(parts, state, true).await? {
            (auth, DeviceState::Active, _) => Ok(auth),
            (_, standing, _) => Err(not_active(standing)),
        }
    }
}

/// An active device whose proof id is not recorded yet: the handler records it
/// in the same durable write as its own (a send), and on any other outcome
/// before answering, so a proof is never accepted twice.
#[derive(Debug, Clone)]
pub struct DeferredDeviceAuth {
    /// The device.
    pub auth: DeviceAuth,
    /// The proof id for the request's own write to record; `None` when the
    /// replay cache is not the store's table and it was recorded already.
    pub proof_id: Option<ProofId>,
}

impl FromRequestParts<AppState> for DeferredDeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match DeviceAuth::authenticate(parts, state, false).await? {
            (auth, DeviceState::Active, proof_id) if state.jti.records_with_the_write() => {
                Ok(Self {
                    auth,
                    proof_id: Some(proof_id),
                })
            }
            (auth, DeviceState::Active, proof_id) => {
                proof_id.record(state).await?;
                Ok(Self {
                    auth,
                    proof_id: None,
                })
            }
            (_, standing, proof_id) => {
                proof_id.record(state).await?;
                Err(not_active(standing))
            }
        }
    }
}

/// A device whose identity keys were revoked: only for publishing new ones.
#[derive(Debug, Clone)]
pub struct RekeyingDeviceAuth(pub DeviceAuth);

impl FromRequestParts<AppState> for RekeyingDeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match DeviceAuth::authenticate(parts, state, true).await? {
            (auth, DeviceState::Rekey, _) => Ok(Self(auth)),
            (_, DeviceState::Pending, _) => Err(pending_error()),
            _ => Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                ErrorCode::InvalidRequest,
                "this device's keys were not revoked: there is nothing to re-key",
            )),
        }
    }
}

/// A device that may be pending certification: for fetching its certificate
/// and publishing its keys. Not one whose keys were revoked: it re-keys first.
#[derive(Debug, Clone)]
pub struct LinkedDeviceAuth(pub DeviceAuth);

impl FromRequestParts<AppState> for LinkedDeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match DeviceAuth::authenticate(parts, state, true).await? {
            (_, DeviceState::Rekey, _) => Err(not_active(DeviceState::Rekey)),
            (auth, _, _) => Ok(Self(auth)),
        }
    }
}

/// A request from a device (DPoP) or an operator (Bearer), for routes both may use.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A device of a user.
    Device(DeviceAuth),
    /// An operator token.
    Operator(operator::OperatorAuth),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = authorization(parts).is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.starts_with(operator::TOKEN_PREFIX)
        });
        if bearer {
            operator::OperatorAuth::from_request_parts(parts, state)
                .await
                .map(Self::Operator)
        } else {
            DeviceAuth::from_request_parts(parts, state)
                .await
                .map(Self::Device)
        }
    }
}
