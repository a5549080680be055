//! The router on its state, called without a socket: what the routes answer
//! needs no listener.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)] // Tests fail loudly on purpose.

use atlas_server::{ServerConfig, SystemClock};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::sync::Arc;
use tower::ServiceExt;

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_without_a_socket() {
    let dir = atlas_store::testdb::TempDir::new("atlas-router").unwrap();
    let config = ServerConfig::new(dir.sqlite_url("atlas.db"));
    let app = atlas_server::build(&config, Arc::new(SystemClock), "https://atlas.test".into())
        .await
        .unwrap();
    let router = app.router(&config);

    let (status, health) = call(&router, "GET", "/health", None).await;
    assert_eq!(
        (status, health["storage"]["backend"].as_str()),
        (StatusCode::OK, Some("sqlite"))
    );
    let (status, e2ee) = call(&router, "GET", "/health/e2ee", None).await;
    assert_eq!(
        (status, e2ee["status"].as_str()),
        (StatusCode::OK, Some("healthy"))
    );
    // The nested admin router: no token, a token that is not an operator's, an unknown admin route.
    let (status, body) = call(&router, "GET", "/admin/signing-keys", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (status, _) = call(&router, "GET", "/admin/signing-keys", Some("Bearer nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&router, "GET", "/admin/no-such-thing", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = call(&router, "GET", "/messages", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
}
