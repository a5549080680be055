//! `atlas serve`.
use anyhow::Context;
use atlas_server::ServerConfig;
use atlas_server::state::Registration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Who may register new users.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RegistrationMode {
    /// Anyone (within the per-address limit).
    Open,
    /// Only with --registration-token.
    Token,
    /// Nobody.
    Closed,
}

/// Flags of `atlas serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "ATLAS_LISTEN")]
    listen: SocketAddr,
    /// Directory for the embedded database.
    #[arg(long, default_value = "./atlas-data", env = "ATLAS_DATA_DIR")]
    data_dir: PathBuf,
    /// Database URL: postgres://… for PostgreSQL; default is SQLite in --data-dir.
    #[arg(long, env = "ATLAS_DATABASE_URL")]
    database_url: Option<String>,
    /// Redis (`redis://[:PASSWORD@]HOST[:PORT][/DB]`) holding what replicas share:
    /// the DPoP replay cache (`dpop:jti:<JTI>`). Default: in the database.
    #[arg(long, env = "ATLAS_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Addresses (CIDR, comma-separated) admin requests may come from; others
    /// are refused and counted (atlas_admin_refused_total). Default: any.
    #[arg(long, env = "ATLAS_ADMIN_ALLOW", value_delimiter = ',')]
    admin_allow: Vec<ipnet::IpNet>,
    /// A Slack incoming-webhook URL: every incident change is posted there.
    #[arg(long, env = "ATLAS_SLACK_WEBHOOK_URL", hide_env_values = true, value_parser = http_url)]
    slack_webhook_url: Option<String>,
    /// A PagerDuty Events API v2 routing key: SEV-1/2 incidents page, closing resolves.
    #[arg(long, env = "ATLAS_PAGERDUTY_ROUTING_KEY", hide_env_values = true)]
    pagerduty_routing_key: Option<String>,
    /// Where PagerDuty events go.
    #[arg(long, env = "ATLAS_PAGERDUTY_EVENTS_URL", value_parser = http_url,
          default_value = atlas_server::notify::PAGERDUTY_EVENTS_URL)]
    pagerduty_events_url: String,
    /// Public origin clients use (DPoP htu is checked against it); default `http://<listen>`.
    #[arg(long, env = "ATLAS_PUBLIC_URL")]
    public_url: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest ciphertext per recipient device in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_envelope_bytes: usize,
    /// Validity of signed receipts, days (also the default overlap of a signing-key rotation).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    receipt_ttl_days: u32,
    /// Require server-issued DPoP nonces in every proof.
    #[arg(long)]
    require_dpop_nonce: bool,
    /// Key-encryption key sealing the server's secrets in the database (created 0600 if
    /// missing; default: server.kek in --data-dir). Servers sharing a database need the same one.
    #[arg(long, env = "ATLAS_KEK_FILE")]
    kek_file: Option<PathBuf>,
    /// Who may register new users: open, token (with --registration-token) or closed.
    #[arg(long, value_enum, default_value_t = RegistrationMode::Open, env = "ATLAS_REGISTRATION")]
    registration: RegistrationMode,
    /// The token new users must present with --registration token.
    #[arg(long, env = "ATLAS_REGISTRATION_TOKEN", hide_env_values = true)]
    registration_token: Option<String>,
    /// New users one address may register per minute (also the burst); raise it
    /// for load tests (`atlas bench`) that register many users from one host.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    registrations_per_minute: u32,
    /// Access tokens (`POST /token`) one address may request per minute (the
    /// burst is a fifth of it, at least 120); raise it with --registrations-per-minute for load tests.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    tokens_per_minute: u32,
    /// Undelivered messages a device may hold before sends to it wait (429 queue_full).
    #[arg(long, default_value_t = 10_000)]
    max_queued_per_device: u64,
    /// Open WebSockets per device.
    #[arg(long, default_value_t = 4)]
    max_websockets_per_device: usize,
    /// Open WebSockets in all.
    #[arg(long, default_value_t = 10_000)]
    max_websockets: usize,
    /// Serve /metrics on this address only (an internal network), not on --listen.
    #[arg(long, env = "ATLAS_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Label MLS series in /metrics with group names (default: stable salted hashes).
    #[arg(long)]
    metrics_group_ids: bool,
    /// Seconds a connection may take to send a request head; also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout: u64,
    /// Seconds to wait for the next chunk of a request body.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_read_timeout: u64,
    /// Seconds a WebSocket may stay silent (no pong to the server's pings) before it is closed.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(3..=3600))]
    websocket_idle_timeout: u64,
    /// Take disaster-recovery backups by itself to this location (a directory
    /// or s3://BUCKET/PREFIX), one at start and then every --backup-every.
    #[arg(long, env = "ATLAS_BACKUP_TO", requires = "backup_recipient")]
    backup_to: Option<String>,
    /// How often to back up: a number with s, m, h or d (6h).
    #[arg(long, default_value = "6h", value_parser = parse_every)]
    backup_every: Duration,
    /// The age recipient the backups' keys archives are sealed to (atlas dr keygen).
    #[arg(long, env = "ATLAS_DR_RECIPIENT")]
    backup_recipient: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// `30s`, `15m`, `6h`, `1d`: at least a minute.
