//! The audit log as the server keeps it (seed 004 §4.2 "audit logs intact",
//! §5.2 "log gaps or tampering"). Every operator request that changes
//! something, and every refused admin authentication, is appended before its
//! answer leaves; the server's own security acts are appended where they
//! happen. Each entry is sealed to its index with the audit key, and a
//! checkpointer signs the tree at least every minute that anything was
//! appended. The cryptography is `atlas_crypto::audit_log`.
use crate::server_keys::{ServerKeyError, ServerKeys};
use atlas_crypto::audit_log::{self, Checkpoint, SealedEntry, Tree};
use atlas_crypto::note::{NoteSigner, NoteVerifier};
use atlas_proto::audit::{AuditOutcome, CheckpointView, NewAuditEntry, VerifyView};
use atlas_store::{AuditStore, ServerKeyRecord, StoreError, StoredCheckpoint};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// `server_keys.purpose` of the key that seals entries and signs checkpoints;
/// its `kid` is the log's origin.
pub const AUDIT_PURPOSE: &str = "audit-log";
/// Refused admin authentications logged one by one per minute and process;
/// beyond that they are counted, so a flood cannot grow the log without bound.
pub const AUTH_FAILURES_PER_MINUTE: u64 = 60;
/// Entries read per page while checkpointing or verifying.
const PAGE: u32 = 1000;

/// Why the audit log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit key could not be had.
    #[error(transparent)]
    Key(#[from] ServerKeyError),
    /// The stored key is not an Ed25519 seed under a valid name (our bug or tampering).
    #[error("the stored audit key is unusable")]
    BadKey,
    /// A stored entry's seal does not hold: the log was changed under us.
    #[error("audit entry {0} does not carry its seal: the log was tampered with")]
    Tampered(u64),
}

/// The log: appending, checkpointing, verifying.
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    signer: NoteSigner,
    /// Digests of the entries checked so far, as the checkpointer's tree.
    tree: tokio::sync::Mutex<Tree>,
    /// 1 when the last verification passed, 0 when it failed, -1 before the first.
    verified: AtomicI64,
    verify_failures: AtomicU64,
    append_failures: AtomicU64,
    /// (minute, refused authentications logged in it, suppressed since the last logged).
    auth_budget: Mutex<(i64, u64, u64)>,
    suppressed: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.signer.name())
    }
}

fn new_key(origin: &str, now: OffsetDateTime) -> ServerKeyRecord {
    ServerKeyRecord {
        kid: origin.to_owned(),
        purpose: AUDIT_PURPOSE.into(),
        alg: "Ed25519".into(),
        secret: atlas_crypto::random_bytes::<32>().to_vec(),
        created_at: now,
    }
}

/// The origin a new log gets: the public host when known, so checkpoints name
/// the deployment, with a random part, so two deployments never share one.
pub fn origin_for(public_url: Option<&str>) -> String {
    let host = public_url
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .filter(|h| !h.is_empty() && !h.contains(|c: char| c.is_whitespace() || c == '+'))
        .unwrap_or("atlas");
    let suffix: String = atlas_crypto::random_bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{host}/audit/{suffix}")
}

impl AuditLog {
    /// The log in `store`, with its key from `keys` (created, named `origin`, if there is none).
    pub async fn open(
        store: Arc<dyn AuditStore>,
        keys: &ServerKeys,
        origin: &str,
        now: OffsetDateTime,
    ) -> Result<Self, AuditError> {
        let origin = origin.to_owned();
        let make = move || new_key(&origin, now);
        let key = keys.active(AUDIT_PURPOSE, &make).await?;
        let seed: [u8; 32] = key
            .secret
            .as_slice()
            .try_into()
            .map_err(|_| AuditError::BadKey)?;
        let signer = NoteSigner::new(&key.kid, &seed).map_err(|_| AuditError::BadKey)?;
        Ok(Self {
            store,
            signer,
            tree: Default::default(),
            verified: AtomicI64::new(-1),
            verify_failures: AtomicU64::new(0),
            append_failures: AtomicU64::new(0),
            auth_budget: Mutex::new((0, 0, 0)),
            suppressed: AtomicU64::new(0),
        })
    }

    /// The signer (for the emergency evidence's manifest).
    pub fn signer(&self) -> &NoteSigner {
        &self.signer
    }

