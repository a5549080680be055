//! Emergency key revocation (seed 004 §3.3), one audited transaction per kind.
//! Unlike `revoke-keys.sh`, nothing private is archived: the secrets are
//! destroyed in the database, and only public parts and metadata are kept, in
//! the audit log.
use crate::auth::operator::OperatorAuth;
use crate::control::ControlEvent;
use crate::error::ApiError;
use crate::receipts::{SIGNING_PURPOSE, new_signing_key};
use crate::server_keys::{ACCESS_TOKEN_PURPOSE, NONCE_PURPOSE};
use crate::state::AppState;
use atlas_crypto::jws::HmacJwsKey;
use atlas_proto::api::PushEvent;
use atlas_proto::audit::{AuditOutcome, NewAuditEntry};
use atlas_proto::emergency::{KeyKind, RevokeKeysView, RevokedKey};
use atlas_proto::repair::SessionResetNotice;
use atlas_proto::{DeviceId, SessionId, UserId};

fn secret32(key: &atlas_store::ServerKeyRecord) -> Result<[u8; 32], ApiError> {
    key.secret
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::internal("a new server key is not 32 bytes"))
}

/// `signing`: every receipt-signing key revoked and replaced, the access-token
/// and nonce keys replaced, every refresh token revoked; every replica drops
/// what it cached and closes its sockets.
async fn revoke_signing(state: &AppState) -> Result<RevokeKeysView, ApiError> {
    let now = state.clock.now();
    let receipt = new_signing_key(now);
    let token = crate::new_hmac_key(ACCESS_TOKEN_PURPOSE, now);
    let nonce = crate::new_hmac_key(NONCE_PURPOSE, now);
    let (before, refresh) = state
        .keys
        .revoke_all(
            &[SIGNING_PURPOSE, ACCESS_TOKEN_PURPOSE, NONCE_PURPOSE],
            &[receipt.clone(), token.clone(), nonce.clone()],
            now,
        )
        .await?;
    let revoked = before
        .into_iter()
        .map(|k| RevokedKey {
            public_jwk: (k.key.purpose == SIGNING_PURPOSE)
                .then(|| atlas_crypto::receipt::published_jwk(&k.key.kid, &k.key.secret).ok())
                .flatten(),
            purpose: k.key.purpose,
            kid: k.key.kid,
            alg: k.key.alg,
            was: k.status,
        })
        .collect();
    state
        .tokens
        .install(HmacJwsKey::new(secret32(&token)?), token.kid.clone());
    state.nonces.install(secret32(&nonce)?);
    state.announce(ControlEvent::SigningKeysChanged).await;
    state.announce(ControlEvent::TokenKeyRotated).await;
    Ok(RevokeKeysView {
        kind: KeyKind::Signing,
        at: now.into(),
        revoked,
        installed: vec![receipt.kid, token.kid, nonce.kid],
        refresh_tokens_revoked: refresh,
        devices_to_rekey: 0,
    })
}

