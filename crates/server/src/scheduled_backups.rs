//! Scheduled disaster-recovery backups for the embedded profile (`atlas
//! serve --backup-to LOCATION --backup-every 6h --backup-recipient age1…`):
//! the same backups as `atlas dr backup`, taken by the server itself, each
//! recorded in the database (for the metrics) and in the audit log. A failed
//! one is logged, audited as failed and counted; the next one tries again.
use crate::state::Inner;
use atlas_proto::audit::{AuditOutcome, NewAuditEntry};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// When and where the server backs itself up.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    /// A directory or `s3://BUCKET/PREFIX`.
    pub location: String,
    /// How often.
    pub every: Duration,
    /// The age recipient the keys archive is sealed to.
    pub recipient: String,
}

/// Scheduled backups that failed since start (for `/metrics`).
pub static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Takes one backup now; its name.
pub async fn backup_once(state: &Inner, schedule: &BackupSchedule) -> Result<String, String> {
    let now = state.clock.now();
    let location = atlas_dr::location::parse(&schedule.location).map_err(|e| e.to_string())?;
    let kek = tokio::fs::read(&state.kek_file)
        .await
        .map_err(|e| format!("reading the KEK: {e}"))?;
    let audit = state
        .audit
        .checkpoint(now)
        .await
        .map_err(|e| format!("checkpointing the audit log: {e}"))?
        .map(|c| atlas_dr::manifest::AuditPoint {
            size: c.size,
            checkpoint: c.note,
        });
    let name = atlas_dr::backup::default_name(now);
    let source = atlas_dr::backup::Source {
        store: state.stores.all.as_ref(),
        kek: &kek,
        signer: state.audit.signer(),
        audit,
    };
    let manifest = atlas_dr::backup::backup(
        source,
        &name,
        &schedule.recipient,
        location.as_ref(),
        now,
        &mut |_| {},
    )
    .await
    .map_err(|e| e.to_string())?;
    let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let messages = manifest.row_counts.get("messages").copied().unwrap_or(0);
    let size = manifest.files.iter().map(|f| f.size).sum::<u64>();
    state
        .stores
        .all
        .record_backup(
            &location.describe(),
            &name,
            ms,
            messages,
            i64::try_from(size).unwrap_or(i64::MAX),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(name)
}

/// Runs `schedule` until `stop` changes.
pub fn spawn(
    state: Arc<Inner>,
    schedule: BackupSchedule,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(schedule.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: a backup when the server starts.
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let started = std::time::Instant::now();
            let result = backup_once(&state, &schedule).await;
            let (outcome, detail) = match &result {
                Ok(name) => {
                    tracing::info!(backup = %name, location = %schedule.location, seconds = started.elapsed().as_secs_f64(), "scheduled backup taken");
                    (
                        AuditOutcome::Ok,
                        serde_json::json!({ "location": schedule.location, "name": name }),
                    )
                }
                Err(e) => {
                    FAILURES.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, location = %schedule.location, "scheduled backup failed");
                    (
                        AuditOutcome::Failed,
                        serde_json::json!({ "location": schedule.location, "error": e }),
                    )
                }
            };
            let _ = state
                .audit
                .record(NewAuditEntry {
                    at: state.clock.now().into(),
                    actor: "server".into(),
                    actor_label: "scheduled backup".into(),
                    source: String::new(),
                    action: "dr.backup".into(),
                    target: result.as_deref().unwrap_or("").to_owned(),
                    outcome,
                    detail: detail.to_string(),
                })
                .await;
        }
    });
}
