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
use atlas_proto::audit::{AuditOutcome, NewAuditEntry};
use atlas_proto::emergency::{KeyKind, RevokeKeysView, RevokedKey};

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
    })
}

/// Revokes `kind` and records what was revoked (public parts only) in the audit log.
pub async fn revoke(
    state: &AppState,
    kind: KeyKind,
    operator: &OperatorAuth,
    source: &str,
) -> Result<RevokeKeysView, ApiError> {
    let view = match kind {
        KeyKind::Signing => revoke_signing(state).await?,
        KeyKind::Encryption => revoke_encryption(state).await?,
    };
    tracing::warn!(token_id = %operator.token_id, kind = kind.as_str(), revoked = view.revoked.len(), "emergency key revocation");
    let detail = serde_json::json!({
        "revoked": view.revoked,
        "installed": view.installed,
        "refresh_tokens_revoked": view.refresh_tokens_revoked,
    });
    let _ = state
        .audit
        .record(NewAuditEntry {
            at: view.at,
            actor: operator.token_id.clone(),
            actor_label: operator.label.clone(),
            source: source.to_owned(),
            action: "keys.revoke".into(),
            target: kind.as_str().into(),
            outcome: AuditOutcome::Ok,
            detail: detail.to_string(),
        })
        .await;
    Ok(view)
}
