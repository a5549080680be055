//! `atlas dr verify`: everything a restore will need, proven on a copy — the
//! manifest's signature, every file's size and SHA-256, the archives'
//! integrity, the keys archive opening with the identity, the schema being
//! one this binary serves, and a trial restore into a scratch database whose
//! integrity check, row counts and sampled messages must match the manifest.
use crate::archive;
use crate::backup::{DATABASE_FILE, KEK_FILE};
use crate::location::{Location, LocationError};
use crate::manifest::{self, Manifest};
use crate::scratch::{Scratch, sha256_file};
use crate::trial;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Largest snapshot a verify or restore unpacks (1 TiB): past it, a forged size.
pub const MAX_DATABASE_BYTES: u64 = 1 << 40;
/// Largest keys archive opened.
const MAX_KEYS_BYTES: u64 = 1 << 20;

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    /// It holds.
    Pass,
    /// It does not.
    Fail,
    /// It could not be run (an input is missing).
    Skip,
}

impl Outcome {
    /// `PASS`, `FAIL` or `SKIP`, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Its result.
    pub outcome: Outcome,
    /// The evidence.
    pub detail: String,
}

/// What `atlas dr verify` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The backup.
    pub name: String,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The KEK from the keys archive, when it opened (for a restore; never printed).
    #[serde(skip)]
    pub kek: Option<Vec<u8>>,
    /// The manifest, when it verified.
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    /// Whether what was checked was left as the [`HandOver`] asked (the
    /// taker then owns it: a file to move, a database to rename or drop).
    #[serde(skip)]
    pub handed_over: bool,
}

impl Report {
    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    pub(crate) fn add(&mut self, name: &str, outcome: Outcome, detail: impl Into<String>) -> bool {
        self.checks.push(Check {
            name: name.into(),
            outcome,
            detail: detail.into(),
        });
        outcome != Outcome::Fail
    }
}

/// What to verify with.
pub struct Inputs<'a> {
    /// The backup identity (file content), to open the keys archive.
    pub identity: Option<&'a str>,
    /// The audit key the manifest must be signed by (C2SP verifier key).
    pub pinned_signer: Option<&'a str>,
    /// A PostgreSQL server (any database URL on it) to trial-restore a
    /// PostgreSQL backup into a scratch database created and dropped there.
    pub postgres_url: Option<&'a str>,
}

/// The signed manifest of backup `name` alone (signed by `pinned` when
/// given), or why it cannot be trusted, for checks against a restored server.
pub async fn fetch_manifest(
    location: &dyn Location,
    name: &str,
    pinned: Option<&str>,
) -> Result<Manifest, String> {
    let mut report = Report {
        name: name.to_owned(),
        checks: Vec::new(),
        kek: None,
        manifest: None,
        handed_over: false,
    };
    let scratch = Scratch::new().map_err(|e| e.to_string())?;
    let inputs = Inputs {
        identity: None,
        pinned_signer: pinned,
        postgres_url: None,
    };
    match signed_manifest(location, name, &inputs, &scratch, &mut report).await {
        Ok(Some(manifest)) => Ok(manifest),
        Ok(None) => Err(report
            .checks
            .pop()
            .map_or_else(|| "no manifest".into(), |c| c.detail)),
        Err(e) => Err(e.to_string()),
    }
}

