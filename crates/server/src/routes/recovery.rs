//! The routes of `atlas verify-recovery` (scope `recovery`):
//! `POST /admin/recovery/facts`, what it checks a restored server against its
//! backup's manifest — row counts, sampled messages and their receipts, the
//! audit log against the manifest's checkpoint, devices still to re-key, open
//! incidents, and a self-check of the configuration; and
//! `/admin/recovery/probes`, its throwaway users, reserved and then erased.
use crate::auth::operator::{Admin, scope};
use crate::control::ControlEvent;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use atlas_proto::recovery::{
    AuditFacts, ConfigCheck, FactsRequest, MAX_RECEIPTS, MAX_SAMPLE, ProbeErasure, ProbeList,
    ProbeReservation, RecoveryFacts, ReservedProbe, SampleReceipt,
};
use atlas_proto::{ErrorCode, UserId};
use atlas_store::PROBE_PREFIX;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use std::path::Path;

/// Longest checkpoint note accepted (ours are about 200 bytes).
const MAX_NOTE: usize = 4096;

async fn facts(
    State(state): State<AppState>,
    _operator: Admin<scope::Recovery>,
    ApiJson(request): ApiJson<FactsRequest>,
) -> Result<Json<RecoveryFacts>, ApiError> {
    let too_large = |what: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("{what} is too large"),
        )
    };
    if request.message_sample.len() > MAX_SAMPLE {
        return Err(too_large("message_sample"));
    }
    if request
        .audit_checkpoint
        .as_ref()
        .is_some_and(|n| n.len() > MAX_NOTE)
    {
        return Err(too_large("audit_checkpoint"));
    }
    let store = &state.stores.all;
    let row_counts = store.row_counts().await?.into_iter().collect();
    let missing_messages = store.missing_messages(&request.message_sample).await?;
    let mut receipts = Vec::new();
    for id in request
        .message_sample
        .iter()
        .filter(|id| !missing_messages.contains(id))
    {
        if receipts.len() >= MAX_RECEIPTS {
            break;
        }
        if let Some(r) = store.receipts(id).await?.into_iter().next() {
            receipts.push(SampleReceipt {
                message_id: id.clone(),
                jws: r.jws,
            });
        }
    }
    let (view, holds) = crate::audit::verify_stored_against(
        state.stores.audit.as_ref(),
        &state.audit.verifier(),
        request.audit_checkpoint.as_deref(),
    )
    .await?;
    let mut problems: Vec<String> = view
        .tamper
        .iter()
        .map(|t| format!("{t:?}"))
        .chain(view.checkpoint_problems.iter().map(|p| format!("{p:?}")))
        .collect();
    problems.truncate(20);
    let open_incidents = store
        .incidents(true, 50)
        .await?
        .into_iter()
        .map(|i| format!("{} ({}): {}", i.id, i.severity, i.description))
        .collect();
    Ok(Json(RecoveryFacts {
        backend: store.backend().into(),
        row_counts,
        missing_messages,
        receipts,
        audit: AuditFacts {
            intact: view.ok,
            entries: view.entries,
            checkpoint_consistent: holds,
            problems,
        },
        devices_awaiting_rekey: store.devices_awaiting_rekey().await?,
        open_incidents,
        config: self_check(&state),
    }))
}