    /// The key checkpoints verify with.
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// Appends `entry`, sealed to its index; the index.
    pub async fn record(&self, entry: NewAuditEntry) -> Result<u64, StoreError> {
        let entry = entry.bounded();
        let digest = audit_log::digest_of(&entry);
        let seal = |index: u64| audit_log::seal_entry(&self.signer, index, &digest).to_vec();
        let appended = self.store.append_audit(&entry, &seal).await;
        if let Err(e) = &appended {
            self.append_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, action = %entry.action, "audit entry could not be appended");
        }
        appended
    }

    /// Appends a refused admin authentication, within [`AUTH_FAILURES_PER_MINUTE`].
    pub async fn record_auth_failure(&self, mut entry: NewAuditEntry) {
        let minute = entry.at.0.unix_timestamp() / 60;
        let suppressed = {
            let mut budget = self.auth_budget.lock().unwrap_or_else(|p| p.into_inner());
            if budget.0 != minute {
                *budget = (minute, 0, budget.2);
            }
            if budget.1 >= AUTH_FAILURES_PER_MINUTE {
                budget.2 += 1;
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            budget.1 += 1;
            std::mem::take(&mut budget.2)
        };
        if suppressed > 0 {
            let _ = write!(
                entry.detail,
                " ({suppressed} more refused authentications before this one were only counted)"
            );
        }
        let _ = self.record(entry).await;
    }

    /// Reads entries appended since the last call, checks each one's seal,
    /// and signs a checkpoint if the log grew; the latest checkpoint.
    pub async fn checkpoint(
        &self,
        now: OffsetDateTime,
    ) -> Result<Option<StoredCheckpoint>, AuditError> {
        let mut tree = self.tree.lock().await;
        let verifier = self.verifier();
        loop {
            let page = self.store.audit_entries(tree.len(), PAGE).await?;
            for (entry, seal) in &page {
                let digest = audit_log::digest_of(&entry.entry);
                if entry.seq != tree.len()
                    || !audit_log::entry_sealed(&verifier, tree.len(), &digest, seal)
                {
                    self.verified.store(0, Ordering::Relaxed);
                    return Err(AuditError::Tampered(tree.len()));
                }
                tree.push(digest);
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        let latest = self.store.latest_audit_checkpoint().await?;
        if tree.is_empty() || latest.as_ref().is_some_and(|(c, _)| c.size >= tree.len()) {
            return Ok(latest.map(|(c, _)| c));
        }
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_owned(),
            size: tree.len(),
            root: tree.root(),
        };
        let note = checkpoint
            .sign(&self.signer)
            .map_err(|_| AuditError::BadKey)?;
        let stored = StoredCheckpoint {
            size: checkpoint.size,
            note,
        };
        // Another replica may have signed the same size: the note is the same
        // (Ed25519 signatures are deterministic), so either row will do.
        self.store.add_audit_checkpoint(&stored, now).await?;
        Ok(Some(stored))
    }

    /// What `GET /.well-known/atlas/audit-checkpoint` shows.
    pub async fn published(&self) -> Result<CheckpointView, AuditError> {
        Ok(CheckpointView {
            checkpoint: self
                .store
                .latest_audit_checkpoint()
                .await?
                .map(|(c, _)| c.note),
            key: self.verifier().to_text(),
            entries: self.store.audit_size().await?,
        })
    }

    /// Verifies the whole stored log and records the result for `/metrics`.
    pub async fn verify(&self) -> Result<VerifyView, AuditError> {
        let view = verify_stored(self.store.as_ref(), &self.verifier()).await?;
        self.verified.store(i64::from(view.ok), Ordering::Relaxed);
        if !view.ok {
            self.verify_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(tamper = ?view.tamper, problems = ?view.checkpoint_problems, "audit log verification failed");
        }
        Ok(view)
    }

    /// Appends the audit series in the Prometheus text format.
    pub async fn render_metrics(&self, out: &mut String, now: OffsetDateTime) {
        let size = self.store.audit_size().await.unwrap_or(0);
        let latest = self.store.latest_audit_checkpoint().await.ok().flatten();
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            out,
            "atlas_audit_entries",
            "Entries in the audit log.",
            size.to_string(),
        );
        gauge(
            out,
            "atlas_audit_checkpoint_size",
            "Entries covered by the latest signed audit checkpoint.",
            latest.as_ref().map_or(0, |(c, _)| c.size).to_string(),
        );
        gauge(
            out,
            "atlas_audit_checkpoint_age_seconds",
            "Seconds since the latest signed audit checkpoint (0 when there is none).",
            latest
                .map_or(0, |(_, at)| (now - at).whole_seconds().max(0))
                .to_string(),
        );
        gauge(
            out,
            "atlas_audit_verified",
            "1 when this process's last audit-log verification passed, 0 when it failed, -1 before the first.",
            self.verified.load(Ordering::Relaxed).to_string(),
        );
        counter(
            out,
            "atlas_audit_verify_failures_total",
            "Audit-log verifications that found tampering.",
            self.verify_failures.load(Ordering::Relaxed),
        );
        counter(
            out,
            "atlas_audit_append_failures_total",
            "Audit entries that could not be appended (the act itself went ahead).",
            self.append_failures.load(Ordering::Relaxed),
        );
        counter(
            out,
            "atlas_audit_suppressed_total",
            "Refused admin authentications counted but not logged one by one (over the per-minute budget).",
            self.suppressed.load(Ordering::Relaxed),
        );
    }
}

