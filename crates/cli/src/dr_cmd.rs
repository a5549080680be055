//! `atlas dr …` (seed 004 §4): backups that are encrypted, signed and proven
//! restorable. Host-side commands: they work with the server down, given its
//! `--data-dir` or `--database-url` and KEK, like `atlas admin token create`.
//! Unlike the seed's `gzip -t`, `verify` restores the backup into a scratch
//! database and compares it with the signed manifest.
use crate::admin::StoreArgs;
use crate::output::outln;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

/// `atlas dr …`.
#[derive(clap::Subcommand)]
pub enum DrCommand {
    /// Create the backup identity (an age X25519 key pair): the secret goes to
    /// FILE (`0600`; keep it offline), the public recipient is printed for
    /// `atlas dr backup --recipient`.
    Keygen {
        /// Where to write the identity (must not exist).
        #[arg(long)]
        output: PathBuf,
    },
    /// Take a backup while the server keeps serving: an online snapshot, its
    /// keys archive sealed to RECIPIENT, a manifest signed by the server's audit key.
    Backup {
        /// The backup recipient (`age1…`, from `atlas dr keygen`).
        #[arg(long, env = "ATLAS_DR_RECIPIENT")]
        recipient: String,
        /// Where backups are kept: a directory.
        #[arg(long, env = "ATLAS_DR_LOCATION")]
        to: String,
        /// The backup's name (default `atlas_YYYYmmdd_HHMMSS`).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The backups at a location, newest first, with size, age and last verification.
    List {
        /// Where backups are kept.
        #[arg(long, env = "ATLAS_DR_LOCATION")]
        from: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a backup end to end: manifest signature, every file's size and
    /// SHA-256, archive integrity, the keys archive (with --identity), the
    /// schema, and a trial restore into a scratch database. Exits 1 on any FAIL.
    Verify {
        /// The backup's name.
        name: String,
        /// Where backups are kept.
        #[arg(long, env = "ATLAS_DR_LOCATION")]
        from: String,
        /// The backup identity file, to open the keys archive.
        #[arg(long, env = "ATLAS_DR_IDENTITY")]
        identity: Option<PathBuf>,
        /// The audit key the manifest must be signed by (from
        /// /.well-known/atlas/audit-checkpoint); without it, the key the manifest names.
        #[arg(long)]
        key: Option<String>,
        /// Record the result in the server's database (--data-dir or
        /// --database-url), for the metric of the last verified backup. A
        /// PostgreSQL backup is trial-restored on the server --database-url
        /// names, into a scratch database created and dropped there.
        #[arg(long)]
        record: bool,
        #[command(flatten)]
        store: StoreArgs,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup, replacing the current data (the server must be
    /// stopped): verified first, refused before anything changes if any check
    /// fails; the secrets are put under this host's KEK, the database swapped
    /// in atomically (the old one kept beside it), the restore audited.
    Restore {
        /// The backup's name.
        name: String,
        /// Where backups are kept.
        #[arg(long, env = "ATLAS_DR_LOCATION")]
        from: String,
        /// The backup identity file (it opens the keys archive).
        #[arg(long, env = "ATLAS_DR_IDENTITY")]
        identity: PathBuf,
        /// The audit key the manifest must be signed by.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Do not ask "This will REPLACE all current data. Continue? (yes/no)".
        #[arg(long)]
        yes: bool,
    },
}

/// The location `from`, once it is known to hold backup `name`; otherwise an
/// error listing what it holds (as the seed's script does).
pub(crate) async fn backup_at(
    from: &str,
    name: &str,
) -> anyhow::Result<Box<dyn atlas_dr::location::Location>> {
    let location = atlas_dr::location::parse(from)?;
    let names = location.names().await?;
    if !names.iter().any(|n| n == name) {
        let listed = match names.is_empty() {
            true => "none".to_owned(),
            false => names.join(", "),
        };
        anyhow::bail!("no backup {name} in {from}; available: {listed}");
    }
    Ok(location)
}

/// The record of a backup's last verification, kept beside it.
const VERIFIED: &str = "verified.json";

/// `atlas dr …`.
pub async fn dr(cmd: DrCommand) -> anyhow::Result<()> {
    match cmd {
        DrCommand::Keygen { output } => keygen(&output),
        DrCommand::Backup {
            recipient,
            to,
            name,
            store,
            json,
        } => backup(&recipient, &to, name, &store, json).await,
        DrCommand::List { from, json } => list(&from, json).await,
        DrCommand::Verify {
            name,
            from,
            identity,
            key,
            record,
            store,
            json,
        } => verify(&name, &from, identity, key, &store, record, json).await,
        DrCommand::Restore {
            name,
            from,
            identity,
            key,
            store,
            yes,
        } => {
            let into =
                crate::dr_restore::restore(&name, &from, &identity, key, &store, yes).await?;
            outln!("restored {name} into {into}");
            Ok(())
        }
    }
}

fn keygen(output: &std::path::Path) -> anyhow::Result<()> {
    let (identity, recipient) = atlas_dr::seal::generate();
    let mut file = atlas_dr::archive::private_file(output)
        .with_context(|| format!("writing {} (it must not exist)", output.display()))?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    write!(
        file,
        "# atlas backup identity, created {created}\n# public key: {recipient}\n{identity}\n"
    )?;
    file.sync_all()?;
    eprintln!(
        "wrote the backup identity to {} (0600): keep it offline; verify and restore need it",
        output.display()
    );
    outln!("{recipient}");
    Ok(())
}

async fn backup(
    recipient: &str,
    to: &str,
    name: Option<String>,
    store_args: &StoreArgs,
    json: bool,
) -> anyhow::Result<()> {
    let location = atlas_dr::location::parse(to)?;
    let now = time::OffsetDateTime::now_utc();
    let name = name.unwrap_or_else(|| atlas_dr::backup::default_name(now));
    anyhow::ensure!(
        atlas_dr::location::valid_name(&name),
        "{name:?} is not a valid backup name (letters, digits, '.', '_' and '-')"
    );
    let store = store_args.open().await?;
    let kek_path = store_args
        .kek_path()
        .context("--kek-file is needed: the manifest is signed with the audit key it opens")?;
    let kek = std::fs::read(&kek_path)
        .with_context(|| format!("reading the KEK {}", kek_path.display()))?;
    let log = atlas_server::audit::open_on_host(store.clone(), &kek_path, now)
        .await
        .context("opening the audit key")?;
    let audit = log
        .checkpoint(now)
        .await
        .context("checkpointing the audit log")?
        .map(|c| atlas_dr::manifest::AuditPoint {
            size: c.size,
            checkpoint: c.note,
        });
    let source = atlas_dr::backup::Source {
        store: store.as_ref(),
        kek: &kek,
        signer: log.signer(),
        audit,
    };
    let started = std::time::Instant::now();
    let mut progress = |step: atlas_dr::backup::Step| {
        use atlas_dr::backup::Step;
        let line = match step {
            Step::Snapshot(n) => format!("[1/4] Snapshot taken ({})", bytes(n)),
            Step::Packed(n) => format!("[2/4] Data archive packed ({})", bytes(n)),
            Step::Sealed => "[3/4] Keys archive sealed to the recipient".into(),
            Step::Stored(file) => format!("[4/4] Stored {file}"),
        };
        if !json {
            eprintln!("{line}");
        }
    };
    let manifest = atlas_dr::backup::backup(
        source,
        &name,
        recipient,
        location.as_ref(),
        now,
        &mut progress,
    )
    .await
    .with_context(|| format!("backup {name} to {to}"))?;
    store
        .record_backup(
            &location.describe(),
            &name,
            unix_ms(now),
            manifest.row_counts.get("messages").copied().unwrap_or(0),
            i64::try_from(manifest.files.iter().map(|f| f.size).sum::<u64>()).unwrap_or(i64::MAX),
        )
        .await
        .context("recording the backup in the database")?;
    let detail = serde_json::json!({
        "location": to,
        "files": manifest.files,
        "messages": manifest.row_counts.get("messages"),
        "recipient": manifest.recipient,
    });
    store_args
        .audit(
            store.clone(),
            atlas_server::audit::host_entry(now, "dr.backup", &name, detail.to_string()),
        )
        .await;
    if json {
        outln!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        outln!(
            "backup {name} complete in {:.1} s: {} messages, {} in {}",
            started.elapsed().as_secs_f64(),
            manifest.row_counts.get("messages").copied().unwrap_or(0),
            bytes(manifest.files.iter().map(|f| f.size).sum()),
            location.describe()
        );
        outln!("verify it: atlas dr verify {name} --from {to} --identity FILE");
    }
    Ok(())
}

fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// One backup as `list` shows it.
#[derive(serde::Serialize)]
struct Listed {
    name: String,
    complete: bool,
    created_at: Option<String>,
    age_seconds: Option<u64>,
    size: u64,
    last_verified: Option<serde_json::Value>,
}

async fn listed(location: &dyn atlas_dr::location::Location) -> anyhow::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for name in location.names().await? {
        let manifest = location.stat(&name, atlas_dr::manifest::MANIFEST).await?;
        let scratch = atlas_dr::scratch::Scratch::new()?;
        let read = |file: &'static str| {
            let path = scratch.path(file);
            let name = name.clone();
            async move {
                match location.stat(&name, file).await {
                    Ok(Some((size, _))) if size <= 1 << 20 => {
                        location.get(&name, file, &path).await.ok()?;
                        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).ok()?)
                            .ok()
                    }
                    _ => None,
                }
            }
        };
        let parsed = read(atlas_dr::manifest::MANIFEST).await;
        let size = parsed
            .as_ref()
            .and_then(|m| m["files"].as_array().cloned())
            .map_or(0, |files| {
                files.iter().filter_map(|f| f["size"].as_u64()).sum()
            });
        out.push(Listed {
            complete: manifest.is_some(),
            created_at: parsed
                .as_ref()
                .and_then(|m| m["created_at"].as_str().map(str::to_owned)),
            age_seconds: manifest
                .and_then(|(_, at)| at.elapsed().ok())
                .map(|d| d.as_secs()),
            size,
            last_verified: read(VERIFIED).await,
            name,
        });
    }
    // Newest first: the names carry their time, the creation time breaks ties.
    out.sort_by(|a, b| (&b.created_at, &b.name).cmp(&(&a.created_at, &a.name)));
    Ok(out)
}

