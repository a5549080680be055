//! Limits on shared resources, each answered with 429 and `Retry-After` (or, for
//! one-time keys, a fallback key): key claims per claimer and per target, backup
//! downloads per source and per user, registrations and token requests per
//! address, WebSockets per device and in total. Counters are per server process,
//! but for the limits that protect secrets (backup downloads, registrations,
//! tokens), which with Redis are shared by every replica: N replicas must not
//! allow N times the guesses.
use crate::error::ApiError;
use crate::rate_limit::RateLimiter;
use crate::state::AppState;
use atlas_proto::{DeviceId, UserId};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// How the limits are set (`atlas serve` flags).
#[derive(Debug, Clone)]
pub struct LimitConfig {
    /// Key claims per claiming device: burst, per minute.
    pub claims_per_device: (u32, u32),
    /// One-time keys handed out per target user: burst, per minute; beyond it
    /// claims get the fallback key, so a drain cannot exhaust a user.
    pub one_time_keys_per_target: (u32, u32),
    /// Backup downloads per source address and user: burst, per minute.
    pub backup_downloads_per_source: (u32, u32),
    /// Backup downloads per user from all sources: burst, per minute.
    pub backup_downloads_per_user: (u32, u32),
    /// Registrations per source address: burst, per minute.
    pub registrations_per_address: (u32, u32),
    /// `POST /token` per source address: burst, per minute.
    pub tokens_per_address: (u32, u32),
    /// Undelivered messages a device may hold; sends to it wait beyond (429 `queue_full`).
    pub queued_per_device: u64,
    /// Open WebSockets per device.
    pub websockets_per_device: usize,
    /// Open WebSockets in all.
    pub websockets_total: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            claims_per_device: (30, 60),
            one_time_keys_per_target: (10, 20),
            backup_downloads_per_source: (10, 10),
            backup_downloads_per_user: (30, 30),
            registrations_per_address: (10, 10),
            tokens_per_address: (120, 600),
            queued_per_device: 10_000,
            websockets_per_device: 4,
            websockets_total: 10_000,
        }
    }
}

fn limiter((burst, per_minute): (u32, u32)) -> RateLimiter {
    RateLimiter::new(burst, per_minute)
}

/// The limiters of one server process.
pub struct Limits {
    /// The configuration.
    pub config: LimitConfig,
    /// Key claims per claiming device.
    pub claims: RateLimiter,
    /// One-time keys per target user.
    pub one_time_keys: RateLimiter,
    /// Backup downloads per (source, user).
    pub backup_per_source: RateLimiter,
    /// Backup downloads per user.
    pub backup_per_user: RateLimiter,
    /// Registrations per address.
    pub registrations: RateLimiter,
    /// Token requests per address.
    pub tokens: RateLimiter,
    sockets: Mutex<Sockets>,
}

#[derive(Default)]
struct Sockets {
    total: usize,
    per_device: HashMap<(UserId, DeviceId), usize>,
}

impl Limits {
    /// Limiters for `config`.
    pub fn new(config: LimitConfig) -> Self {
        Self {
            claims: limiter(config.claims_per_device),
            one_time_keys: limiter(config.one_time_keys_per_target),
            backup_per_source: limiter(config.backup_downloads_per_source),
            backup_per_user: limiter(config.backup_downloads_per_user),
            registrations: limiter(config.registrations_per_address),
            tokens: limiter(config.tokens_per_address),
            sockets: Mutex::new(Sockets::default()),
            config,
        }
    }

    /// 429 unless `limiter` has a token for `key`.
    pub fn take(
        limiter: &RateLimiter,
        state: &AppState,
        key: &str,
        what: &str,
    ) -> Result<(), ApiError> {
        limiter
            .check(key, state.clock.seconds())
            .map_err(|wait| ApiError::rate_limited(format!("too many {what}; retry later"), wait))
    }

    /// [`Limits::take`] from the bucket every replica shares when Redis is
    /// configured (`name` tells the buckets apart); Redis unavailable fails
    /// closed, as these limits guard secrets.
    pub async fn take_shared(
        limiter: &RateLimiter,
        name: &str,
        state: &AppState,
        key: &str,
        what: &str,
    ) -> Result<(), ApiError> {
        let Some(redis) = &state.redis else {
            return Self::take(limiter, state, key, what);
        };
        match redis
            .take_token(&format!("{name}:{key}"), limiter.burst, limiter.per_second)
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(ApiError::rate_limited(
                format!("too many {what}; retry later"),
                wait,
            )),
            Err(e) => {
                tracing::error!(error = %e, "shared rate limit unavailable (Redis)");
                Err(ApiError::unavailable(
                    "rate limiting is unavailable, retry later",
                    1,
                ))
            }
        }
    }

    /// A place for one more WebSocket of `device`, held until the guard is dropped.
    pub fn open_socket(
        state: &AppState,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<SocketSlot, ApiError> {
        let this = &state.limits;
        let mut sockets = this.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user_id.clone(), device_id.clone());
        let mine = sockets.per_device.get(&key).copied().unwrap_or(0);
        if mine >= this.config.websockets_per_device {
            return Err(ApiError::rate_limited(
                format!(
                    "at most {} open WebSockets per device",
                    this.config.websockets_per_device
                ),
                5,
            ));
        }
        if sockets.total >= this.config.websockets_total {
            return Err(ApiError::rate_limited(
                "the server holds its most WebSockets",
                30,
            ));
        }
        sockets.total += 1;
        sockets.per_device.insert(key.clone(), mine + 1);
        Ok(SocketSlot {
            state: state.clone(),
            key,
        })
    }

    fn close_socket(&self, key: &(UserId, DeviceId)) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        sockets.total = sockets.total.saturating_sub(1);
        if let Some(n) = sockets.per_device.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sockets.per_device.remove(key);
            }
        }
    }
}

/// An open WebSocket's place; frees it when dropped.
pub struct SocketSlot {
    state: AppState,
    key: (UserId, DeviceId),
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.state.limits.close_socket(&self.key);
    }
}

/// The address a request came from (`unknown` when the server runs without a socket).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip: Option<IpAddr> = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self(
            ip.map_or_else(|| "unknown".into(), |ip| ip.to_string()),
        ))
    }
}