/// Where a backup that verified is left for a restore to take.
#[derive(Debug, Clone, Copy)]
pub enum HandOver<'a> {
    /// A SQLite backup's checked file, at this new path.
    SqliteFile(&'a Path),
    /// A PostgreSQL backup's trial restore, kept as this new database on the
    /// server of [`Inputs::postgres_url`] (so a restore loads it once).
    PostgresDatabase(&'a str),
}

/// Verifies backup `name`; with `hand_over`, what was checked is kept for a
/// restore (only when every check passed, and only the kind that matches the
/// backup). Fails only when the location cannot be read; every finding is a
/// line of the report.
pub async fn verify(
    location: &dyn Location,
    name: &str,
    inputs: Inputs<'_>,
    hand_over: Option<HandOver<'_>>,
) -> Result<Report, LocationError> {
    let mut report = Report {
        name: name.to_owned(),
        checks: Vec::new(),
        kek: None,
        manifest: None,
        handed_over: false,
    };
    let scratch = Scratch::new()?;
    let Some(manifest) = signed_manifest(location, name, &inputs, &scratch, &mut report).await?
    else {
        return Ok(report);
    };
    if !files_match(location, name, &manifest, &scratch, &mut report).await? {
        return Ok(report);
    }
    let Some(data) = manifest
        .files
        .iter()
        .find(|f| f.name.ends_with("_data.tar.gz"))
    else {
        report.add(
            "archives",
            Outcome::Fail,
            "the manifest lists no data archive",
        );
        return Ok(report);
    };
    let data_path = scratch.path(&data.name);
    let postgres = manifest.backend == "postgres";
    let (restored, holds) = match postgres {
        true => (scratch.path("postgres"), atlas_store::pg_snapshot::PG_INDEX),
        false => (scratch.path("restored.db"), DATABASE_FILE),
    };
    // One pass: every entry decompressed and checked, the snapshot written out.
    let unpacked = {
        let (path, out) = (data_path.clone(), restored.clone());
        tokio::task::spawn_blocking(move || match postgres {
            true => {
                std::fs::create_dir(&out)?;
                let names = archive::unpack_all(&path, &out, MAX_DATABASE_BYTES)?;
                match names.iter().any(|n| n == holds) {
                    true => Ok(()),
                    false => Err(archive::ArchiveError::Corrupt(format!(
                        "no {holds} in the archive"
                    ))),
                }
            }
            false => archive::unpack_one(&path, DATABASE_FILE, &out, MAX_DATABASE_BYTES),
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    };
    match unpacked {
        Ok(()) => report.add(
            "archive integrity",
            Outcome::Pass,
            format!(
                "{} decompresses whole, CRC matches, holds {holds}",
                data.name
            ),
        ),
        Err(e) => report.add(
            "archive integrity",
            Outcome::Fail,
            format!("{}: {e}", data.name),
        ),
    };
    if !report.passed() {
        return Ok(report);
    }
    open_keys(&manifest, &inputs, &scratch, &mut report);
    let latest = atlas_store::latest_schema_version();
    if !report.add(
        "schema",
        if manifest.schema_version <= latest {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "schema version {} (this binary serves up to {latest}){}",
            manifest.schema_version,
            if manifest.schema_version > latest {
                ": restore it with a newer atlas"
            } else {
                ""
            }
        ),
    ) {
        return Ok(report);
    }
    if postgres {
        let keep = match hand_over {
            Some(HandOver::PostgresDatabase(db)) => Some(db),
            _ => None,
        };
        report.handed_over =
            trial::postgres(&restored, &manifest, inputs.postgres_url, keep, &mut report).await;
    } else {
        trial::sqlite(&restored, &manifest, &mut report).await?;
        if let (Some(HandOver::SqliteFile(dest)), true) = (hand_over, report.passed()) {
            // A copy that failed part way (a full disk) is not left behind.
            if let Err(e) = tokio::fs::copy(&restored, dest).await {
                let _ = tokio::fs::remove_file(dest).await;
                return Err(e.into());
            }
            report.handed_over = true;
        }
    }
    report.manifest = Some(manifest);
    Ok(report)
}

async fn signed_manifest(
    location: &dyn Location,
    name: &str,
    inputs: &Inputs<'_>,
    scratch: &Scratch,
    report: &mut Report,
) -> Result<Option<Manifest>, LocationError> {
    let (path, sig_path) = (
        scratch.path(manifest::MANIFEST),
        scratch.path(manifest::SIGNATURE),
    );
    for (file, to) in [
        (manifest::MANIFEST, &path),
        (manifest::SIGNATURE, &sig_path),
    ] {
        match location.stat(name, file).await? {
            Some((size, _)) if size <= manifest::MAX_MANIFEST_BYTES as u64 => {
                location.get(name, file, to).await?;
            }
            Some(_) => {
                report.add(
                    "manifest",
                    Outcome::Fail,
                    format!("{file} is larger than 1 MiB"),
                );
                return Ok(None);
            }
            None => {
                report.add(
                    "manifest",
                    Outcome::Fail,
                    format!("{file} is missing: an incomplete backup"),
                );
                return Ok(None);
            }
        }
    }
    let bytes = tokio::fs::read(&path).await?;
    let signature = String::from_utf8_lossy(&tokio::fs::read(&sig_path).await?).into_owned();
    match Manifest::verify(&bytes, &signature, inputs.pinned_signer) {
        Ok(manifest) => {
            let pinned = match inputs.pinned_signer {
                Some(_) => "the pinned audit key",
                None => "the key it names (pin it with --key to rule out a forger)",
            };
            report.add(
                "manifest signature",
                Outcome::Pass,
                format!("signed by {pinned}"),
            );
            Ok(Some(manifest))
        }
        Err(e) => {
            report.add("manifest signature", Outcome::Fail, e.to_string());
            Ok(None)
        }
    }
}

async fn files_match(
    location: &dyn Location,
    name: &str,
    manifest: &Manifest,
    scratch: &Scratch,
    report: &mut Report,
) -> Result<bool, LocationError> {
    for file in &manifest.files {
        let stored = location.stat(name, &file.name).await?;
        let Some((size, _)) = stored else {
            return Ok(report.add("files", Outcome::Fail, format!("{} is missing", file.name)));
        };
        if size != file.size {
            return Ok(report.add(
                "files",
                Outcome::Fail,
                format!(
                    "{} is {size} bytes, the manifest says {} (truncated?)",
                    file.name, file.size
                ),
            ));
        }
        let path = scratch.path(&file.name);
        location.get(name, &file.name, &path).await?;
        let digest = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sha256_file(&path))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??
        };
        if digest != file.sha256 {
            return Ok(report.add(
                "files",
                Outcome::Fail,
                format!(
                    "{}: SHA-256 {digest}, the manifest says {} (altered)",
                    file.name, file.sha256
                ),
            ));
        }
    }
    Ok(report.add(
        "files",
        Outcome::Pass,
        format!(
            "{} files, sizes and SHA-256 as the manifest says",
            manifest.files.len()
        ),
    ))
}

fn open_keys(manifest: &Manifest, inputs: &Inputs<'_>, scratch: &Scratch, report: &mut Report) {
    let Some(identity) = inputs.identity else {
        report.add(
            "keys archive",
            Outcome::Skip,
            "no --identity: the keys archive was not opened",
        );
        return;
    };
    let Some(keys) = manifest
        .files
        .iter()
        .find(|f| f.name.ends_with("_keys.tar.gz.enc"))
    else {
        report.add(
            "keys archive",
            Outcome::Fail,
            "the manifest lists no keys archive",
        );
        return;
    };
    let opened = std::fs::read(scratch.path(&keys.name))
        .map_err(|e| e.to_string())
        .and_then(|sealed| crate::seal::open(identity, &sealed).map_err(|e| e.to_string()))
        .and_then(|packed| {
            archive::unpack_bytes(&packed, MAX_KEYS_BYTES).map_err(|e| e.to_string())
        });
    match opened {
        Ok(files) => match files.into_iter().find(|(n, _)| n == KEK_FILE) {
            Some((_, kek)) => {
                report.add(
                    "keys archive",
                    Outcome::Pass,
                    format!(
                        "opened with the identity; holds the KEK ({} bytes)",
                        kek.len()
                    ),
                );
                report.kek = Some(kek);
            }
            None => {
                report.add(
                    "keys archive",
                    Outcome::Fail,
                    format!("opened, but holds no {KEK_FILE}"),
                );
            }
        },
        Err(e) => {
            report.add("keys archive", Outcome::Fail, e);
        }
    }
}
