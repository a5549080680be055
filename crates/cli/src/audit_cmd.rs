//! `atlas audit …`: the audit log (seed 004 §4.2 "audit logs intact", §5.2
//! "log gaps or tampering"), listed and verified over the admin API, or
//! verified straight from the store on the server host when the server is down.
use crate::admin::ServerArgs;
use crate::output::outln;
use anyhow::Context;
use atlas_crypto::note::NoteVerifier;
use atlas_proto::audit::{AuditEntry, VerifyView};
use atlas_proto::timestamp::Timestamp;
use reqwest::Method;
use std::path::PathBuf;

/// `atlas audit …`.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Entries, newest first (admin API, scope audit).
    List {
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<Timestamp>,
        /// Only actions starting with this, e.g. "POST /admin/emergency" or "operator_token.".
        #[arg(long)]
        action: Option<String>,
        /// At most this many (1–1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Recompute the Merkle tree, check every entry's seal and every signed
    /// checkpoint; name the first entry edited, deleted, inserted or reordered.
    /// Exits 1 when the log is not intact.
    Verify(VerifyArgs),
}

/// `atlas audit verify`: over the admin API, or with --data-dir/--database-url on the host.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Server URL (admin API, scope audit).
    #[arg(long, env = "ATLAS_SERVER")]
    server: Option<String>,
    /// Operator token (default: $ATLAS_ADMIN_TOKEN).
    #[arg(long, env = "ATLAS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the server's data directory directly (the server may be down).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read this database directly (the server may be down); needs --kek-file.
    #[arg(long)]
    database_url: Option<String>,
    /// The key-encryption key that opens the audit key (default: server.kek in --data-dir).
    #[arg(long, env = "ATLAS_KEK_FILE")]
    kek_file: Option<PathBuf>,
    /// The audit key you pinned earlier (from /.well-known/atlas/audit-checkpoint):
    /// verify against it rather than the key the server or store holds.
    #[arg(long)]
    key: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `atlas audit …`.
pub async fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List {
            since,
            action,
            limit,
            server,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(since) = since {
                query.push(format!(
                    "since={}",
                    crate::admin::percent_encode(&since.to_string())
                ));
            }
            if let Some(action) = action {
                query.push(format!("action={}", crate::admin::percent_encode(&action)));
            }
            let entries: Vec<AuditEntry> = server
                .client()?
                .call(Method::GET, &format!("/admin/audit?{}", query.join("&")))
                .await?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            for e in &entries {
                let who = match e.entry.actor_label.as_str() {
                    "" => e.entry.actor.clone(),
                    label => format!("{} ({label})", e.entry.actor),
                };
                outln!(
                    "#{:<5} {}  {:<8} {:<24} {}  {} {}",
                    e.seq,
                    e.entry.at,
                    e.entry.outcome.as_str(),
                    who,
                    e.entry.action,
                    e.entry.target,
                    e.entry.detail
                );
            }
            if entries.is_empty() {
                outln!("no entries");
            }
            Ok(())
        }
        AuditCommand::Verify(args) => verify(args).await,
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let pinned = args
        .key
        .as_deref()
        .map(NoteVerifier::from_text)
        .transpose()
        .context("--key is not a signed-note verifier key (name+id+base64)")?;
    let view = if args.data_dir.is_some() || args.database_url.is_some() {
        verify_on_host(&args, pinned.as_ref()).await?
    } else {
        let server = args.server.as_deref().ok_or_else(|| {
            anyhow::anyhow!("give --server (admin API) or --data-dir/--database-url (on the host)")
        })?;
        let token = args.token.as_deref().ok_or_else(|| {
            anyhow::anyhow!("no operator token: set ATLAS_ADMIN_TOKEN or pass --token")
        })?;
        let client = atlas_client::operator::OperatorClient::new(server, token)?;
        let view: VerifyView = client.call(Method::GET, "/admin/audit/verify").await?;
        if let Some(pinned) = &pinned {
            anyhow::ensure!(
                view.key == pinned.to_text(),
                "the server verifies with {}, not the pinned key: its audit key changed",
                view.key
            );
        }
        view
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print_view(&view);
    }
    anyhow::ensure!(view.ok, "the audit log is not intact");
    Ok(())
}

async fn verify_on_host(
    args: &VerifyArgs,
    pinned: Option<&NoteVerifier>,
) -> anyhow::Result<VerifyView> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./atlas-data"));
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            let file = data_dir.join("atlas.db");
            anyhow::ensure!(file.exists(), "no database at {}", file.display());
            format!("sqlite://{}", file.display())
        }
    };
    let kek_file = match (&args.kek_file, &args.database_url) {
        (Some(file), _) => file.clone(),
        (None, None) => data_dir.join("server.kek"),
        (None, Some(_)) => {
            anyhow::bail!("--database-url needs --kek-file (the server's key-encryption key)")
        }
    };
    let store = atlas_store::open(&url).await.context("opening the store")?;
    let log = atlas_server::audit::open_on_host(
        store.clone(),
        &kek_file,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .context("opening the audit key")?;
    let stored = log.verifier();
    if let Some(pinned) = pinned
        && *pinned != stored
    {
        eprintln!(
            "warning: the store's audit key differs from the pinned key; verifying with the pinned key"
        );
    }
    let verifier = pinned.cloned().unwrap_or(stored);
    Ok(atlas_server::audit::verify_stored(store.as_ref(), &verifier).await?)
}

fn print_view(view: &VerifyView) {
    outln!(
        "audit log: {} entries, {} signed checkpoints; verified up to entry {}{}",
        view.entries,
        view.checkpoints,
        view.verified_size,
        view.verified_root
            .as_deref()
            .map(|r| format!(" (root {r})"))
            .unwrap_or_default()
    );
    outln!("key: {}", view.key);
    if let Some(tamper) = &view.tamper {
        outln!("TAMPERED: {tamper}");
    }
    for problem in &view.checkpoint_problems {
        outln!("checkpoint: {problem}");
    }
    if view.ok {
        outln!("OK: every entry carries its seal and every checkpoint verifies");
    }
}
