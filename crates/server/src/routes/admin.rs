//! The admin API (operator Bearer tokens): the runbook's look-ups and repairs.
use crate::auth::jti::cache_key;
use crate::auth::operator::OperatorAuth;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;
use atlas_crypto::dpop::MAX_JTI_LEN;
use atlas_proto::api::JtiStatus;
use axum::Json;
use axum::extract::State;

/// Scope of the DPoP replay-cache routes.
pub const SCOPE_DPOP: &str = "dpop";

fn checked(jti: String) -> Result<String, ApiError> {
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ApiError::invalid(format!(
            "jti must be 1 to {MAX_JTI_LEN} characters"
        )));
    }
    Ok(jti)
}

/// The operator's jti, checked against scope and length.
fn authorised_jti(operator: &OperatorAuth, jti: String) -> Result<String, ApiError> {
    operator.require(SCOPE_DPOP)?;
    checked(jti)
}

/// `GET /admin/dpop/jti/{jti}`: is this proof id remembered (would a proof with it be a replay)?
pub async fn show_jti(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(jti): ApiPath<String>,
) -> Result<Json<JtiStatus>, ApiError> {
    let jti = authorised_jti(&operator, jti)?;
    let expires_at = state.jti.get(&jti).await.map_err(ApiError::internal)?;
    Ok(Json(JtiStatus {
        key: cache_key(&jti),
        jti,
        seen: expires_at.is_some(),
        expires_at,
        cleared: None,
    }))
}

/// `DELETE /admin/dpop/jti/{jti}`: forgets a proof id (a replay false positive).
pub async fn clear_jti(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(jti): ApiPath<String>,
) -> Result<Json<JtiStatus>, ApiError> {
    let jti = authorised_jti(&operator, jti)?;
    let cleared = state.jti.remove(&jti).await.map_err(ApiError::internal)?;
    tracing::warn!(token_id = %operator.token_id, %jti, cleared, "operator cleared a DPoP jti");
    Ok(Json(JtiStatus {
        key: cache_key(&jti),
        jti,
        seen: false,
        expires_at: None,
        cleared: Some(cleared),
    }))
}
