//! The Atlas delivery server: stores and forwards ciphertext it cannot read,
//! authenticates devices with DPoP-bound tokens, and hands out prekeys.
#![forbid(unsafe_code)]

pub mod audit;
pub mod audit_layer;
pub mod auth;
pub mod control;
pub mod disconnects;
pub mod error;
pub mod evidence;
pub mod extract;
pub mod fanout;
pub mod indicators;
pub mod kek;
pub mod limits;
pub mod listener;
pub mod lockdown;
pub mod mls_commit;
pub mod notify;
pub mod performance;
pub mod rate_limit;
pub mod receipts;
pub mod redis_fanout;
pub mod redis_store;
pub mod revocation;
pub mod routes;
pub mod scheduled_backups;
pub mod server_keys;
pub mod state;
pub mod telemetry;

use crate::auth::jti::StoreJtiCache;
use crate::auth::tokens::AccessTokens;
use atlas_crypto::jws::HmacJwsKey;
use atlas_store::ServerKeyRecord;
use kek::Kek;
use server_keys::{ACCESS_TOKEN_PURPOSE, NONCE_PURPOSE, ServerKeys};
use state::{AppState, Inner, RuntimeConfig};
pub use state::{Clock, ServerConfig, SystemClock};
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
    /// The key-encryption key is missing, unreadable or the wrong one.
    #[error(transparent)]
    Kek(#[from] kek::KekError),
    /// The Redis URL is malformed.
    #[error("--redis-url: {0}")]
    Redis(String),
    /// No key-encryption key file was named (PostgreSQL needs one shared by every replica).
    #[error(
        "--kek-file is required with PostgreSQL (the same file on every server sharing the database)"
    )]
    KekFileRequired,
    /// The audit log's key is unusable.
    #[error("audit log: {0}")]
    Audit(#[from] audit::AuditError),
}

/// How often expired DPoP proof ids are pruned.
const JTI_PRUNE_EVERY: Duration = Duration::from_secs(10);

