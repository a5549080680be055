//! Key backups: `POST /backups` stores a blob a device encrypted,
//! `GET /backups/{user_id}?at=` lists backups' public parameters (what a
//! restoring device needs to derive its keys), and
//! `GET /backups/{user_id}/{backup_id}` hands the blob to whoever presents
//! `Authorization: Backup <download key>` — a key only the passphrase yields.
use crate::auth::DeviceAuth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::limits::{ClientAddr, Limits};
use crate::state::AppState;
use atlas_crypto::backup::download_verifier;
use atlas_proto::ErrorCode;
use atlas_proto::backup::{
    BackupDownload, BackupInfo, BackupKdf, BackupList, BackupUpload, MAX_BACKUP_BYTES,
};
use atlas_proto::timestamp::parse_rfc3339;
use atlas_store::{BackupMeta, NewBackup};
use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde::Deserialize;

/// Backups listed at most.
const LIST_LIMIT: u32 = 20;

fn info(meta: &BackupMeta) -> Result<BackupInfo, ApiError> {
    Ok(BackupInfo {
        backup_id: meta.backup_id.clone(),
        user_id: meta.user_id.clone(),
        device_id: meta.device_id.clone(),
        version: meta.version,
        kdf: serde_json::from_str(&meta.kdf).map_err(ApiError::internal)?,
        size: meta.size,
        created_at: meta.created_at.into(),
    })
}

fn check_kdf(kdf: &BackupKdf) -> Result<(), ApiError> {
    let sane = kdf.alg == "argon2id"
        && (8..=1024 * 1024).contains(&kdf.m_kib)
        && (1..=10).contains(&kdf.t)
        && (1..=4).contains(&kdf.p)
        && (8..=64).contains(&kdf.salt.len());
    if sane {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "kdf must be argon2id with sane costs and salt",
        ))
    }
}

fn base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `POST /backups`.
pub async fn upload(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(req): ApiJson<BackupUpload>,
) -> Result<(StatusCode, Json<BackupInfo>), ApiError> {
    if !req.backup_id.belongs_to(auth.user_id.as_str()) {
        return Err(ApiError::invalid(format!(
            "backup_id must be backup-{}-<unix-ms>",
            auth.user_id
        )));
    }
    check_kdf(&req.kdf)?;
    if req.download_verifier.len() != 64
        || !req.download_verifier.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(ApiError::invalid("download_verifier must be a hex SHA-256"));
    }
    if req.blob.len() > MAX_BACKUP_BYTES {
        return Err(ApiError::too_large(format!(
            "a backup is at most {MAX_BACKUP_BYTES} bytes"
        )));
    }
    if req.blob.is_empty() || !base64url(&req.blob) {
        return Err(ApiError::invalid("blob must be base64url"));
    }
    let stored = state
        .stores
        .backups
        .store_backup(&NewBackup {
            backup_id: req.backup_id,
            user_id: auth.user_id,
            device_id: auth.device_id,
            kdf: serde_json::to_string(&req.kdf).map_err(ApiError::internal)?,
            download_verifier: req.download_verifier.to_ascii_lowercase(),
            blob: req.blob,
            created_at: state.clock.now(),
        })
        .await?;
    tracing::info!(backup_id = %stored.backup_id, version = stored.version, size = stored.size, "key backup stored");
    Ok((StatusCode::CREATED, Json(info(&stored)?)))
}

/// Query of `GET /backups/{user_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// RFC 3339: backups made at or before (default now).
    pub at: Option<String>,
}

/// `GET /backups/{user_id}`: newest first.
pub async fn list(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<BackupList>, ApiError> {
    let until = match query.at {
        Some(at) => {
            parse_rfc3339(&at).map_err(|_| ApiError::invalid("at must be an RFC 3339 time"))?
        }
        None => state.clock.now(),
    };
    let backups = state
        .stores
        .backups
        .backups(&user_id, until, LIST_LIMIT)
        .await?;
    Ok(Json(BackupList {
        backups: backups.iter().map(info).collect::<Result<_, _>>()?,
    }))
}

/// `GET /backups/{user_id}/{backup_id}` with `Authorization: Backup <download key>`.
pub async fn download(
    State(state): State<AppState>,
    ClientAddr(source): ClientAddr,
    ApiPath((user_id, backup_id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<BackupDownload>, ApiError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Backup "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidToken,
                "send Authorization: Backup <download key derived from the passphrase>",
            )
        })?;
    // Per source first, so a stranger guessing from one address runs out of
    // attempts long before the owner (elsewhere) does; the per-user budget bounds
    // guessing from many addresses.
    let limits = &state.limits;
    Limits::take_shared(
        &limits.backup_per_source,
        "backup_source",
        &state,
        &format!("{source} {user_id}"),
        "backup downloads from this address",
    )
    .await?;
    Limits::take_shared(
        &limits.backup_per_user,
        "backup_user",
        &state,
        &user_id,
        "backup downloads of this user",
    )
    .await?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownBackup,
            "no such backup of this user",
        )
    };
    let (meta, verifier, blob) = state
        .stores
        .backups
        .backup(&backup_id)
        .await?
        .ok_or_else(unknown)?;
    if meta.user_id != user_id {
        return Err(unknown());
    }
    if download_verifier(key) != verifier {
        tracing::warn!(%backup_id, "backup download with a wrong key");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "wrong download key (wrong passphrase?)",
        ));
    }
    Ok(Json(BackupDownload {
        info: info(&meta)?,
        blob,
    }))
}

/// Body limit of a key backup upload (the blob plus its JSON around it).
const MAX_BACKUP_BODY: usize = MAX_BACKUP_BYTES + 64 * 1024;

/// This module's routes; an upload may be larger than other requests (`max_body_bytes`).
pub fn router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/backups",
            post(upload).layer(DefaultBodyLimit::max(max_body_bytes.max(MAX_BACKUP_BODY))),
        )
        .route("/backups/{user_id}", get(list))
        .route("/backups/{user_id}/{backup_id}", get(download))
}
