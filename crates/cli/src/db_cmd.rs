//! `atlas db status`: the schema as the database records it, read without
//! changing anything — applied migrations, which this binary knows, and the
//! oldest binary that can serve it (what makes `emergency-rollback.sh` safe).
use crate::admin::StoreArgs;
use crate::output::outln;

/// `atlas db …`.
#[derive(clap::Subcommand)]
pub enum DbCommand {
    /// Applied and pending migrations, and whether this binary (and a rollback
    /// to an older one) can serve the database. Exits 1 if this binary cannot.
    Status {
        #[command(flatten)]
        store: StoreArgs,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply this binary's pending migrations and exit (run it with the owner's
    /// URL when the server runs as a role without DDL rights), then show the status.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `atlas db …`.
pub async fn db(cmd: DbCommand) -> anyhow::Result<()> {
    let (store, json) = match cmd {
        DbCommand::Status { store, json } => (store, json),
        DbCommand::Migrate { store, json } => {
            atlas_store::open(&store.url_or_new()?).await?;
            (store, json)
        }
    };
    let status = atlas_store::schema_status(&store.url()?).await?;
    if json {
        let applied: Vec<serde_json::Value> = status
            .applied
            .iter()
            .map(|(v, d, known)| serde_json::json!({"version": v, "description": d, "known_to_this_binary": known}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "applied": applied,
                "pending": status.pending,
                "min_binary_version": status.min_binary_version,
                "written_by": status.written_by,
                "this_binary": status.this_binary,
                "servable": status.servable,
            }))?
        );
    } else {
        for (version, description, known) in &status.applied {
            let note = if *known {
                ""
            } else {
                "  (from a newer release)"
            };
            outln!("applied  {version:>4}  {description}{note}");
        }
        for version in &status.pending {
            outln!("pending  {version:>4}");
        }
        outln!(
            "oldest binary that can serve it: {} (recorded by atlas {})",
            status
                .min_binary_version
                .as_deref()
                .unwrap_or("not recorded"),
            status.written_by.as_deref().unwrap_or("-")
        );
        outln!(
            "this binary (atlas {}): {}",
            status.this_binary,
            if status.servable {
                "can serve it"
            } else {
                "CANNOT serve it"
            }
        );
    }
    anyhow::ensure!(
        status.servable,
        "atlas {} cannot serve this database",
        status.this_binary
    );
    Ok(())
}