impl From<server_keys::ServerKeyError> for StartError {
    fn from(e: server_keys::ServerKeyError) -> Self {
        match e {
            server_keys::ServerKeyError::Store(e) => Self::Store(e),
            server_keys::ServerKeyError::Kek(e) => Self::Kek(e),
        }
    }
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
    /// Stops accepting and finishes in-flight requests.
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

/// A fresh 256-bit HMAC key record for `purpose`.
pub fn new_hmac_key(purpose: &str, now: time::OffsetDateTime) -> ServerKeyRecord {
    ServerKeyRecord {
        kid: format!("{purpose}-{}", atlas_crypto::random_id()),
        purpose: purpose.into(),
        alg: "HS256".into(),
        secret: atlas_crypto::random_bytes::<32>().to_vec(),
        created_at: now,
    }
}

/// The server's 256-bit HMAC key for `purpose` (created on first start), with its key id.
pub async fn hmac_key(
    keys: &ServerKeys,
    purpose: &'static str,
    now: time::OffsetDateTime,
) -> Result<(String, [u8; 32]), StartError> {
    let make = move || new_hmac_key(purpose, now);
    let key = keys.active(purpose, &make).await?;
    let secret = key
        .secret
        .try_into()
        .map_err(|_| StartError::BadServerKey(purpose))?;
    Ok((key.kid, secret))
}

/// The KEK file: the configured one, or `server.kek` beside a SQLite database.
fn kek_path(config: &ServerConfig) -> Result<std::path::PathBuf, StartError> {
    if let Some(path) = &config.kek_file {
        return Ok(path.clone());
    }
    atlas_store::sqlite_path(&config.database_url)
        .and_then(|db| Some(db.parent()?.join("server.kek")))
        .ok_or(StartError::KekFileRequired)
}

/// Every purpose of `server_keys`, checked at start-up.
const KEY_PURPOSES: [&str; 5] = [
    ACCESS_TOKEN_PURPOSE,
    NONCE_PURPOSE,
    receipts::SIGNING_PURPOSE,
    server_keys::METRICS_LABEL_PURPOSE,
    audit::AUDIT_PURPOSE,
];

/// The server keys under the KEK at `path`: every stored secret must open
/// under it (legacy plain ones are sealed). Finishes a KEK rotation that was
/// interrupted after the database was re-sealed (the next KEK is still beside
/// the file), and forgets one that never reached the database.
pub async fn open_server_keys(
    store: Arc<dyn atlas_store::ServerKeyStore>,
    path: &std::path::Path,
) -> Result<ServerKeys, StartError> {
    let next = Kek::next_path(path);
    let current = Kek::load_or_create(path).map(|kek| ServerKeys::new(store.clone(), kek));
    let checked = match current {
        Ok(keys) => keys.seal_legacy(&KEY_PURPOSES).await.map(|n| (keys, n)),
        Err(e) if next.exists() => Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    let (keys, sealed) = match checked {
        Ok(done) => {
            if next.exists() {
                tracing::warn!(path = %next.display(), "removing the next KEK of a rotation that never reached the database");
                std::fs::remove_file(&next).map_err(|source| kek::KekError::Io {
                    path: next.clone(),
                    source,
                })?;
            }
            done
        }
        Err(server_keys::ServerKeyError::Kek(_)) if next.exists() => {
            let keys = ServerKeys::new(store, Kek::load(&next)?);
            let sealed = keys.seal_legacy(&KEY_PURPOSES).await?;
            Kek::promote_next(path)?;
            tracing::warn!(path = %path.display(), "finished an interrupted KEK rotation: the next KEK is now the KEK");
            (keys, sealed)
        }
        Err(e) => return Err(e.into()),
    };
    if sealed > 0 {
        tracing::warn!(sealed, "sealed server keys that were stored in plain form");
    }
    Ok(keys)
}

/// Opens storage, binds, and serves until stopped.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// The server's state before any socket: storage opened and migrated, server
/// keys unsealed, and the shutdown signal its long-lived tasks watch.
pub struct App {
    /// What every handler gets.
    pub state: AppState,
    /// Turns true when the server stops.
    pub shutdown: watch::Sender<bool>,
    /// The replay cache (pruned in the background while serving).
    jti: Arc<StoreJtiCache>,
}

impl App {
    /// The full API on this state (a router that tests call without a socket).
    pub fn router(&self, config: &ServerConfig) -> axum::Router {
        routes::router(self.state.clone(), config.max_body_bytes)
    }
}

/// Builds the state for `config` as served at `public_url`.
pub async fn build(
    config: &ServerConfig,
    clock: Arc<dyn Clock>,
    public_url: String,
) -> Result<App, StartError> {
    let store = atlas_store::open(&config.database_url).await?;
    let public_url = public_url.trim_end_matches('/').to_owned();

    let stores = atlas_store::Stores::new(store);
    let kek_file = kek_path(config)?;
    let keys = open_server_keys(stores.server_keys.clone(), &kek_file).await?;
    let now = clock.now();
    let (token_kid, token_secret) = hmac_key(&keys, ACCESS_TOKEN_PURPOSE, now).await?;
    let (_, nonce_key) = hmac_key(&keys, NONCE_PURPOSE, now).await?;
    let (_, metrics_salt) = hmac_key(&keys, server_keys::METRICS_LABEL_PURPOSE, now).await?;
    let audit = Arc::new(
        audit::AuditLog::open(
            stores.audit.clone(),
            &keys,
            &audit::origin_for(Some(&public_url)),
            now,
        )
        .await?,
    );
    let jti = Arc::new(StoreJtiCache::new(stores.jtis.clone()));
    let redis = match &config.redis_url {
        Some(url) => {
            Some(redis_store::Redis::connect(url).map_err(|e| StartError::Redis(e.to_string()))?)
        }
        None => None,
    };
    let replay_cache: Arc<dyn auth::jti::JtiCache> = match &redis {
        Some(redis) => {
            if !redis.ping().await {
                tracing::warn!(
                    "Redis does not answer yet: DPoP-protected requests fail (503) until it does"
                );
            }
            Arc::new(redis_store::RedisJtiCache::new(redis.clone()))
        }
        None => jti.clone(),
    };
    let (fanout, control_events): (Arc<dyn fanout::Fanout>, _) = match (&redis, &config.redis_url) {
        (Some(redis), Some(url)) => {
            let (fanout, events) = redis_fanout::RedisFanout::start(redis, url)
                .await
                .map_err(|e| StartError::Redis(e.to_string()))?;
            (fanout, Some(events))
        }
        _ => (Arc::new(fanout::LocalFanout::default()), None),
    };

    let (shutdown, _) = watch::channel(false);
    let state = Arc::new(Inner {
        stores: stores.clone(),
        config: RuntimeConfig {
            public_url: public_url.clone(),
            max_envelope_bytes: config.max_envelope_bytes,
            access_token_ttl_secs: config.access_token_ttl_secs,
            refresh_token_ttl_secs: config.refresh_token_ttl_secs,
            require_dpop_nonce: config.require_dpop_nonce,
            iat_window: config.iat_window,
            websocket_idle: config.timeouts.websocket_idle,
            admin_allow: config.admin_allow.clone(),
            database_file: atlas_store::sqlite_path(&config.database_url),
        },
        tokens: AccessTokens::new(HmacJwsKey::new(token_secret), token_kid, public_url.clone()),
        keys,
        token_key_checked: std::sync::Mutex::new(None),
        device_statuses: Default::default(),
        jti: replay_cache,
        nonces: auth::tokens::Nonces::new(nonce_key),
        fanout,
        disconnects: Default::default(),
        clock: clock.clone(),
        signing_keys: receipts::SigningKeys::default(),
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
        limits: limits::Limits::new(config.limits.clone()),
        metrics_config: state::MetricsConfig {
            expose_group_ids: config.metrics_group_ids,
            own_listener: config.metrics_listen.is_some(),
            label_key: metrics_salt,
        },
        registration: config.registration.clone(),
        notify_to: config.notify.destinations(),
        status_page: Default::default(),
        audit: audit.clone(),
        lockdown: Default::default(),
        kek_file,
        redis,
    });
    lockdown::refresh(&state).await;
    lockdown::spawn(state.clone());
    audit::spawn(
        audit,
        clock.clone(),
        config.audit_checkpoint_interval,
        config.audit_verify_interval,
        shutdown.subscribe(),
    );
    indicators::spawn(state.clone(), config.indicator_interval);
    if let Some(schedule) = config.backups.clone() {
        scheduled_backups::spawn(state.clone(), schedule, shutdown.subscribe());
    }
    notify::spawn(
        config.notify.clone(),
        stores.incidents.clone(),
        clock.clone(),
        shutdown.subscribe(),
    );
    if let Some(mut events) = control_events {
        let state = state.clone();
        let mut stop = shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(text) => match control::ControlEvent::decode(&text) {
                            Some(event) => control::apply(&state, &event).await,
                            None => tracing::warn!(event = %text, "unknown control event ignored"),
                        },
                        None => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        });
    }
    Ok(App {
        state,
        shutdown,
        jti,
    })
}