/// `encryption`: a new KEK written beside the old one, every stored secret
/// re-sealed under it in one transaction, then the old KEK file overwritten
/// and replaced, and every replica told to reload it. Refused, with nothing
/// changed, where the KEK file cannot be written (a read-only Kubernetes
/// Secret: rotate it there).
async fn revoke_encryption(state: &AppState) -> Result<RevokeKeysView, ApiError> {
    use crate::kek::Kek;
    use atlas_proto::ErrorCode;
    use axum::http::StatusCode;
    let now = state.clock.now();
    let path = &state.kek_file;
    let next_path = Kek::next_path(path);
    if next_path.exists() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidRequest,
            "an earlier KEK rotation did not finish: restart the server to complete it, then retry",
        ));
    }
    let next = Kek::create_new(&next_path).map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidRequest,
            format!(
                "cannot write a new KEK beside the current one ({e}); nothing changed. \
                 Where the KEK is a read-only mount, rotate it there"
            ),
        )
    })?;
    let old = state.keys.kek().fingerprint();
    let resealed = match state.keys.reseal_all(&next).await {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&next_path);
            return Err(e.into());
        }
    };
    let installed = next.fingerprint();
    if let Err(e) = state.keys.adopt_kek(next).await {
        tracing::error!(error = %e, "secrets written during the KEK rotation could not be re-sealed");
    }
    // The database is sealed under the next KEK now; if this fails, a restart
    // finishes it (open_server_keys), so say so rather than undo.
    Kek::promote_next(path).map_err(|e| {
        ApiError::internal(format!(
            "secrets re-sealed, but the new KEK could not replace the old file ({e}): restart the server to finish"
        ))
    })?;
    state.announce(ControlEvent::KekChanged).await;
    Ok(RevokeKeysView {
        kind: KeyKind::Encryption,
        at: now.into(),
        revoked: vec![RevokedKey {
            purpose: "kek".into(),
            kid: old,
            alg: format!("XChaCha20-Poly1305, {resealed} secrets re-sealed"),
            was: "active".into(),
            public_jwk: None,
        }],
        installed: vec![installed],
        refresh_tokens_revoked: 0,
        devices_to_rekey: 0,
    })
}

/// An Ed25519 or X25519 public key (unpadded standard base64) as a JWK.
fn okp_jwk(crv: &str, key: &str) -> Option<serde_json::Value> {
    let bytes = atlas_proto::b64::decode_std_lenient(key).ok()?;
    Some(serde_json::json!({"kty": "OKP", "crv": crv, "x": atlas_proto::b64::encode(bytes)}))
}

/// `identity`: the identity keys of every active device (or `user`'s) and the
/// user identity keys that certify them; the devices must re-key, and every
/// replica closes their sockets with `rekey_required`.
async fn revoke_identity(
    state: &AppState,
    user: Option<&UserId>,
    operator: &OperatorAuth,
) -> Result<RevokeKeysView, ApiError> {
    let now = state.clock.now();
    let requested_by = format!("operator:{}", operator.token_id);
    let done = state
        .stores
        .identities
        .revoke_identities(user, &requested_by, now)
        .await?;
    let mut revoked = Vec::new();
    for u in &done.users {
        revoked.push(RevokedKey {
            purpose: "user-identity".into(),
            kid: u.user_id.to_string(),
            alg: "Ed25519".into(),
            was: if u.identity_key.is_some() {
                "active"
            } else {
                "revoked"
            }
            .into(),
            public_jwk: u
                .identity_key
                .as_deref()
                .and_then(|k| okp_jwk("Ed25519", k)),
        });
    }
    for d in &done.devices {
        for (purpose, crv, key) in [
            ("device-signing", "Ed25519", &d.ed25519),
            ("device-identity", "X25519", &d.curve25519),
        ] {
            revoked.push(RevokedKey {
                purpose: purpose.into(),
                kid: format!("{}/{}", d.user_id, d.device_id),
                alg: crv.into(),
                was: "active".into(),
                public_jwk: okp_jwk(crv, key),
            });
        }
    }
    match user {
        Some(_) => {
            // Peers online now stop encrypting on those sessions at once.
            for (peer, device, session_id) in &done.sessions_reset {
                let (Ok(peer), Ok(device), Ok(session_id)) = (
                    UserId::new(peer.as_str()),
                    DeviceId::new(device.as_str()),
                    SessionId::new(session_id.as_str()),
                ) else {
                    continue;
                };
                let notice = SessionResetNotice { session_id };
                state
                    .fanout
                    .publish_notice(&peer, &device, PushEvent::SessionReset(notice));
            }
            for d in &done.devices {
                state
                    .announce(ControlEvent::DeviceRekey(
                        d.user_id.clone(),
                        d.device_id.clone(),
                    ))
                    .await;
            }
        }
        None => state.announce(ControlEvent::AllRekey).await,
    }
    tracing::warn!(
        devices = done.devices.len(),
        sessions_reset = done.sessions_reset.len(),
        "identity keys revoked: those devices must re-key"
    );
    Ok(RevokeKeysView {
        kind: KeyKind::Identity,
        at: now.into(),
        revoked,
        installed: Vec::new(),
        refresh_tokens_revoked: done.refresh_tokens,
        devices_to_rekey: done.devices.len() as u64,
    })
}

