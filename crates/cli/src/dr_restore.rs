//! `atlas dr restore` (seed 004 §4.1): verify first and refuse a backup that
//! fails any check before touching anything; then put the server's secrets
//! under this host's KEK and swap the database file in atomically, keeping
//! the one it replaces. The server must be stopped.
use crate::admin::StoreArgs;
use anyhow::Context;
use atlas_server::kek::Kek;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The SQLite files of a database: the file, its write-ahead log and shared memory.
fn with_sidecars(db: &Path) -> [PathBuf; 3] {
    let name = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [db.to_owned(), name("-wal"), name("-shm")]
}

/// Renames `from` (and its sidecars, where there are any) to `to`.
fn move_database(from: &Path, to: &Path) -> std::io::Result<()> {
    for (a, b) in with_sidecars(from).iter().zip(with_sidecars(to).iter()) {
        match std::fs::rename(a, b) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && a != from => {}
            done => done?,
        }
    }
    Ok(())
}

/// Where a restore goes.
enum Target {
    /// The SQLite file, replaced atomically.
    Sqlite(PathBuf),
    /// The PostgreSQL database the URL names, replaced by a new one.
    Postgres(String),
}

/// `atlas dr restore NAME --from LOCATION --identity FILE (--data-dir DIR | --database-url URL) [--yes]`;
/// what was restored into.
pub async fn restore(
    name: &str,
    from: &str,
    identity: &Path,
    key: Option<String>,
    store_args: &StoreArgs,
    yes: bool,
) -> anyhow::Result<String> {
    let target = match store_args.postgres_url() {
        Some(url) => Target::Postgres(url.to_owned()),
        None => Target::Sqlite(
            atlas_store::sqlite_path(&store_args.url_or_new()?)
                .context("not a SQLite or PostgreSQL database URL")?,
        ),
    };
    let into = match &target {
        Target::Sqlite(db) => db.display().to_string(),
        Target::Postgres(url) => format!(
            "PostgreSQL database {}",
            atlas_store::pg_snapshot::database_name(url).unwrap_or_default()
        ),
    };
    let location = crate::dr_cmd::backup_at(from, name).await?;
    let identity = std::fs::read_to_string(identity)
        .with_context(|| format!("reading the identity {}", identity.display()))?;
    eprintln!(
        "==========================================\nATLAS DISASTER RECOVERY\nBackup: {name}\nInto: {into}\n=========================================="
    );
    if !yes {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "no terminal to confirm on: pass --yes"
        );
        eprint!("This will REPLACE all current data. Continue? (yes/no): ");
        let mut typed = String::new();
        std::io::stdin().read_line(&mut typed)?;
        anyhow::ensure!(typed.trim() == "yes", "not confirmed; nothing changed");
    }
    // A SQLite file arrives beside the database, so the swap is one rename; a
    // PostgreSQL backup's trial restore is kept as a new database beside the
    // target, to be renamed in (it is loaded once).
    let incoming = match &target {
        Target::Sqlite(db) => {
            let dir = db.parent().context("the database has no directory")?;
            std::fs::create_dir_all(dir)?;
            Incoming::File(dir.join(format!(
                ".atlas-restoring-{}.db",
                hex::encode(atlas_crypto::random_bytes::<6>())
            )))
        }
        Target::Postgres(url) => Incoming::Database(format!(
            "{}_restoring_{}",
            atlas_store::pg_snapshot::database_name(url)
                .context("the database URL names no database")?,
            time::OffsetDateTime::now_utc().unix_timestamp()
        )),
    };
    eprintln!(
        "[1/6] Downloading and verifying the backup (signature, checksums, archives, keys, trial restore)..."
    );
    let report = atlas_dr::verify::verify(
        location.as_ref(),
        name,
        atlas_dr::verify::Inputs {
            identity: Some(&identity),
            pinned_signer: key.as_deref(),
            postgres_url: store_args.postgres_url(),
        },
        Some(incoming.hand_over()),
    )
    .await?;
    for check in &report.checks {
        eprintln!(
            "      {} {}: {}",
            check.outcome.as_str(),
            check.name,
            check.detail
        );
    }
    let installed = async {
        let (Some(backup_kek), Some(manifest), true) =
            (report.kek.clone(), report.manifest.clone(), report.passed())
        else {
            anyhow::bail!("backup {name} failed verification: nothing was changed");
        };
        anyhow::ensure!(
            (manifest.backend == "postgres") == matches!(target, Target::Postgres(_)),
            "backup {name} is of {}; restore it into that kind of database",
            manifest.backend
        );
        let kek_path = store_args
            .kek_path()
            .context("--kek-file is needed for a PostgreSQL target")?;
        match (&target, &incoming) {
            (Target::Sqlite(db), Incoming::File(file)) => {
                install(db, file, &backup_kek, &kek_path).await
            }
            (Target::Postgres(url), Incoming::Database(new)) => {
                install_postgres(url, new, &backup_kek, &kek_path).await
            }
            // The incoming copy is made for the target.
            _ => anyhow::bail!("internal error: the incoming copy does not match the target"),
        }
    }
    .await;
    // Whatever is left of the incoming copy goes (after a swap, nothing is).
    match &incoming {
        Incoming::File(file) => {
            for file in with_sidecars(file) {
                let _ = std::fs::remove_file(file);
            }
        }
        // Only a database the verification made and handed over is dropped.
        Incoming::Database(new) => {
            if installed.is_err()
                && report.handed_over
                && let Target::Postgres(url) = &target
            {
                let _ = atlas_store::pg_snapshot::drop_database(url, new).await;
            }
        }
    }
    let (store, kept) = installed?;
    eprintln!("[4/6] Recording the restore in the audit log...");
    let detail = serde_json::json!({ "location": from, "kept": kept });
    store_args
        .audit(
            store.clone(),
            atlas_server::audit::host_entry(
                time::OffsetDateTime::now_utc(),
                "dr.restore",
                name,
                detail.to_string(),
            ),
        )
        .await;
    store.flush_to_file().await?;
    eprintln!(
        "[5/6] Start the server: atlas serve {}",
        match &target {
            Target::Sqlite(db) => format!(
                "--data-dir {}",
                db.parent()
                    .map_or(String::new(), |d| d.display().to_string())
            ),
            Target::Postgres(_) => "--database-url URL --kek-file FILE".into(),
        }
    );
    eprintln!(
        "[6/6] Then check it: atlas verify-recovery --server URL --backup {name} --from {from}"
    );
    Ok(into)
}

