//! Shared server state, configuration and the injectable clock.
use crate::auth::jti::JtiCache;
use crate::auth::tokens::AccessTokens;
use crate::fanout::Fanout;
use atlas_crypto::dpop::IatWindow;
use std::net::SocketAddr;
use std::sync::Arc;

/// How the server is configured (the `atlas serve` flags).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The origin clients use, which DPoP `htu` is checked against; default `http://<listen>`.
    pub public_url: Option<String>,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// `redis://…`: the replay cache every replica shares (else the database's table).
    pub redis_url: Option<String>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest single ciphertext in a send, bytes of base64.
    pub max_envelope_bytes: usize,
    /// Access token lifetime, seconds.
    pub access_token_ttl_secs: i64,
    /// Refresh token lifetime, seconds.
    pub refresh_token_ttl_secs: i64,
    /// Require a server-issued nonce in every DPoP proof.
    pub require_dpop_nonce: bool,
    /// Accepted age and clock skew of proofs.
    pub iat_window: IatWindow,
    /// Validity of a new receipt, seconds (also the default overlap of a signing-key rotation).
    pub receipt_ttl_secs: i64,
    /// Limits on shared resources.
    pub limits: crate::limits::LimitConfig,
    /// Serve `/metrics` on this address only (not on the public listener).
    pub metrics_listen: Option<SocketAddr>,
    /// Label MLS series with group names instead of salted hashes.
    pub metrics_group_ids: bool,
    /// Who may register new users.
    pub registration: Registration,
    /// The key-encryption key file sealing `server_keys` (created `0600` if missing);
    /// default `server.kek` beside a SQLite database. Required for PostgreSQL,
    /// where every replica must use the same one.
    pub kek_file: Option<std::path::PathBuf>,
    /// Header-read (idle) and body-read timeouts of every connection.
    pub timeouts: crate::listener::Timeouts,
    /// Where incident notifications go (Slack, PagerDuty).
    pub notify: crate::notify::NotifyConfig,
    /// Addresses admin requests may come from (empty: any); others are refused and counted.
    pub admin_allow: Vec<ipnet::IpNet>,
    /// How often indicators of compromise are checked for open incidents' timelines.
    pub indicator_interval: std::time::Duration,
    /// How often the audit log is checkpointed (at most a minute, as the runbook contract says).
    pub audit_checkpoint_interval: std::time::Duration,
    /// How often the whole audit log is verified in the background.
    pub audit_verify_interval: std::time::Duration,
    /// Scheduled disaster-recovery backups (`--backup-to`), if any.
    pub backups: Option<crate::scheduled_backups::BackupSchedule>,
}

impl ServerConfig {
    /// Defaults for a database URL: 127.0.0.1:8080, 1 MiB bodies, 64 KiB ciphertexts,
    /// 10 min tokens, 30-day receipts.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            database_url: database_url.into(),
            redis_url: None,
            max_body_bytes: 1024 * 1024,
            max_envelope_bytes: 64 * 1024,
            access_token_ttl_secs: 600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            require_dpop_nonce: false,
            iat_window: IatWindow::default(),
            receipt_ttl_secs: 30 * 24 * 3600,
            kek_file: None,
            limits: Default::default(),
            metrics_listen: None,
            metrics_group_ids: false,
            registration: Registration::Open,
            timeouts: Default::default(),
            notify: Default::default(),
            admin_allow: Vec::new(),
            indicator_interval: std::time::Duration::from_secs(60),
            audit_checkpoint_interval: std::time::Duration::from_secs(30),
            audit_verify_interval: std::time::Duration::from_secs(600),
            backups: None,
        }
    }
}

/// How `/metrics` labels MLS groups.
pub struct MetricsConfig {
    /// Group names as labels (else salted hashes).
    pub expose_group_ids: bool,
    /// Served on a listener of its own, not the public one.
    pub own_listener: bool,
    /// The salt of the hashes (a server key, so labels stay stable across restarts and replicas).
    pub label_key: [u8; 32],
}

