//! The trial restore of `atlas dr verify`: the backup restored into a
//! scratch database — a SQLite file, or a PostgreSQL database created and
//! dropped on a given server — whose integrity, row counts and sampled
//! messages must match the manifest.
use crate::location::LocationError;
use crate::manifest::Manifest;
use crate::verify::{Outcome, Report};
use atlas_store::SnapshotFacts;
use std::path::Path;

pub(crate) async fn sqlite(
    restored: &Path,
    manifest: &Manifest,
    report: &mut Report,
) -> Result<(), LocationError> {
    let facts = match atlas_store::inspect_sqlite_file(restored, &manifest.message_sample).await {
        Ok(facts) => facts,
        Err(e) => {
            report.add(
                "trial restore",
                Outcome::Fail,
                format!("the snapshot does not open: {e}"),
            );
            return Ok(());
        }
    };
    if !facts.integrity_problems.is_empty() {
        report.add(
            "trial restore",
            Outcome::Fail,
            format!("integrity check: {}", facts.integrity_problems.join("; ")),
        );
        return Ok(());
    }
    report.add(
        "integrity check",
        Outcome::Pass,
        "PRAGMA integrity_check: ok",
    );
    compare(&facts, manifest, report);
    Ok(())
}

/// Loads the PostgreSQL dump in `dir` into a scratch database on the server
/// of `server` (created, then dropped), or into the new database `keep`,
/// which stays when every check passed (a restore then renames it in);
/// whether it stayed.
pub(crate) async fn postgres(
    dir: &Path,
    manifest: &Manifest,
    server: Option<&str>,
    keep: Option<&str>,
    report: &mut Report,
) -> bool {
    let Some(server) = server else {
        report.add(
            "trial restore",
            Outcome::Skip,
            "a PostgreSQL backup: give --database-url (any database on a PostgreSQL server) to restore it into a scratch database there",
        );
        return false;
    };
    let scratch = keep.map_or_else(
        || {
            format!(
                "atlas_dr_verify_{}",
                hex::encode(atlas_crypto::random_bytes::<6>())
            )
        },
        str::to_owned,
    );
    // A database this did not create is never dropped.
    if let Err(e) = atlas_store::pg_snapshot::create_database(server, &scratch).await {
        report.add(
            "trial restore",
            Outcome::Fail,
            format!("creating database {scratch}: {e}"),
        );
        return false;
    }
    let loaded = async {
        let url = atlas_store::pg_snapshot::with_database(server, &scratch)?;
        atlas_store::pg_snapshot::load(dir, &url, &manifest.message_sample).await
    }
    .await;
    match loaded {
        Ok(facts) => {
            report.add(
                "integrity check",
                Outcome::Pass,
                format!(
                    "every table copied into scratch database {scratch}, foreign keys enforced"
                ),
            );
            compare(&facts, manifest, report);
        }
        Err(e) => {
            report.add(
                "trial restore",
                Outcome::Fail,
                format!("loading into scratch database {scratch}: {e}"),
            );
        }
    }
    if keep.is_some() && report.passed() {
        return true;
    }
    if let Err(e) = atlas_store::pg_snapshot::drop_database(server, &scratch).await {
        report.add(
            "scratch database",
            Outcome::Fail,
            format!("{scratch} was not dropped: {e}"),
        );
    }
    false
}

/// Row counts, schema and sampled messages of the restored copy against the manifest.
fn compare(facts: &SnapshotFacts, manifest: &Manifest, report: &mut Report) {
    let differing: Vec<String> = manifest
        .row_counts
        .iter()
        .filter(|(table, n)| facts.row_counts.get(*table) != Some(n))
        .map(|(table, n)| {
            format!(
                "{table}: {} restored, {n} in the manifest",
                facts.row_counts.get(table).copied().unwrap_or(-1)
            )
        })
        .collect();
    match differing.is_empty() && facts.schema_version == manifest.schema_version {
        true => report.add(
            "row counts",
            Outcome::Pass,
            format!(
                "{} tables as the manifest says ({} messages)",
                manifest.row_counts.len(),
                manifest.row_counts.get("messages").copied().unwrap_or(0)
            ),
        ),
        false => report.add(
            "row counts",
            Outcome::Fail,
            format!(
                "{} (schema {} restored, {} in the manifest)",
                differing.join("; "),
                facts.schema_version,
                manifest.schema_version
            ),
        ),
    };
    match facts.missing_messages.is_empty() {
        true => report.add(
            "message sample",
            Outcome::Pass,
            format!(
                "all {} sampled messages present",
                manifest.message_sample.len()
            ),
        ),
        false => report.add(
            "message sample",
            Outcome::Fail,
            format!("missing: {}", facts.missing_messages.join(", ")),
        ),
    };
}
