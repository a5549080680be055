//! Operator commands: `atlas admin token …` (on the server host, against its
//! store) and `atlas dpop jti …` (against the admin API with a Bearer token).
use crate::output::outln;
use anyhow::Context;
use atlas_client::operator::OperatorClient;
use atlas_proto::api::JtiStatus;
use std::path::PathBuf;

/// Where the server's store is, for commands run on the server host.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The server's data directory (its SQLite database).
    #[arg(long, default_value = "./atlas-data", env = "ATLAS_DATA_DIR")]
    data_dir: PathBuf,
    /// The server's database URL (overrides --data-dir).
    #[arg(long, env = "ATLAS_DATABASE_URL")]
    database_url: Option<String>,
    /// The server's key-encryption key, which opens the audit key (default:
    /// server.kek beside the SQLite database).
    #[arg(long, env = "ATLAS_KEK_FILE")]
    kek_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store of the SQLite database in `data_dir`, its KEK beside it.
    pub(crate) fn for_data_dir(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database_url: None,
            kek_file: None,
        }
    }

    /// The store at `database_url`, its KEK at `kek_file`.
    pub(crate) fn for_database(database_url: String, kek_file: PathBuf) -> Self {
        Self {
            data_dir: PathBuf::new(),
            database_url: Some(database_url),
            kek_file: Some(kek_file),
        }
    }

    pub(crate) async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn atlas_store::Store>> {
        let url = self.url()?;
        atlas_store::open(&url)
            .await
            .context("opening the server's store")
    }

    /// --database-url when it names a PostgreSQL database.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }

    /// The database URL: --database-url, or the SQLite file in --data-dir (made if missing).
    pub(crate) fn url_or_new(&self) -> anyhow::Result<String> {
        Ok(match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("atlas.db").display()),
        })
    }

    /// The database URL: --database-url, or the SQLite file in --data-dir (which must exist).
    pub(crate) fn url(&self) -> anyhow::Result<String> {
        Ok(match &self.database_url {
            Some(url) => url.clone(),
            None => {
                let file = self.data_dir.join("atlas.db");
                anyhow::ensure!(
                    file.exists(),
                    "no database at {} (use --data-dir or --database-url)",
                    file.display()
                );
                format!("sqlite://{}", file.display())
            }
        })
    }

    /// The KEK file: --kek-file, or server.kek beside the SQLite database.
    pub(crate) fn kek_path(&self) -> Option<PathBuf> {
        self.kek_file.clone().or_else(|| match &self.database_url {
            Some(url) => {
                atlas_store::sqlite_path(url).and_then(|db| Some(db.parent()?.join("server.kek")))
            }
            None => Some(self.data_dir.join("server.kek")),
        })
    }

    /// Appends a host-side act to the server's audit log. Without the KEK (a
    /// PostgreSQL URL and no --kek-file) the act cannot be sealed: it is then
    /// only reported on stderr, since the store alone cannot vouch for it.
    pub(crate) async fn audit(
        &self,
        store: std::sync::Arc<dyn atlas_store::Store>,
        entry: atlas_proto::audit::NewAuditEntry,
    ) {
        let recorded = match self.kek_path() {
            Some(kek) => match atlas_server::audit::open_on_host(
                store,
                &kek,
                time::OffsetDateTime::now_utc(),
            )
            .await
            {
                Ok(log) => log
                    .record(entry.clone())
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            },
            None => Err(anyhow::anyhow!("--kek-file not given")),
        };
        if let Err(e) = recorded {
            eprintln!(
                "warning: {} was not recorded in the audit log: {e:#}",
                entry.action
            );
        }
    }
}

/// `atlas admin …`.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Operator tokens for the admin API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Users' devices (admin API, scope devices).
    #[command(subcommand)]
    Device(DeviceAdminCommand),
}

/// `atlas admin device …`.
#[derive(clap::Subcommand)]
pub enum DeviceAdminCommand {
    /// Remove a device at once (a stolen phone): its tokens die and senders stop
    /// encrypting to it. Listed as removed by an operator, not by its user.
    Revoke {
        /// USER_ID/DEVICE_ID.
        member: atlas_proto::MemberRef,
        /// Skip the typed confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `atlas admin token …`.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create an operator token and print it (shown once; only its hash is stored).
    Create {
        /// A scope the token gets (repeatable, at least one).
        #[arg(long = "scope", required = true, value_enum)]
        scopes: Vec<atlas_proto::OperatorScope>,
        /// How long the token works: 90s, 30m, 12h, 7d (at most 365d).
        #[arg(long, default_value = "24h", value_parser = crate::keys_cmd::parse_duration)]
        expires_in: u64,
        /// Who or what the token is for.
        #[arg(long, default_value = "operator")]
        label: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Print token id, token and scopes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an operator token by its id.
    Revoke {
        /// The token id (`atlas-op.<ID>.…`).
        token_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the admin API is and the token to use.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// Server URL.
    #[arg(long, env = "ATLAS_SERVER")]
    pub(crate) server: String,
    /// Operator token (default: $ATLAS_ADMIN_TOKEN).
    #[arg(long, env = "ATLAS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ServerArgs {
    /// A Bearer client for the admin API.
    pub(crate) fn client(&self) -> anyhow::Result<OperatorClient> {
        let token = self.token.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no operator token: set ATLAS_ADMIN_TOKEN or pass --token (make one with atlas admin token create)"
            )
        })?;
        Ok(OperatorClient::new(&self.server, token)?)
    }
}