/// Puts the secrets of the restored database `store` under the KEK at
/// `kek_path`, or, if there is none, installs the backup's KEK there.
async fn reseal(
    store: std::sync::Arc<dyn atlas_store::Store>,
    backup_kek: &[u8],
    kek_path: &Path,
) -> anyhow::Result<()> {
    eprintln!("[2/6] Putting the server's secrets under this host's KEK...");
    let scratch = atlas_dr::scratch::Scratch::new()?;
    let backup_kek_file = scratch.path("backup.kek");
    std::fs::write(&backup_kek_file, backup_kek)?;
    let backup = Kek::load(&backup_kek_file).context("the backup's KEK")?;
    if kek_path.exists() {
        let target = Kek::load(kek_path).context("this host's KEK")?;
        let keys = atlas_server::server_keys::ServerKeys::new(store, backup);
        let n = keys.reseal_all(&target).await?;
        eprintln!("      {n} secrets re-sealed under {}", target.fingerprint());
    } else {
        let mut file = atlas_dr::archive::private_file(kek_path)?;
        std::io::Write::write_all(&mut file, backup_kek)?;
        file.sync_all()?;
        eprintln!(
            "      no KEK at {}: the backup's is installed there",
            kek_path.display()
        );
    }
    Ok(())
}

/// Where the checked copy waits until it is swapped in.
enum Incoming {
    /// A SQLite file beside the target.
    File(PathBuf),
    /// A new PostgreSQL database beside the target.
    Database(String),
}

impl Incoming {
    fn hand_over(&self) -> atlas_dr::verify::HandOver<'_> {
        match self {
            Self::File(file) => atlas_dr::verify::HandOver::SqliteFile(file),
            Self::Database(db) => atlas_dr::verify::HandOver::PostgresDatabase(db),
        }
    }
}

/// SQLite: the checked file re-sealed, then swapped in; the store, and where the old one is kept.
async fn install(
    db: &Path,
    incoming: &Path,
    backup_kek: &[u8],
    kek_path: &Path,
) -> anyhow::Result<(std::sync::Arc<dyn atlas_store::Store>, String)> {
    {
        let store = atlas_store::open(&format!("sqlite://{}", incoming.display())).await?;
        reseal(store.clone(), backup_kek, kek_path).await?;
        store.flush_to_file().await?;
    }
    eprintln!("[3/6] Replacing the database atomically...");
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let kept = db.with_file_name(format!("atlas.db.before-restore-{stamp}"));
    if db.exists() {
        move_database(db, &kept)?;
        eprintln!("      the previous database is kept as {}", kept.display());
    }
    std::fs::rename(incoming, db)?;
    let store = atlas_store::open(&format!("sqlite://{}", db.display())).await?;
    Ok((store, kept.display().to_string()))
}

/// PostgreSQL: the checked trial restore `incoming` (a database beside the
/// target) re-sealed, then renamed into the target's place (the old one kept
/// under another name); the store, and the old database's new name. On an
/// error the caller drops `incoming`.
async fn install_postgres(
    url: &str,
    incoming: &str,
    backup_kek: &[u8],
    kek_path: &Path,
) -> anyhow::Result<(std::sync::Arc<dyn atlas_store::Store>, String)> {
    use atlas_store::pg_snapshot as pg;
    let target = pg::database_name(url).context("the database URL names no database")?;
    let kept = format!(
        "{target}_before_restore_{}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    {
        let store = atlas_store::open(&pg::with_database(url, incoming)?).await?;
        reseal(store, backup_kek, kek_path)
            .await
            .context("re-sealing the restored secrets: nothing was changed")?;
    }
    eprintln!("[3/6] Replacing the database (renames, the old one kept)...");
    if pg::database_exists(url, &target).await? {
        pg::rename_database(url, &target, &kept).await.map_err(|e| {
            anyhow::anyhow!(
                "{target} could not be set aside ({e}): stop every server using it; nothing was changed"
            )
        })?;
        eprintln!("      the previous database is kept as {kept}");
    }
    pg::rename_database(url, incoming, &target).await?;
    Ok((atlas_store::open(url).await?, kept))
}