/// Largest `detail` written in one audit entry; a long revocation spans several.
const AUDIT_DETAIL_BUDGET: usize = 6_000;

/// Records `view` (public parts only), in as many entries as it takes.
async fn record(
    state: &AppState,
    view: &RevokeKeysView,
    target: &str,
    operator: &OperatorAuth,
    source: &str,
) {
    let mut chunks: Vec<Vec<&RevokedKey>> = vec![Vec::new()];
    let mut size = 0;
    for key in &view.revoked {
        let len = serde_json::to_string(key).map_or(0, |s| s.len());
        if size + len > AUDIT_DETAIL_BUDGET && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(key);
        }
    }
    let parts = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut detail = serde_json::json!({
            "revoked": chunk,
            "installed": view.installed,
            "refresh_tokens_revoked": view.refresh_tokens_revoked,
            "devices_to_rekey": view.devices_to_rekey,
        });
        if parts > 1 {
            detail["part"] = serde_json::json!(format!("{}/{parts}", i + 1));
        }
        let _ = state
            .audit
            .record(NewAuditEntry {
                at: view.at,
                actor: operator.token_id.clone(),
                actor_label: operator.label.clone(),
                source: source.to_owned(),
                action: "keys.revoke".into(),
                target: target.to_owned(),
                outcome: AuditOutcome::Ok,
                detail: detail.to_string(),
            })
            .await;
    }
}

/// Revokes one kind and records it.
async fn revoke_one(
    state: &AppState,
    kind: KeyKind,
    user: Option<&UserId>,
    operator: &OperatorAuth,
    source: &str,
) -> Result<RevokeKeysView, ApiError> {
    let view = match kind {
        KeyKind::Signing => revoke_signing(state).await?,
        KeyKind::Encryption => revoke_encryption(state).await?,
        KeyKind::Identity => revoke_identity(state, user, operator).await?,
        KeyKind::All => return Err(ApiError::internal("`all` is not one kind")),
    };
    tracing::warn!(token_id = %operator.token_id, kind = kind.as_str(), revoked = view.revoked.len(), "emergency key revocation");
    let target = match user {
        Some(user) => format!("{}:{user}", kind.as_str()),
        None => kind.as_str().to_owned(),
    };
    record(state, &view, &target, operator, source).await;
    Ok(view)
}

/// Revokes `kind` (`all`: identity, then signing, then encryption, each its own
/// transaction and audit entry) and records what was revoked (public parts only).
pub async fn revoke(
    state: &AppState,
    kind: KeyKind,
    user: Option<&UserId>,
    operator: &OperatorAuth,
    source: &str,
) -> Result<RevokeKeysView, ApiError> {
    if user.is_some() && kind != KeyKind::Identity {
        return Err(ApiError::invalid(
            "user_id applies to `identity` only: signing and encryption keys are the server's",
        ));
    }
    if kind != KeyKind::All {
        return revoke_one(state, kind, user, operator, source).await;
    }
    let mut all = RevokeKeysView {
        kind: KeyKind::All,
        at: state.clock.now().into(),
        revoked: Vec::new(),
        installed: Vec::new(),
        refresh_tokens_revoked: 0,
        devices_to_rekey: 0,
    };
    for kind in [KeyKind::Identity, KeyKind::Signing, KeyKind::Encryption] {
        let view = revoke_one(state, kind, None, operator, source).await?;
        all.revoked.extend(view.revoked);
        all.installed.extend(view.installed);
        all.refresh_tokens_revoked += view.refresh_tokens_revoked;
        all.devices_to_rekey += view.devices_to_rekey;
    }
    Ok(all)
}
