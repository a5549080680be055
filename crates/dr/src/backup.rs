//! `atlas dr backup`: an online snapshot, packed, its keys sealed to the
//! backup recipient, a signed manifest, all stored under a new name.
use crate::archive::{self, ArchiveError};
use crate::location::{Location, LocationError};
use crate::manifest::{self, AuditPoint, FileEntry, Manifest, ManifestError};
use crate::scratch::Scratch;
use crate::seal::{self, SealError};
use atlas_crypto::note::NoteSigner;
use atlas_store::{SnapshotFacts, Store, StoreError};
use time::OffsetDateTime;

/// The data file inside the data archive.
pub const DATABASE_FILE: &str = "atlas.db";
/// The KEK inside the keys archive.
pub const KEK_FILE: &str = "server.kek";
/// Message ids recorded in the manifest, to look for after a restore.
const SAMPLE: u32 = 100;

/// Why a backup was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Packing the snapshot.
    #[error("archive: {0}")]
    Archive(#[from] ArchiveError),
    /// Sealing the keys.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Storing the files.
    #[error("backup location: {0}")]
    Location(#[from] LocationError),
    /// Signing the manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A local file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What is backed up, from the server host.
pub struct Source<'a> {
    /// The server's database.
    pub store: &'a dyn Store,
    /// The KEK file's content.
    pub kek: &'a [u8],
    /// The audit key, which signs the manifest.
    pub signer: &'a NoteSigner,
    /// The audit log's checkpoint now.
    pub audit: Option<AuditPoint>,
}

/// A step done, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The snapshot is taken (bytes).
    Snapshot(u64),
    /// The data archive is packed (bytes).
    Packed(u64),
    /// The keys archive is sealed.
    Sealed,
    /// A file is stored at the location.
    Stored(String),
}

/// The name of a backup taken at `at`: `atlas_YYYYmmdd_HHMMSS`.
pub fn default_name(at: OffsetDateTime) -> String {
    format!("atlas_{}", stamp(at))
}

fn stamp(at: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The files of a snapshot to pack: name in the archive, path.
type Files = Vec<(String, std::path::PathBuf)>;

/// SQLite: one file by `VACUUM INTO`, checked before it is packed.
async fn snapshot(
    store: &dyn Store,
    scratch: &Scratch,
    sample: &[String],
) -> Result<(SnapshotFacts, Files), BackupError> {
    let db = scratch.path(DATABASE_FILE);
    store.snapshot_to(&db).await?;
    let facts = atlas_store::inspect_sqlite_file(&db, sample).await?;
    if !facts.integrity_problems.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "the snapshot fails its integrity check: {}",
            facts.integrity_problems.join("; ")
        ))
        .into());
    }
    Ok((facts, vec![(DATABASE_FILE.to_owned(), db)]))
}

/// PostgreSQL: every table by COPY in one repeatable-read transaction.
async fn dump(
    store: &dyn Store,
    scratch: &Scratch,
    sample: &[String],
) -> Result<(SnapshotFacts, Files), BackupError> {
    let dir = scratch.path("postgres");
    std::fs::create_dir(&dir)?;
    let facts = store.dump_to(&dir, sample).await?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        files.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    files.sort();
    Ok((facts, files))
}

/// Takes a backup named `name` of `source` into `location`, sealing the keys to `recipient`.
pub async fn backup(
    source: Source<'_>,
    name: &str,
    recipient: &str,
    location: &dyn Location,
    now: OffsetDateTime,
    progress: &mut (dyn FnMut(Step) + Send),
) -> Result<Manifest, BackupError> {
    seal::check_recipient(recipient)?;
    location.create(name).await?;
    let scratch = Scratch::new()?;
    let sample = source.store.message_sample(SAMPLE).await?;
    let (facts, files) = match source.store.backend() {
        "postgres" => dump(source.store, &scratch, &sample).await?,
        _ => snapshot(source.store, &scratch, &sample).await?,
    };
    progress(Step::Snapshot(
        files
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum(),
    ));
    // Ids picked in the live database but written after the snapshot are left out.
    let sample: Vec<String> = sample
        .into_iter()
        .filter(|id| !facts.missing_messages.contains(id))
        .collect();

    let ts = stamp(now);
    let data_name = format!("atlas_{ts}_data.tar.gz");
    let data = scratch.path(&data_name);
    let data_out = data.clone();
    tokio::task::spawn_blocking(move || {
        let named: Vec<(&str, &std::path::Path)> = files
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        archive::pack(&data_out, &named)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    progress(Step::Packed(std::fs::metadata(&data)?.len()));

    let keys_name = format!("atlas_{ts}_keys.tar.gz.enc");
    let keys = scratch.path(&keys_name);
    let sealed = seal::seal(recipient, &archive::pack_bytes(&[(KEK_FILE, source.kek)])?)?;
    std::fs::write(&keys, &sealed)?;
    progress(Step::Sealed);

    let mut files = Vec::new();
    for (file, path) in [(&data_name, &data), (&keys_name, &keys)] {
        files.push(FileEntry {
            name: file.clone(),
            sha256: crate::scratch::sha256_file(path)?,
            size: std::fs::metadata(path)?.len(),
        });
    }
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        name: name.to_owned(),
        created_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        backend: source.store.backend().into(),
        schema_version: facts.schema_version,
        binary_version: atlas_store::BINARY_VERSION.into(),
        files,
        row_counts: facts.row_counts,
        audit: source.audit,
        message_sample: sample,
        recipient: recipient.trim().to_owned(),
        signer: source.signer.verifier().to_text(),
    };
    let (bytes, signature) = manifest.sign(source.signer)?;
    let (manifest_path, signature_path) = (
        scratch.path(manifest::MANIFEST),
        scratch.path(manifest::SIGNATURE),
    );
    std::fs::write(&manifest_path, &bytes)?;
    std::fs::write(&signature_path, signature.as_bytes())?;
    // The manifest last: a backup is complete once it is there.
    for (file, path) in [
        (data_name.as_str(), &data),
        (keys_name.as_str(), &keys),
        (manifest::SIGNATURE, &signature_path),
        (manifest::MANIFEST, &manifest_path),
    ] {
        location.put(name, file, path).await?;
        progress(Step::Stored(file.to_owned()));
    }
    Ok(manifest)
}