/// The log of a server's store, opened on its host (the server may be down):
/// `atlas admin token create` appends with it, `atlas audit verify` checks with it.
pub async fn open_on_host(
    store: Arc<dyn atlas_store::Store>,
    kek_file: &std::path::Path,
    now: OffsetDateTime,
) -> Result<AuditLog, AuditError> {
    let kek = crate::kek::Kek::load(kek_file).map_err(ServerKeyError::Kek)?;
    let keys = ServerKeys::new(store.clone(), kek);
    AuditLog::open(store, &keys, &origin_for(None), now).await
}

/// An entry for an act done on the server host (`actor` is `host`, labelled with the OS user).
pub fn host_entry(
    now: OffsetDateTime,
    action: &str,
    target: &str,
    detail: String,
) -> NewAuditEntry {
    NewAuditEntry {
        at: now.into(),
        actor: "host".into(),
        actor_label: std::env::var("USER").unwrap_or_default(),
        source: String::new(),
        action: action.into(),
        target: target.into(),
        outcome: AuditOutcome::Ok,
        detail,
    }
}

/// Verifies the log stored in `store` against `verifier` (used by the server
/// and by `atlas audit verify` on the host when the server is down).
pub async fn verify_stored(
    store: &dyn AuditStore,
    verifier: &NoteVerifier,
) -> Result<VerifyView, StoreError> {
    Ok(verify_stored_against(store, verifier, None).await?.0)
}

/// [`verify_stored`], and whether the signed checkpoint `note` (one a backup
/// recorded) holds for a prefix of the stored log.
pub async fn verify_stored_against(
    store: &dyn AuditStore,
    verifier: &NoteVerifier,
    note: Option<&str>,
) -> Result<(VerifyView, Option<bool>), StoreError> {
    let mut entries = Vec::new();
    loop {
        let page = store.audit_entries(entries.len() as u64, PAGE).await?;
        let full = page.len() == PAGE as usize;
        entries.extend(page.into_iter().map(|(entry, seal)| SealedEntry {
            digest: audit_log::digest_of(&entry.entry),
            seal,
        }));
        if !full {
            break;
        }
    }
    let notes: Vec<String> = store
        .audit_checkpoints()
        .await?
        .into_iter()
        .map(|c| c.note)
        .collect();
    let report = audit_log::verify_log(&entries, &notes, verifier);
    let holds = note.map(|note| audit_log::checkpoint_holds(&entries, note, verifier));
    let view = VerifyView {
        ok: report.ok(),
        entries: report.entries,
        checkpoints: report.checkpoints,
        verified_size: report.verified.as_ref().map_or(0, |c| c.size),
        verified_root: report
            .verified
            .as_ref()
            .map(|c| atlas_proto::b64::encode_std(c.root)),
        tamper: report.tamper,
        checkpoint_problems: report.checkpoint_problems,
        key: verifier.to_text(),
    };
    Ok((view, holds))
}

/// Runs the checkpointer every `every`, and a full verification every `verify_every`.
pub fn spawn(
    log: Arc<AuditLog>,
    clock: Arc<dyn crate::state::Clock>,
    every: std::time::Duration,
    verify_every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut last_verify: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = log.checkpoint(clock.now()).await {
                tracing::error!(error = %e, "audit checkpoint failed");
            }
            if last_verify.is_none_or(|at| at.elapsed() >= verify_every) {
                last_verify = Some(tokio::time::Instant::now());
                if let Err(e) = log.verify().await {
                    tracing::error!(error = %e, "audit verification could not run");
                }
            }
        }
    });
}
