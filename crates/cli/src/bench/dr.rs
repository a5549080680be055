//! `atlas bench dr`: the recovery objectives of the embedded profile. A
//! scratch SQLite database is filled with N messages (each with its receipt),
//! then backed up to a directory, verified (with the trial restore) and
//! restored into a fresh data directory, as `atlas dr` does it; the times and
//! the backup's size are what an operator plans around (issue 16: backup +
//! verify + restore of 1 M messages under 60 s).
use crate::output::outln;
use anyhow::Context;
use std::time::Instant;

/// `atlas bench dr` flags.
#[derive(clap::Args)]
pub struct DrArgs {
    /// Messages in the scratch database (each with its receipt).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs it.
pub async fn run(args: DrArgs) -> anyhow::Result<()> {
    let scratch = atlas_dr::scratch::Scratch::new()?;
    let source_dir = scratch.path("source");
    std::fs::create_dir_all(&source_dir)?;
    let db = source_dir.join("atlas.db");
    let kek_path = source_dir.join("server.kek");
    atlas_server::kek::Kek::create_new(&kek_path).context("creating a KEK")?;
    let store = atlas_store::open(&format!("sqlite://{}", db.display())).await?;
    let now = time::OffsetDateTime::now_utc();
    for user in ["alice", "bob"] {
        let keys = atlas_crypto::olm::OlmAccount::new().device_keys(
            &atlas_proto::UserId::new(user)?,
            &atlas_proto::DeviceId::new("D1")?,
        );
        let identity = atlas_crypto::identity::UserIdentity::generate();
        let certificate = identity.certify(&atlas_proto::UserId::new(user)?, &keys);
        let new = atlas_store::NewIdentity {
            identity_key: &identity.public_key(),
            certificate: &certificate,
        };
        store
            .create_user(&atlas_proto::UserId::new(user)?, &keys, &new, now)
            .await?;
    }
    store.flush_to_file().await?;
    let started = Instant::now();
    atlas_store::fill_synthetic_messages(&db, ("alice", "bob", "D1"), args.messages).await?;
    let filled = started.elapsed();
    if !args.json {
        eprintln!(
            "filled {} messages and receipts in {:.1} s ({:.0} MiB)",
            args.messages,
            filled.as_secs_f64(),
            std::fs::metadata(&db)?.len() as f64 / f64::from(1u32 << 20)
        );
    }

    let backups = scratch.path("backups");
    let location = atlas_dr::location::Directory(backups.clone());
    let log = atlas_server::audit::open_on_host(store.clone(), &kek_path, now).await?;
    let (identity, recipient) = atlas_dr::seal::generate();
    let kek = std::fs::read(&kek_path)?;
    let started = Instant::now();
    let manifest = atlas_dr::backup::backup(
        atlas_dr::backup::Source {
            store: store.as_ref(),
            kek: &kek,
            signer: log.signer(),
            audit: None,
        },
        "bench",
        &recipient,
        &location,
        now,
        &mut |_| {},
    )
    .await?;
    let backup = started.elapsed();
    let size: u64 = manifest.files.iter().map(|f| f.size).sum();

    let started = Instant::now();
    let report = atlas_dr::verify::verify(
        &location,
        "bench",
        atlas_dr::verify::Inputs {
            identity: Some(&identity),
            pinned_signer: None,
            postgres_url: None,
        },
        None,
    )
    .await?;
    let verify = started.elapsed();
    anyhow::ensure!(
        report.passed(),
        "the backup did not verify: {:?}",
        report.checks
    );

    let identity_file = scratch.path("identity");
    std::fs::write(&identity_file, &identity)?;
    let target = crate::admin::StoreArgs::for_data_dir(scratch.path("restored"));
    let started = Instant::now();
    crate::dr_restore::restore(
        "bench",
        &backups.display().to_string(),
        &identity_file,
        None,
        &target,
        true,
    )
    .await?;
    let restore = started.elapsed();
    let total = backup + verify + restore;
    let figures = serde_json::json!({
        "messages": args.messages,
        "backup_seconds": backup.as_secs_f64(),
        "verify_seconds": verify.as_secs_f64(),
        "restore_seconds": restore.as_secs_f64(),
        "total_seconds": total.as_secs_f64(),
        "backup_bytes": size,
        "database_bytes": std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0),
    });
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        outln!(
            "{} messages: backup {:.1} s, verify {:.1} s, restore {:.1} s (it verifies again): {:.1} s in all; backup {:.0} MiB",
            args.messages,
            backup.as_secs_f64(),
            verify.as_secs_f64(),
            restore.as_secs_f64(),
            total.as_secs_f64(),
            size as f64 / f64::from(1u32 << 20)
        );
    }
    Ok(())
}