/// [`start`] with an injected clock (tests).
pub async fn start_with_clock(
    config: ServerConfig,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let app = build(&config, clock.clone(), public_url).await?;
    let public_url = app.state.config.public_url.clone();
    let backend = app.state.stores.all.backend();
    let router = app.router(&config);
    let App {
        state,
        shutdown,
        jti,
    } = app;
    let stopped = shutdown.subscribe();
    let timeouts = config.timeouts;

    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            Some(listener)
        }
        None => None,
    };
    if let Some(listener) = metrics_listener {
        let metrics_app = routes::metrics::listener_router(state.clone());
        let stop = shutdown.subscribe();
        tokio::spawn(listener::serve(
            listener,
            metrics_app,
            config.timeouts,
            stop,
        ));
    }
    let mut pruner_stop = shutdown.subscribe();
    let task = tokio::spawn(async move {
        let pruner = tokio::spawn(async move {
            let mut tick = tokio::time::interval(JTI_PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = pruner_stop.changed() => return,
                }
                match auth::jti::prune_expired(jti.as_ref(), clock.unix()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(pruned = n, "expired DPoP proof ids pruned"),
                    Err(e) => tracing::warn!(error = %e, "jti pruning failed"),
                }
            }
        });
        listener::serve(listener, router, timeouts, stopped).await;
        let _ = pruner.await;
    });
    tracing::info!(%addr, %public_url, backend, "atlas server listening");
    Ok(RunningServer {
        addr,
        public_url,
        shutdown,
        task,
    })
}
