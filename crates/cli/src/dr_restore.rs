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

/// `atlas dr restore NAME --from LOCATION --identity FILE (--data-dir DIR | --database-url URL) [--yes]`;
/// the database file restored.
pub async fn restore(
    name: &str,
    from: &str,
    identity: &Path,
    key: Option<String>,
    store_args: &StoreArgs,
    yes: bool,
) -> anyhow::Result<PathBuf> {
    let url = store_args.url_or_new()?;
    let db = atlas_store::sqlite_path(&url)
        .context("restoring into PostgreSQL is not built yet: restore into --data-dir (SQLite)")?;
    let location = crate::dr_cmd::backup_at(from, name).await?;
    let identity = std::fs::read_to_string(identity)
        .with_context(|| format!("reading the identity {}", identity.display()))?;
    eprintln!(
        "==========================================\nATLAS DISASTER RECOVERY\nBackup: {name}\nInto: {}\n==========================================",
        db.display()
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
    let dir = db
        .parent()
        .context("the database has no directory")?
        .to_owned();
    std::fs::create_dir_all(&dir)?;
    let incoming = dir.join(format!(
        ".atlas-restoring-{}.db",
        hex::encode(atlas_crypto::random_bytes::<6>())
    ));
    eprintln!(
        "[1/6] Downloading and verifying the backup (signature, checksums, archives, keys, trial restore)..."
    );
    let report = atlas_dr::verify::verify(
        location.as_ref(),
        name,
        atlas_dr::verify::Inputs {
            identity: Some(&identity),
            pinned_signer: key.as_deref(),
        },
        Some(&incoming),
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
    let (Some(backup_kek), true) = (report.kek.clone(), report.passed()) else {
        let _ = std::fs::remove_file(&incoming);
        anyhow::bail!("backup {name} failed verification: nothing was changed");
    };
    let result = install(name, from, &db, &incoming, &backup_kek, store_args).await;
    for file in with_sidecars(&incoming) {
        let _ = std::fs::remove_file(file);
    }
    result.map(|()| db)
}

async fn install(
    name: &str,
    from: &str,
    db: &Path,
    incoming: &Path,
    backup_kek: &[u8],
    store_args: &StoreArgs,
) -> anyhow::Result<()> {
    eprintln!("[2/6] Putting the server's secrets under this host's KEK...");
    let kek_path = store_args
        .kek_path()
        .context("--kek-file is needed for a PostgreSQL target")?;
    let scratch = atlas_dr::scratch::Scratch::new()?;
    let backup_kek_file = scratch.path("backup.kek");
    std::fs::write(&backup_kek_file, backup_kek)?;
    let backup_kek = Kek::load(&backup_kek_file).context("the backup's KEK")?;
    let target_kek = match kek_path.exists() {
        true => Some(Kek::load(&kek_path).context("this host's KEK")?),
        false => None,
    };
    {
        let store = atlas_store::open(&format!("sqlite://{}", incoming.display())).await?;
        if let Some(target) = &target_kek {
            let keys = atlas_server::server_keys::ServerKeys::new(store.clone(), backup_kek);
            let n = keys.reseal_all(target).await?;
            eprintln!("      {n} secrets re-sealed under {}", target.fingerprint());
        } else {
            eprintln!(
                "      no KEK at {}: the backup's is installed there",
                kek_path.display()
            );
        }
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
    if target_kek.is_none() {
        let mut file = atlas_dr::archive::private_file(&kek_path)?;
        std::io::Write::write_all(&mut file, &std::fs::read(&backup_kek_file)?)?;
        file.sync_all()?;
    }
    eprintln!("[4/6] Recording the restore in the audit log...");
    let store = atlas_store::open(&format!("sqlite://{}", db.display())).await?;
    let detail = serde_json::json!({ "location": from, "kept": kept.display().to_string() });
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
        "[5/6] Start the server: atlas serve --data-dir {}",
        db.parent()
            .map_or(String::new(), |d| d.display().to_string())
    );
    eprintln!("[6/6] Then check it: atlas verify-recovery (or atlas audit verify --data-dir DIR)");
    Ok(())
}
