//! The emergency evidence bundle (seed 004 §3.1 step 1, "save forensic
//! evidence"), made by the server before a lockdown instead of scraped from
//! pods about to be deleted: the recent log lines (a bounded ring this process
//! keeps), a state summary, a metrics snapshot, the configuration without
//! secrets and the audit checkpoint, under a manifest the audit key signs.
use crate::error::ApiError;
use crate::state::AppState;
use atlas_proto::emergency::EvidenceBundle;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Log lines kept.
pub const LOG_LINES: usize = 5000;
/// Longest kept line; longer ones are cut.
pub const MAX_LINE: usize = 4096;
/// Audit entries in the state summary.
const RECENT_ACTS: u32 = 200;

fn ring() -> &'static Mutex<VecDeque<String>> {
    static RING: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(LOG_LINES)))
}

/// The log lines kept so far, oldest first.
pub fn recent_logs() -> Vec<String> {
    ring()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// A `tracing` layer that keeps the last [`LOG_LINES`] events as JSON lines
/// (`atlas serve` installs it beside its own log output).
pub struct LogRing;

struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogRing {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields(serde_json::Map::new());
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = serde_json::json!({
            "timestamp": atlas_proto::timestamp::rfc3339(time::OffsetDateTime::now_utc()),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "fields": fields.0,
        })
        .to_string();
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        let mut ring = ring().lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == LOG_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Assembles the bundle.
pub async fn bundle(state: &AppState) -> Result<EvidenceBundle, ApiError> {
    let now = state.clock.now();
    let created = atlas_proto::timestamp::rfc3339(now);
    // A fresh checkpoint, so the bundle pins the log as it is now.
    let checkpoint = state
        .audit
        .checkpoint(now)
        .await
        .map_err(ApiError::internal)?;
    let open = state
        .stores
        .incidents
        .incidents(true, crate::routes::incidents::MAX_OPEN)
        .await?;
    let acts = state
        .stores
        .audit
        .audit_list(&atlas_store::AuditFilter {
            limit: RECENT_ACTS,
            ..Default::default()
        })
        .await?;
    let counts: BTreeMap<String, i64> = state.stores.all.row_counts().await?.into_iter().collect();
    let summary = serde_json::json!({
        "created_at": created,
        "server": state.config.public_url,
        "version": env!("CARGO_PKG_VERSION"),
        "backend": state.stores.all.backend(),
        "lockdown": state.lockdown.current(),
        "push_sockets_here": state.disconnects.sockets(),
        "row_counts": counts,
        "open_incidents": open.iter().map(|i| serde_json::json!({
            "id": i.id, "severity": i.severity, "status": i.status,
            "description": i.description, "commander": i.commander,
        })).collect::<Vec<_>>(),
        "recent_admin_actions": acts,
    });
    let config = serde_json::json!({
        "public_url": state.config.public_url,
        "backend": state.stores.all.backend(),
        "redis": state.redis.is_some(),
        "access_token_ttl_secs": state.config.access_token_ttl_secs,
        "refresh_token_ttl_secs": state.config.refresh_token_ttl_secs,
        "require_dpop_nonce": state.config.require_dpop_nonce,
        "iat_max_age_secs": state.config.iat_window.max_age_secs,
        "iat_max_skew_secs": state.config.iat_window.max_skew_secs,
        "websocket_idle_secs": state.config.websocket_idle.as_secs(),
        "admin_allow": state.config.admin_allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "notify": state.notify_to.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "receipt_issuer": state.receipts.issuer,
        "secrets": "not included: KEK, server keys, webhook URL, routing key, database and Redis URLs",
    });
    let mut files = BTreeMap::new();
    files.insert("logs.jsonl".to_owned(), recent_logs().join("\n") + "\n");
    files.insert("state.json".to_owned(), pretty(&summary));
    files.insert(
        "metrics.txt".to_owned(),
        crate::routes::metrics::render(state).await?,
    );
    files.insert("config.json".to_owned(), pretty(&config));
    files.insert(
        "audit-checkpoint.txt".to_owned(),
        checkpoint.map(|c| c.note).unwrap_or_default(),
    );
    let bytes: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(name, text)| (name.clone(), text.as_bytes().to_vec()))
        .collect();
    let manifest = atlas_crypto::evidence::manifest(state.audit.signer(), &created, &bytes)
        .map_err(ApiError::internal)?;
    Ok(EvidenceBundle {
        manifest,
        key: state.audit.verifier().to_text(),
        files,
    })
}
