//! HTTP routes, one file per resource.
pub mod admin;
pub mod alerts;
pub mod audit;
pub mod backups;
pub mod devices;
pub mod diagnose;
pub mod dpop_admin;
pub mod emergency;
pub mod groups;
pub mod health;
pub mod incidents;
pub mod key_packages;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod mls_admin;
pub mod receipts;
pub mod recovery;
pub mod rekey;
pub mod reports;
pub mod resend;
pub mod sessions;
pub mod signing_keys;
pub mod status;
pub mod token;
pub mod users;
pub mod ws;

use crate::error::ApiError;
use crate::state::AppState;
use atlas_proto::ErrorCode;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

/// A fresh id for a resend request or a member action (a UUIDv7, so ids sort by time).
pub(crate) fn new_request_id() -> Result<atlas_proto::RequestId, ApiError> {
    atlas_proto::RequestId::new(uuid::Uuid::now_v7().to_string()).map_err(ApiError::internal)
}

/// The full API: each module's routes, and the admin routes under `/admin`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(health::router())
        .merge(status::router())
        .merge(metrics::router())
        .merge(reports::router())
        .merge(users::router())
        .merge(devices::router())
        .merge(rekey::router())
        .merge(token::router())
        .merge(keys::router())
        .merge(backups::router(max_body_bytes))
        .merge(messages::router())
        .merge(resend::router())
        .merge(sessions::router())
        .merge(ws::router())
        .merge(key_packages::router())
        .merge(groups::router(max_body_bytes))
        .merge(receipts::router())
        .merge(audit::router())
        .nest("/admin", admin::router())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::lockdown::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit_layer::audit_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            offer_nonce,
        ))
        .with_state(state)
}

/// When nonces are required, every response carries a fresh one, so clients
/// rarely need the extra round trip of a `use_dpop_nonce` challenge.
async fn offer_nonce(State(state): State<AppState>, mut response: Response) -> Response {
    if state.config.require_dpop_nonce
        && !response.headers().contains_key("dpop-nonce")
        && let Ok(nonce) = HeaderValue::from_str(&state.nonces.issue(state.clock.unix()))
    {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    response
}

/// Counts every answered request by method, route template and status.
async fn count_request(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.latency.observe(started.elapsed());
    let status = response.status().as_u16();
    state.metrics.http(method, &route, status);
    if matches!(status, 401 | 403)
        && let Some(code) = response.extensions().get::<ErrorCode>()
    {
        state.metrics.auth_failure(code.as_str());
    }
    response
}