fn parse_every(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a number with s, m, h or d (6h)"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: a number with s, m, h or d (6h)")),
    };
    match seconds {
        60.. => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("{text:?}: at least a minute between backups")),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Creates the data directory readable by its owner only (or makes it so).
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    atlas_store::set_mode(dir, 0o700).with_context(|| format!("restricting {}", dir.display()))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let kek_file = match args.kek_file {
        Some(path) => path,
        None => {
            private_dir(&args.data_dir)?;
            args.data_dir.join("server.kek")
        }
    };
    let database_url = match args.database_url {
        Some(url) => url,
        None => {
            private_dir(&args.data_dir)?;
            format!("sqlite://{}", args.data_dir.join("atlas.db").display())
        }
    };
    let mut config = ServerConfig::new(database_url);
    config.listen = args.listen;
    config.public_url = args.public_url;
    config.redis_url = args.redis_url;
    config.admin_allow = args.admin_allow;
    config.notify = atlas_server::notify::NotifyConfig {
        slack_webhook_url: args.slack_webhook_url,
        pagerduty_routing_key: args.pagerduty_routing_key.filter(|k| !k.trim().is_empty()),
        pagerduty_events_url: args.pagerduty_events_url,
        ..Default::default()
    };
    config.max_body_bytes = args.max_body_bytes;
    config.max_envelope_bytes = args.max_envelope_bytes;
    config.require_dpop_nonce = args.require_dpop_nonce;
    config.receipt_ttl_secs = i64::from(args.receipt_ttl_days) * 24 * 3600;
    config.kek_file = Some(kek_file);
    if let (Some(location), Some(recipient)) = (args.backup_to, args.backup_recipient) {
        atlas_dr::seal::check_recipient(&recipient)?;
        atlas_dr::location::parse(&location)?;
        config.backups = Some(atlas_server::scheduled_backups::BackupSchedule {
            location,
            every: args.backup_every,
            recipient,
        });
    }
    config.registration = match (args.registration, args.registration_token) {
        (RegistrationMode::Open, _) => Registration::Open,
        (RegistrationMode::Closed, _) => Registration::Closed,
        (RegistrationMode::Token, Some(token)) if token.len() >= 16 => Registration::Token(token),
        (RegistrationMode::Token, _) => {
            anyhow::bail!(
                "--registration token needs --registration-token of at least 16 characters"
            )
        }
    };
    config.limits.websockets_per_device = args.max_websockets_per_device.max(1);
    config.metrics_listen = args.metrics_listen;
    config.limits.queued_per_device = args.max_queued_per_device.max(1);
    config.limits.registrations_per_address =
        (args.registrations_per_minute, args.registrations_per_minute);
    config.limits.tokens_per_address = (
        (args.tokens_per_minute / 5).max(120),
        args.tokens_per_minute,
    );
    config.metrics_group_ids = args.metrics_group_ids;
    config.timeouts = atlas_server::listener::Timeouts {
        header_read: Duration::from_secs(args.header_read_timeout),
        body_read: Duration::from_secs(args.body_read_timeout),
        websocket_idle: Duration::from_secs(args.websocket_idle_timeout),
    };
    config.limits.websockets_total = args.max_websockets.max(1);
    let server = atlas_server::start(config)
        .await
        .context("starting the server")?;
    eprintln!(
        "atlas listening on {} (public URL {})",
        server.addr, server.public_url
    );
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested, finishing in-flight requests");
        let _ = stop.send(true);
    });
    server.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// An `http(s)://` URL (the value is not echoed: a webhook URL is a secret).
fn http_url(text: &str) -> Result<String, String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(text.to_owned())
        }
        _ => Err("not an http(s) URL".into()),
    }
}