/// `atlas dpop jti …`.
#[derive(clap::Subcommand)]
pub enum JtiCommand {
    /// Is this proof id remembered (would a proof with it be refused as a replay)?
    Show {
        /// The proof's jti (any text a client chose, so it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        jti: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Forget a proof id (clear a replay false positive).
    Clear {
        /// The proof's jti (any text a client chose, so it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        jti: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Longest operator token lifetime, seconds.
const MAX_TOKEN_LIFETIME: u64 = 365 * 86_400;

/// `atlas admin …`.
pub async fn admin(cmd: AdminCommand) -> anyhow::Result<()> {
    let cmd = match cmd {
        AdminCommand::Token(cmd) => cmd,
        AdminCommand::Device(DeviceAdminCommand::Revoke {
            member,
            yes,
            server,
        }) => return revoke_device(&member, yes, &server).await,
    };
    match cmd {
        TokenCommand::Create {
            scopes,
            expires_in,
            label,
            store,
            json,
        } => {
            anyhow::ensure!(
                (1..=MAX_TOKEN_LIFETIME).contains(&expires_in),
                "--expires-in must be between 1s and 365d"
            );
            let (token, record) = atlas_server::auth::operator::new_token(
                &scopes,
                label,
                time::OffsetDateTime::now_utc(),
                time::Duration::seconds(i64::try_from(expires_in)?),
            );
            let expires_at = record
                .expires_at
                .map(atlas_proto::timestamp::rfc3339)
                .unwrap_or_default();
            let opened = store.open().await?;
            opened.create_operator_token(&record).await?;
            let detail = format!(
                "scopes {}; label {:?}; until {expires_at}",
                record.scopes.join(" "),
                record.label
            );
            store
                .audit(
                    opened,
                    atlas_server::audit::host_entry(
                        record.created_at,
                        "operator_token.create",
                        &record.token_id,
                        detail,
                    ),
                )
                .await;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({ "token_id": record.token_id, "token": token, "scopes": record.scopes, "label": record.label, "expires_at": expires_at })
                );
            } else {
                outln!("{token}");
                eprintln!(
                    "token id {} with scopes {}, valid until {expires_at}; export ATLAS_ADMIN_TOKEN=<token> to use it",
                    record.token_id,
                    record.scopes.join(" ")
                );
            }
        }
        TokenCommand::Revoke { token_id, store } => {
            let opened = store.open().await?;
            let now = time::OffsetDateTime::now_utc();
            let revoked = opened.revoke_operator_token(&token_id, now).await?;
            let mut entry = atlas_server::audit::host_entry(
                now,
                "operator_token.revoke",
                &token_id,
                String::new(),
            );
            if !revoked {
                entry.outcome = atlas_proto::audit::AuditOutcome::Refused;
                entry.detail = "no active token with this id".into();
            }
            store.audit(opened, entry).await;
            anyhow::ensure!(revoked, "no active operator token with id {token_id}");
            outln!("revoked operator token {token_id}");
        }
    }
    Ok(())
}

/// `atlas admin device revoke`: asks for USER_ID/DEVICE_ID to be typed back unless `--yes`.
async fn revoke_device(
    member: &atlas_proto::MemberRef,
    yes: bool,
    server: &ServerArgs,
) -> anyhow::Result<()> {
    let device = member
        .device_id
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("name the device as USER_ID/DEVICE_ID"))?;
    let named = format!("{}/{device}", member.user_id);
    if !yes {
        eprintln!("{named} will be removed: its tokens die at once and it receives nothing more.");
        eprint!("Type {named} to confirm: ");
        let mut typed = String::new();
        std::io::stdin().read_line(&mut typed)?;
        anyhow::ensure!(typed.trim() == named, "not confirmed; nothing changed");
    }
    let path = format!("/admin/devices/{}/{device}/revoke", member.user_id);
    let answer: serde_json::Value = server.client()?.call(reqwest::Method::POST, &path).await?;
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        outln!("removed {named}");
    }
    Ok(())
}

/// `atlas dpop jti …`.
pub async fn jti(cmd: JtiCommand) -> anyhow::Result<()> {
    let (method, jti, server) = match cmd {
        JtiCommand::Show { jti, server } => (reqwest::Method::GET, jti, server),
        JtiCommand::Clear { jti, server } => (reqwest::Method::DELETE, jti, server),
    };
    let client = server.client()?;
    let status: JtiStatus = client
        .call(method, &format!("/admin/dpop/jti/{}", percent_encode(&jti)))
        .await?;
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
    } else if let Some(cleared) = status.cleared {
        outln!(
            "{}: {}",
            status.key,
            if cleared {
                "cleared"
            } else {
                "was not in the cache"
            }
        );
    } else if status.seen {
        outln!(
            "{}: seen, remembered until {} (a proof with this jti is refused as a replay)",
            status.key,
            status.expires_at.unwrap_or_default()
        );
    } else {
        outln!("{}: not in the cache", status.key);
    }
    Ok(())
}

/// Path-segment encoding for a jti (any printable text is allowed in one).
pub(crate) fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