async fn list(from: &str, json: bool) -> anyhow::Result<()> {
    let location = atlas_dr::location::parse(from)?;
    let all = listed(location.as_ref()).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        outln!("no backups in {from}");
        return Ok(());
    }
    outln!(
        "{:<32} {:<10} {:>10} {:>9}  LAST VERIFIED",
        "NAME",
        "STATE",
        "SIZE",
        "AGE"
    );
    for b in &all {
        let verified = b.last_verified.as_ref().map_or("never".to_owned(), |v| {
            format!(
                "{} ({})",
                v["at"].as_str().unwrap_or("?"),
                if v["passed"] == true {
                    "passed"
                } else {
                    "FAILED"
                }
            )
        });
        outln!(
            "{:<32} {:<10} {:>10} {:>8}h  {verified}",
            b.name,
            if b.complete { "complete" } else { "INCOMPLETE" },
            bytes(b.size),
            b.age_seconds.map_or("?".into(), |s| (s / 3600).to_string()),
        );
    }
    Ok(())
}

async fn verify(
    name: &str,
    from: &str,
    identity: Option<PathBuf>,
    key: Option<String>,
    store_args: &StoreArgs,
    record_result: bool,
    json: bool,
) -> anyhow::Result<()> {
    let location = crate::dr_cmd::backup_at(from, name).await?;
    let identity = identity
        .map(|path| {
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the identity {}", path.display()))
        })
        .transpose()?;
    let started = std::time::Instant::now();
    let report = atlas_dr::verify::verify(
        location.as_ref(),
        name,
        atlas_dr::verify::Inputs {
            identity: identity.as_deref(),
            pinned_signer: key.as_deref(),
            postgres_url: store_args.postgres_url(),
        },
        None,
    )
    .await?;
    let record = serde_json::json!({
        "at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "passed": report.passed(),
        "keys_opened": report.kek.is_some(),
        "seconds": started.elapsed().as_secs_f64(),
        "checks": report.checks,
    });
    let scratch = atlas_dr::scratch::Scratch::new()?;
    let path = scratch.path(VERIFIED);
    std::fs::write(&path, serde_json::to_vec_pretty(&record)?)?;
    if let Err(e) = location.put(name, VERIFIED, &path).await {
        eprintln!("warning: the verification could not be recorded at {from}: {e}");
    }
    if record_result {
        let created_ms = report
            .manifest
            .as_ref()
            .and_then(|m| {
                time::OffsetDateTime::parse(
                    &m.created_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            })
            .map_or(0, unix_ms);
        let store = store_args.open().await?;
        store
            .record_verification(
                &location.describe(),
                name,
                created_ms,
                unix_ms(time::OffsetDateTime::now_utc()),
                report.passed(),
            )
            .await
            .context("recording the verification in the database")?;
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        for check in &report.checks {
            outln!(
                "{}  {:<20} {}",
                check.outcome.as_str(),
                check.name,
                check.detail
            );
        }
        outln!(
            "{} in {:.1} s",
            if report.passed() {
                "backup verified"
            } else {
                "BACKUP FAILED VERIFICATION"
            },
            started.elapsed().as_secs_f64()
        );
    }
    anyhow::ensure!(report.passed(), "backup {name} failed verification");
    Ok(())
}
