//! The HTTP half of the audit log: a middleware that appends every operator
//! request that changes something, and every refused admin authentication,
//! before the answer leaves. Because it sits on the router and not in the
//! handlers, a new admin route is audited without anyone remembering to.
use crate::state::AppState;
use atlas_proto::ErrorCode;
use atlas_proto::audit::{AuditOutcome, NewAuditEntry};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Filled by the operator extractor with the token that authenticated
/// (id, label), so the entry names its actor even when the handler refused.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<(String, String)>>>);

impl AuditSlot {
    /// Records the authenticated operator.
    pub fn set(&self, token_id: &str, label: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((token_id.to_owned(), label.to_owned()));
    }

    fn take(&self) -> Option<(String, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Whether a request is an operator's: an admin route, or an operator token elsewhere
/// (`atlas diagnose --apply` asks for resends and session resets with one).
fn is_operator_request(request: &Request) -> bool {
    request.uri().path().starts_with("/admin")
        || request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(crate::auth::operator::TOKEN_PREFIX))
}

/// The middleware (see the module docs).
pub async fn audit_requests(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !is_operator_request(&request) {
        return next.run(request).await;
    }
    let slot = AuditSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let target = request.uri().path().to_owned();
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let response = next.run(request).await;
    let status = response.status();
    let refused_auth = matches!(status.as_u16(), 401 | 403);
    if matches!(method, Method::GET | Method::HEAD) && !refused_auth {
        return response;
    }
    let (actor, actor_label) = slot
        .take()
        .unwrap_or_else(|| ("anonymous".into(), String::new()));
    let outcome = if status.is_server_error() {
        AuditOutcome::Failed
    } else if status.is_client_error() {
        AuditOutcome::Refused
    } else {
        AuditOutcome::Ok
    };
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| format!(" {}", c.as_str()))
        .unwrap_or_default();
    let entry = NewAuditEntry {
        at: state.clock.now().into(),
        actor,
        actor_label,
        source,
        action: format!("{method} {route}"),
        target,
        outcome,
        detail: format!("{}{code}", status.as_u16()),
    };
    if refused_auth && entry.actor == "anonymous" {
        state.audit.record_auth_failure(entry).await;
    } else {
        let _ = state.audit.record(entry).await;
    }
    response
}
