//! The Atlas delivery server: stores and forwards ciphertext it cannot read,
//! authenticates devices with DPoP-bound tokens, and hands out prekeys.
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod extract;
pub mod fanout;
pub mod rate_limit;
pub mod receipts;
pub mod routes;
pub mod state;
pub mod telemetry;

use crate::auth::jti::{EmbeddedJtiCache, JtiCache};
use crate::auth::tokens::AccessTokens;
use atlas_crypto::dpop::NonceIssuer;
use atlas_crypto::jws::HmacJwsKey;
use atlas_store::ServerKeyRecord;
pub use state::{Clock, ServerConfig, SystemClock};
use state::{Inner, RuntimeConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("storage: {0}")]
    Store(#[from] atlas_store::StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    /// A stored server key is unusable.
    #[error("server key '{0}' is corrupted")]
    BadServerKey(&'static str),
    /// The replay cache could not be loaded.
    #[error("jti cache: {0}")]
    Jti(#[from] auth::jti::JtiCacheError),
}

/// A server running in the background.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The public URL clients must use (and DPoP `htu`s name).
    pub public_url: String,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, finishes in-flight requests, flushes the replay cache.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Resolves when the server has stopped (after a signal or [`RunningServer::stop`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that triggers shutdown from elsewhere.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The server's 256-bit HMAC key for `purpose` (created on first start), with its key id.
async fn hmac_key(
    store: &dyn atlas_store::Store,
    purpose: &'static str,
    now: time::OffsetDateTime,
) -> Result<(String, [u8; 32]), StartError> {
    let make = move || ServerKeyRecord {
        kid: format!("{purpose}-{}", atlas_crypto::random_id()),
        purpose: purpose.into(),
        alg: "HS256".into(),
        secret: atlas_crypto::random_bytes::<32>().to_vec(),
        created_at: now,
    };
    let key = store.server_key(purpose, &make).await?;
    let secret = key
        .secret
        .try_into()
        .map_err(|_| StartError::BadServerKey(purpose))?;
    Ok((key.kid, secret))
}

/// Opens storage, binds, and serves until stopped.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with an injected clock (tests).
pub async fn start_with_clock(
    config: ServerConfig,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    let store = atlas_store::open(&config.database_url).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();

    let now = clock.now();
    let (token_kid, token_secret) = hmac_key(store.as_ref(), "access-token", now).await?;
    let (_, nonce_key) = hmac_key(store.as_ref(), "dpop-nonce", now).await?;
    let jti = Arc::new(EmbeddedJtiCache::load(store.clone(), now).await?);

    let (shutdown, mut stopped) = watch::channel(false);
    let state = Arc::new(Inner {
        store: store.clone(),
        config: RuntimeConfig {
            public_url: public_url.clone(),
            max_envelope_bytes: config.max_envelope_bytes,
            access_token_ttl_secs: config.access_token_ttl_secs,
            refresh_token_ttl_secs: config.refresh_token_ttl_secs,
            require_dpop_nonce: config.require_dpop_nonce,
            iat_window: config.iat_window,
        },
        tokens: AccessTokens::new(HmacJwsKey::new(token_secret), token_kid, public_url.clone()),
        jti: jti.clone(),
        nonces: NonceIssuer::new(nonce_key, 300),
        fanout: Default::default(),
        clock: clock.clone(),
        signing_keys: receipts::SigningKeys::new(store.clone()),
        receipts: receipts::ReceiptPolicy {
            issuer: public_url.clone(),
            ttl: time::Duration::seconds(config.receipt_ttl_secs),
        },
        shutdown: shutdown.subscribe(),
        metrics: Default::default(),
        report_limit: rate_limit::RateLimiter::new(
            routes::reports::BURST,
            routes::reports::PER_MINUTE,
        ),
        resend_limit: rate_limit::RateLimiter::new(
            routes::resend::BURST,
            routes::resend::PER_MINUTE,
        ),
        backup_limit: rate_limit::RateLimiter::new(
            routes::backups::BURST,
            routes::backups::PER_MINUTE,
        ),
    });
    let app = routes::router(state, config.max_body_bytes);
    let mut flusher_stop = shutdown.subscribe();
    let task = tokio::spawn(async move {
        let flusher = tokio::spawn({
            let jti = jti.clone();
            let clock = clock.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = flusher_stop.changed() => return,
                    }
                    if let Err(e) = jti.flush().await {
                        tracing::warn!(error = %e, "jti flush failed");
                    }
                    jti.prune(clock.unix());
                }
            }
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "server stopped with an error");
        }
        let _ = flusher.await;
        if let Err(e) = jti.flush().await {
            tracing::error!(error = %e, "final jti flush failed");
        }
    });
    tracing::info!(%addr, %public_url, backend = store.backend(), "atlas server listening");
    Ok(RunningServer {
        addr,
        public_url,
        shutdown,
        task,
    })
}
