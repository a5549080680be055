//! HTTP routes, one file per resource.
pub mod admin;
pub mod backups;
pub mod devices;
pub mod diagnose;
pub mod dpop_admin;
pub mod groups;
pub mod health;
pub mod key_packages;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod mls_admin;
pub mod receipts;
pub mod reports;
pub mod resend;
pub mod sessions;
pub mod signing_keys;
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
use axum::routing::{get, post};

/// Body limit of a key backup upload (the blob plus its JSON around it).
const MAX_BACKUP_BODY: usize = atlas_proto::backup::MAX_BACKUP_BYTES + 64 * 1024;
/// Body limit of a commit: adding many members makes a large commit and Welcome.
const MAX_COMMIT_BODY: usize = 16 * 1024 * 1024;

/// Only `/metrics`, for its own listener (`--metrics-listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}

/// The full API.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/health/e2ee", get(health::e2ee))
        .route("/metrics", get(metrics::public))
        .route("/reports/decryption", post(reports::record))
        .route("/users", post(users::register))
        .route("/users/{user_id}/devices", get(users::devices))
        .route("/devices/link-tokens", post(users::link_token))
        .route("/devices/pending", get(devices::pending))
        .route("/devices/certificate/claim", post(devices::claim))
        .route("/devices/{device_id}/certificate", post(devices::certify))
        .route("/devices/{device_id}/revoke", post(devices::revoke))
        .route("/token", post(token::token))
        .route("/keys/upload", post(keys::upload))
        .route("/keys/count", get(keys::count))
        .route("/keys/claim", post(keys::claim))
        .route("/keys/check", post(keys::check))
        .route(
            "/backups",
            post(backups::upload).layer(axum::extract::DefaultBodyLimit::max(
                max_body_bytes.max(MAX_BACKUP_BODY),
            )),
        )
        .route("/backups/{user_id}", get(backups::list))
        .route("/backups/{user_id}/{backup_id}", get(backups::download))
        .route("/messages", post(messages::send).get(messages::inbox))
        .route("/messages/ack", post(messages::ack))
        .route(
            "/messages/{message_id}/request-resend",
            post(resend::request),
        )
        .route("/resend-requests", get(resend::pending))
        .route("/sessions/{session_id}/reset", post(sessions::reset))
        .route("/sessions/resets", get(sessions::unseen))
        .route("/sessions/resets/ack", post(sessions::ack))
        .route(
            "/resend-requests/{request_id}/unavailable",
            post(resend::unavailable),
        )
        .route("/ws", get(ws::connect))
        .route("/mls/key-packages", post(key_packages::upload))
        .route("/mls/key-packages/count", get(key_packages::count))
        .route("/mls/key-packages/claim", post(key_packages::claim))
        .route("/groups", post(groups::create))
        .route("/groups/welcomes", get(groups::welcomes))
        .route("/groups/actions", get(groups::actions))
        .route(
            "/groups/actions/{action_id}/done",
            post(groups::action_done),
        )
        .route("/groups/{group_id}", get(groups::show))
        .route(
            "/groups/{group_id}/commits",
            post(groups::commit).layer(axum::extract::DefaultBodyLimit::max(
                max_body_bytes.max(MAX_COMMIT_BODY),
            )),
        )
        .route(
            "/groups/{group_id}/messages",
            post(groups::post_message).get(groups::log),
        )
        .route("/groups/{group_id}/group-info", get(groups::group_info))
        .route("/groups/{group_id}/ack", post(groups::ack))
        .route("/.well-known/jwks.json", get(receipts::jwks))
        .nest("/admin", admin::router())
        .route("/receipts/{message_id}", get(receipts::latest))
        .route("/receipts/{message_id}/reissue", post(receipts::reissue))
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
    let response = next.run(request).await;
    state
        .metrics
        .http(method, &route, response.status().as_u16());
    response
}
