//! The emergency lockdown (seed 004 §3.1): instead of deleting pods and losing
//! what they hold, the servers stay up and close the client API — 503
//! `locked_down` with `Retry-After`, no tokens issued, every push socket
//! closed — while `/livez`, `/readyz`, `/health`, the status page, `/metrics`
//! and the admin API keep answering. The state is a row in the database, so it
//! holds across restarts and on every replica; with Redis a control event
//! makes the others act at once, without it they read it within two seconds.
use crate::disconnects::Reason;
use crate::error::ApiError;
use crate::state::{AppState, Inner};
use atlas_proto::ErrorCode;
use atlas_proto::emergency::{LOCKDOWN_RETRY_AFTER_SECS, LockdownState};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often each server reads the lockdown state (for replicas without Redis, and restarts).
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// This process's view of the lockdown.
#[derive(Debug, Default)]
pub struct Lockdown {
    active: AtomicBool,
    state: RwLock<Option<LockdownState>>,
}

impl Lockdown {
    /// Whether the client API is closed.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The lockdown in force, if any.
    pub fn current(&self) -> Option<LockdownState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes `state` as the truth; whether a lockdown just started here.
    fn set(&self, state: Option<LockdownState>) -> bool {
        let active = state.is_some();
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        let was = self.active.swap(active, Ordering::AcqRel);
        active && !was
    }
}

/// Reads the stored state; when a lockdown has just started, closes every socket.
pub async fn refresh(state: &Inner) {
    match state.stores.lockdown.lockdown().await {
        Ok(stored) => {
            if state.lockdown.set(stored) {
                tracing::warn!(
                    "emergency lockdown in force: client API closed, every socket closed"
                );
                state.disconnects.everyone(Reason::LockedDown);
            }
        }
        // Keep what we knew: a database outage must not lift a lockdown.
        Err(e) => tracing::warn!(error = %e, "lockdown state unreadable"),
    }
}

/// Reads the state now and every [`REFRESH_EVERY`].
pub fn spawn(state: AppState) {
    let mut stop = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => refresh(&state).await,
                _ = stop.changed() => return,
            }
        }
    });
}

/// Paths that stay open during a lockdown: probes, health, the status page,
/// metrics, the admin API and published keys and checkpoints.
fn stays_open(path: &str) -> bool {
    const OPEN: [&str; 7] = [
        "/livez",
        "/readyz",
        "/health",
        "/status",
        "/api/v2/",
        "/metrics",
        "/.well-known/",
    ];
    path.starts_with("/admin/") || path == "/admin" || OPEN.iter().any(|p| path.starts_with(p))
}

/// The middleware: 503 `locked_down` for the client API while locked down.
pub async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.lockdown.is_active() || stays_open(request.uri().path()) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::LockedDown,
        "the server is locked down by its operators (an emergency); try again later",
    )
    .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(LOCKDOWN_RETRY_AFTER_SECS),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_api_closes_and_operator_paths_stay_open() {
        for open in [
            "/livez",
            "/readyz",
            "/health",
            "/health/e2ee",
            "/status",
            "/status/feed.atom",
            "/api/v2/status.json",
            "/metrics",
            "/admin/emergency/lift",
            "/.well-known/jwks.json",
        ] {
            assert!(stays_open(open), "{open}");
        }
        for closed in [
            "/token",
            "/messages",
            "/ws",
            "/users",
            "/keys/claim",
            "/groups/g/messages",
            "/administrator",
        ] {
            assert!(!stays_open(closed), "{closed}");
        }
    }

    #[test]
    fn a_start_is_reported_once_and_a_lift_clears() {
        let lockdown = Lockdown::default();
        let state = LockdownState {
            since: time::OffsetDateTime::UNIX_EPOCH.into(),
            actor: "op".into(),
            reason: String::new(),
        };
        assert!(lockdown.set(Some(state.clone())));
        assert!(!lockdown.set(Some(state)), "already in force");
        assert!(lockdown.is_active());
        assert!(!lockdown.set(None));
        assert!(!lockdown.is_active() && lockdown.current().is_none());
    }
}
