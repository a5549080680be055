//! `POST /admin/alerts`: Alertmanager's webhook (payload version 4), with an
//! operator token of scope `alerts` as its `http_config.authorization`
//! credentials. Alerts are recorded; incidents show those of their window.
use crate::auth::operator::{Admin, scope};
use crate::error::ApiError;
use crate::state::AppState;
use atlas_ops::alerts::{AlertsError, parse_webhook};
use atlas_proto::ErrorCode;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

/// `POST /admin/alerts`.
pub async fn receive(
    State(state): State<AppState>,
    _: Admin<scope::Alerts>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let alerts = parse_webhook(&body).map_err(|e| match e {
        AlertsError::TooLarge(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            e.to_string(),
        ),
        AlertsError::Malformed(_) | AlertsError::Version(_) => ApiError::invalid(e.to_string()),
    })?;
    state
        .stores
        .alerts
        .record_alerts(&alerts, state.clock.now())
        .await?;
    for a in &alerts {
        tracing::info!(alertname = %a.alertname, status = %a.status, severity = %a.severity, "alert received");
    }
    Ok(Json(serde_json::json!({ "recorded": alerts.len() })))
}

/// Alerts, under `/admin` (scope `alerts`).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/alerts", post(receive))
}
