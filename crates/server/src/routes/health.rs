//! `GET /health`: liveness with a storage round trip.
use crate::state::AppState;
use atlas_proto::api::{HealthResponse, StorageHealth};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// 200 when storage answers, 503 otherwise.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let started = std::time::Instant::now();
    let ok = state.store.ping().await.is_ok();
    let body = HealthResponse {
        status: if ok { "ok" } else { "unavailable" }.into(),
        storage: StorageHealth {
            backend: state.store.backend().into(),
            ok,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        version: env!("CARGO_PKG_VERSION").into(),
    };
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}
