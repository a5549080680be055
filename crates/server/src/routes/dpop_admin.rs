//! The operator's view of the DPoP replay cache (`atlas dpop jti show/clear`,
//! the runbook's `redis-cli GET/DEL "dpop:jti:<JTI>"`).
use crate::auth::jti::cache_key;
use crate::auth::operator::{Admin, scope};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;
use atlas_crypto::dpop::MAX_JTI_LEN;
use atlas_proto::api::JtiStatus;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

fn checked(jti: String) -> Result<String, ApiError> {
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ApiError::invalid(format!(
            "jti must be 1 to {MAX_JTI_LEN} characters"
        )));
    }
    Ok(jti)
}

/// The operator's jti, checked for length.
fn authorised_jti(jti: String) -> Result<String, ApiError> {
    checked(jti)
}

/// `GET /admin/dpop/jti/{jti}`: is this proof id remembered (would a proof with it be a replay)?
pub async fn show_jti(
    State(state): State<AppState>,
    _: Admin<scope::Dpop>,
    ApiPath(jti): ApiPath<String>,
) -> Result<Json<JtiStatus>, ApiError> {
    let jti = authorised_jti(jti)?;
    let expires_at = state.jti.get(&jti).await?;
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
    operator: Admin<scope::Dpop>,
    ApiPath(jti): ApiPath<String>,
) -> Result<Json<JtiStatus>, ApiError> {
    let jti = authorised_jti(jti)?;
    let cleared = state.jti.remove(&jti).await?;
    tracing::warn!(token_id = %operator.token_id, %jti, cleared, "operator cleared a DPoP jti");
    Ok(Json(JtiStatus {
        key: cache_key(&jti),
        jti,
        seen: false,
        expires_at: None,
        cleared: Some(cleared),
    }))
}

/// The DPoP replay cache, under `/admin` (scope `dpop`).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/dpop/jti/{jti}", get(show_jti).delete(clear_jti))
}
