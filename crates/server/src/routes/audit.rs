//! The audit log over HTTP: the published checkpoint (public, as transparency
//! logs publish theirs), and listing and verifying for operators (scope `audit`).
use crate::auth::operator::{Admin, scope};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use atlas_proto::audit::{AuditEntry, CheckpointView, VerifyView};
use atlas_proto::timestamp::Timestamp;
use atlas_store::AuditFilter;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

/// Most entries one list returns.
pub const MAX_LIST: u32 = 1000;

/// `GET /.well-known/atlas/audit-checkpoint`: the latest signed checkpoint and its key.
async fn checkpoint(State(state): State<AppState>) -> Result<Json<CheckpointView>, ApiError> {
    Ok(Json(
        state.audit.published().await.map_err(ApiError::internal)?,
    ))
}

/// Query of `GET /admin/audit`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    since: Option<Timestamp>,
    action: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/audit?since=&action=&limit=`: entries, newest first.
async fn list(
    State(state): State<AppState>,
    _operator: Admin<scope::Audit>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let filter = AuditFilter {
        since: query.since.map(|t| t.0),
        action: query.action,
        limit: query.limit.unwrap_or(100).clamp(1, MAX_LIST),
    };
    Ok(Json(state.stores.audit.audit_list(&filter).await?))
}

/// `GET /admin/audit/verify`: recomputes the tree and checks every seal and checkpoint.
async fn verify(
    State(state): State<AppState>,
    _operator: Admin<scope::Audit>,
) -> Result<Json<VerifyView>, ApiError> {
    Ok(Json(
        state.audit.verify().await.map_err(ApiError::internal)?,
    ))
}

/// The public route.
pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/atlas/audit-checkpoint", get(checkpoint))
}

/// The admin routes.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/verify", get(verify))
}