/// The configuration as an operator expects it after a restore: secrets
/// private, no debug settings, a public URL that is HTTPS (or loopback).
fn self_check(state: &AppState) -> Vec<ConfigCheck> {
    let mut checks = vec![private_file("KEK file", Some(&state.kek_file))];
    if let Some(db) = &state.config.database_file {
        checks.push(private_file("database file", Some(db)));
    }
    let log = ["ATLAS_LOG", "RUST_LOG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok().map(|value| format!("{v}={value}")))
        .collect::<Vec<_>>()
        .join(" ");
    let verbose = ["debug", "trace"].iter().any(|l| log.contains(l));
    checks.push(ConfigCheck {
        name: "log level".into(),
        ok: !verbose,
        detail: if log.is_empty() {
            "default (info)".into()
        } else {
            log
        },
    });
    checks.push(ConfigCheck {
        name: "metric labels".into(),
        ok: !state.metrics_config.expose_group_ids,
        detail: if state.metrics_config.expose_group_ids {
            "group ids in labels (--metrics-group-ids is a debugging setting)".into()
        } else {
            "salted group hashes".into()
        },
    });
    let url = &state.config.public_url;
    let loopback = url
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .is_some_and(|h| h == "localhost" || h == "[::1]" || h.starts_with("127."));
    checks.push(ConfigCheck {
        name: "public URL".into(),
        ok: url.starts_with("https://") || loopback,
        detail: if url.starts_with("https://") || !loopback {
            url.clone()
        } else {
            format!("{url} (plain HTTP, loopback only)")
        },
    });
    checks
}

/// Whether `path` exists and only its owner may read it.
fn private_file(name: &str, path: Option<&Path>) -> ConfigCheck {
    use std::os::unix::fs::PermissionsExt;
    let (ok, detail) = match path.map(std::fs::metadata) {
        None => (false, "not configured".to_owned()),
        Some(Err(e)) => (false, format!("unreadable: {e}")),
        Some(Ok(meta)) => {
            let mode = meta.permissions().mode() & 0o777;
            (mode & 0o077 == 0, format!("mode {mode:04o}"))
        }
    };
    ConfigCheck {
        name: name.into(),
        ok,
        detail,
    }
}

/// `POST /admin/recovery/probes`: reserves two probe user ids (random, under
/// [`PROBE_PREFIX`]), which then register without the registration token.
async fn reserve_probes(
    State(state): State<AppState>,
    operator: Admin<scope::Recovery>,
) -> Result<(StatusCode, Json<ProbeReservation>), ApiError> {
    let tag: String = atlas_crypto::random_id()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect::<String>()
        .to_ascii_lowercase();
    let user_ids = ["a", "b"]
        .iter()
        .map(|who| UserId::new(format!("{PROBE_PREFIX}{tag}-{who}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    state
        .stores
        .probes
        .reserve_probes(&user_ids, &operator.token_id, state.clock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(ProbeReservation { user_ids })))
}

/// `GET /admin/recovery/probes`: the reserved probes, oldest first (a run
/// that was interrupted leaves its own).
async fn list_probes(
    State(state): State<AppState>,
    _operator: Admin<scope::Recovery>,
) -> Result<Json<ProbeList>, ApiError> {
    let probes = state
        .stores
        .probes
        .reserved_probes()
        .await?
        .into_iter()
        .map(|p| ReservedProbe {
            user_id: p.user_id,
            reserved_at: p.reserved_at.into(),
            reserved_by: p.reserved_by,
        })
        .collect();
    Ok(Json(ProbeList { probes }))
}

/// `DELETE /admin/recovery/probes/{user_id}`: erases a reserved probe and
/// everything stored about it; its devices' sockets and tokens die at once.
async fn erase_probe(
    State(state): State<AppState>,
    _operator: Admin<scope::Recovery>,
    ApiPath(user_id): ApiPath<UserId>,
) -> Result<Json<ProbeErasure>, ApiError> {
    let erased = state.stores.probes.erase_probe(&user_id).await?;
    for device in &erased.devices {
        state
            .announce(ControlEvent::DeviceRevoked(user_id.clone(), device.clone()))
            .await;
    }
    Ok(Json(ProbeErasure {
        user_id,
        devices: erased.devices.len() as u64,
        groups: erased.groups,
        rows: erased.rows,
    }))
}

/// The admin routes.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/recovery/facts", post(facts))
        .route("/recovery/probes", post(reserve_probes).get(list_probes))
        .route("/recovery/probes/{user_id}", delete(erase_probe))
}
