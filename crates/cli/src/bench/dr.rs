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
    /// Measure PostgreSQL instead: any database URL on the server to use;
    /// scratch databases are created there and dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// The scratch databases of a PostgreSQL run: the source and the restored one.
fn postgres_names(tag: &str) -> [String; 2] {
    [
        format!("atlas_bench_dr_{tag}"),
        format!("atlas_bench_dr_{tag}_restored"),
    ]
}

/// Runs it; a PostgreSQL run drops its scratch databases whatever happens.
pub async fn run(args: DrArgs) -> anyhow::Result<()> {
    let scratch = atlas_dr::scratch::Scratch::new()?;
    let tag = hex::encode(atlas_crypto::random_bytes::<4>());
    let result = measure(&args, &scratch, &tag).await;
    if let Some(url) = &args.database_url {
        for name in postgres_names(&tag) {
            let _ = atlas_store::pg_snapshot::drop_database(url, &name).await;
        }
    }
    result
}

async fn measure(
    args: &DrArgs,
    scratch: &atlas_dr::scratch::Scratch,
    tag: &str,
) -> anyhow::Result<()> {
    let source_dir = scratch.path("source");
    std::fs::create_dir_all(&source_dir)?;
    let kek_path = source_dir.join("server.kek");
    atlas_server::kek::Kek::create_new(&kek_path).context("creating a KEK")?;
    let [source_db, restored_db] = postgres_names(tag);
    let (source_url, target) = match &args.database_url {
        Some(url) => {
            atlas_store::pg_snapshot::create_database(url, &source_db).await?;
            (
                atlas_store::pg_snapshot::with_database(url, &source_db)?,
                crate::admin::StoreArgs::for_database(
                    atlas_store::pg_snapshot::with_database(url, &restored_db)?,
                    scratch.path("restored.kek"),
                ),
            )
        }
        None => (
            format!("sqlite://{}", source_dir.join("atlas.db").display()),
            crate::admin::StoreArgs::for_data_dir(scratch.path("restored")),
        ),
    };
    let store = atlas_store::open(&source_url).await?;
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
    let people = ("alice", "bob", "D1");
    match atlas_store::sqlite_path(&source_url) {
        Some(db) => atlas_store::fill_synthetic_messages(&db, people, args.messages).await?,
        None => {
            atlas_store::fill_synthetic_messages_postgres(&source_url, people, args.messages)
                .await?
        }
    }
    let filled = started.elapsed();
    let database_bytes = database_bytes(&source_url).await?;
    if !args.json {
        eprintln!(
            "filled {} messages and receipts in {:.1} s ({:.0} MiB)",
            args.messages,
            filled.as_secs_f64(),
            database_bytes as f64 / f64::from(1u32 << 20)
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
            postgres_url: args.database_url.as_deref(),
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
        "backend": store.backend(),
        "messages": args.messages,
        "backup_seconds": backup.as_secs_f64(),
        "verify_seconds": verify.as_secs_f64(),
        "restore_seconds": restore.as_secs_f64(),
        "total_seconds": total.as_secs_f64(),
        "backup_bytes": size,
        "database_bytes": database_bytes,
    });
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        outln!(
            "{} messages on {}: backup {:.1} s, verify {:.1} s, restore {:.1} s (verifying again; PostgreSQL loads once): {:.1} s in all; backup {:.0} MiB",
            args.messages,
            store.backend(),
            backup.as_secs_f64(),
            verify.as_secs_f64(),
            restore.as_secs_f64(),
            total.as_secs_f64(),
            size as f64 / f64::from(1u32 << 20)
        );
    }
    Ok(())
}

/// The size of the source database: the SQLite file, or PostgreSQL's own count.
async fn database_bytes(url: &str) -> anyhow::Result<u64> {
    if let Some(db) = atlas_store::sqlite_path(url) {
        return Ok(std::fs::metadata(db)?.len());
    }
    Ok(atlas_store::pg_snapshot::database_size(url).await?)
}