/// Who may register a new user (adding a device needs a link code regardless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Anyone (within the per-address limit).
    Open,
    /// Whoever presents this registration token.
    Token(String),
    /// Nobody: users are created by other means, or not at all.
    Closed,
}

/// Configuration with the public URL resolved.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Public origin without a trailing slash.
    pub public_url: String,
    /// See [`ServerConfig::max_envelope_bytes`].
    pub max_envelope_bytes: usize,
    /// See [`ServerConfig::access_token_ttl_secs`].
    pub access_token_ttl_secs: i64,
    /// See [`ServerConfig::refresh_token_ttl_secs`].
    pub refresh_token_ttl_secs: i64,
    /// See [`ServerConfig::require_dpop_nonce`].
    pub require_dpop_nonce: bool,
    /// See [`ServerConfig::iat_window`].
    pub iat_window: IatWindow,
    /// See [`crate::listener::Timeouts::websocket_idle`].
    pub websocket_idle: std::time::Duration,
    /// See [`ServerConfig::admin_allow`].
    pub admin_allow: Vec<ipnet::IpNet>,
    /// The SQLite database file (none on PostgreSQL), for the configuration self-check.
    pub database_file: Option<std::path::PathBuf>,
}

pub use atlas_proto::clock::{Clock, SystemClock};

/// Everything a handler needs.
pub struct Inner {
    /// Storage, by area.
    pub stores: atlas_store::Stores,
    /// Resolved configuration.
    pub config: RuntimeConfig,
    /// Access token signer/verifier.
    pub tokens: AccessTokens,
    /// The server's own keys, sealed at rest.
    pub keys: crate::server_keys::ServerKeys,
    /// Whether devices are pending, active or removed (cached briefly).
    pub device_statuses: crate::auth::device_status::DeviceStatuses,
    /// When this process last looked for a rotated access-token key.
    pub token_key_checked: std::sync::Mutex<Option<std::time::Instant>>,
    /// DPoP replay cache.
    pub jti: Arc<dyn JtiCache>,
    /// DPoP nonce issuer.
    pub nonces: crate::auth::tokens::Nonces,
    /// Live delivery to connected devices.
    pub fanout: Arc<dyn Fanout>,
    /// Push sockets to close at once (a revoked device, a rotated token key).
    pub disconnects: crate::disconnects::Disconnects,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// The receipt-signing key in use.
    pub signing_keys: crate::receipts::SigningKeys,
    /// Issuer and lifetime of receipts.
    pub receipts: crate::receipts::ReceiptPolicy,
    /// Becomes true when the server stops; long-lived connections close then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Counters for `/metrics`.
    pub metrics: crate::telemetry::Metrics,
    /// Decryption reports per device.
    pub report_limit: crate::rate_limit::RateLimiter,
    /// Resend requests per device pair.
    pub resend_limit: crate::rate_limit::RateLimiter,
    /// Limits on shared resources.
    pub limits: crate::limits::Limits,
    /// How `/metrics` labels groups.
    pub metrics_config: MetricsConfig,
    /// Who may register new users.
    pub registration: Registration,
    /// The public status page, computed at most every few seconds.
    pub status_page: crate::routes::status::StatusCache,
    /// The audit log.
    pub audit: Arc<crate::audit::AuditLog>,
    /// The emergency lockdown as this process knows it.
    pub lockdown: crate::lockdown::Lockdown,
    /// Where the KEK is (a rotation replaces it; other replicas reload it).
    pub kek_file: std::path::PathBuf,
    /// Where incident changes are notified.
    pub notify_to: Vec<atlas_ops::notify::Destination>,
    /// Redis, when configured (readiness checks it).
    pub redis: Option<crate::redis_store::Redis>,
}

/// Handler state.
pub type AppState = Arc<Inner>;
