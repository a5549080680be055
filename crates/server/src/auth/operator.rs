//! Operator authentication for the admin API: `Authorization: Bearer <token>`
//! with a token made by `atlas admin token create` on the server host. Only a
//! hash is stored; each token carries scopes and can be revoked.
use crate::error::ApiError;
use crate::state::AppState;
use atlas_proto::{ErrorCode, OperatorScope};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

/// Prefix of every operator token, so one pasted in the wrong place is recognisable.
pub const TOKEN_PREFIX: &str = "atlas-op.";

/// Makes a new operator token: the secret to hand out once, and the record to store.
pub fn new_token(
    scopes: &[OperatorScope],
    label: String,
    now: time::OffsetDateTime,
    lifetime: time::Duration,
) -> (String, atlas_store::OperatorTokenRecord) {
    let token_id = hex_id();
    let token = format!(
        "{TOKEN_PREFIX}{token_id}.{}",
        atlas_proto::b64::encode(atlas_crypto::random_bytes::<32>())
    );
    let record = atlas_store::OperatorTokenRecord {
        token_id,
        token_hash: Sha256::digest(token.as_bytes()).to_vec(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        label,
        created_at: now,
        expires_at: Some(now + lifetime),
    };
    (token, record)
}

fn hex_id() -> String {
    atlas_crypto::random_bytes::<6>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A request made with a valid operator token.
#[derive(Debug, Clone)]
pub struct OperatorAuth {
    /// The token's public id (what the audit trail names).
    pub token_id: String,
    /// Its label (who it was made for), perhaps empty.
    pub label: String,
    /// Its scopes.
    pub scopes: Vec<OperatorScope>,
}

impl OperatorAuth {
    /// Refuses with 403 `insufficient_scope` unless the token has `scope` (or `all`).
    pub fn require(&self, scope: OperatorScope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s.grants(scope)) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            format!("operator token lacks scope '{scope}'"),
        ))
    }
}

fn bearer_error(description: &str) -> ApiError {
    ApiError::bearer_challenge(ErrorCode::InvalidToken, description)
}

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        refuse_unlisted_addresses(parts, state)?;
        let (scheme, token) = super::authorization(parts)
            .ok_or_else(|| bearer_error("missing Authorization: Bearer <operator token>"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with(TOKEN_PREFIX) {
            return Err(bearer_error(
                "admin routes need an operator token (atlas admin token create) as Bearer",
            ));
        }
        let record = state
            .stores
            .operator_tokens
            .operator_token(&Sha256::digest(token.as_bytes()))
            .await?;
        let record = record.ok_or_else(|| bearer_error("operator token is unknown or revoked"))?;
        if record
            .expires_at
            .is_some_and(|until| until <= state.clock.now())
        {
            return Err(bearer_error(
                "operator token expired (make a new one with atlas admin token create)",
            ));
        }
        if let Some(slot) = parts.extensions.get::<crate::audit_layer::AuditSlot>() {
            slot.set(&record.token_id, &record.label);
        }
        tracing::info!(token_id = %record.token_id, path = %parts.uri.path(), method = %parts.method, "operator request");
        let kind = if parts.method == axum::http::Method::GET {
            "read"
        } else {
            "write"
        };
        state.metrics.admin_request(&record.token_id, kind);
        Ok(OperatorAuth {
            token_id: record.token_id,
            label: record.label,
            // A scope this server does not know (a newer one, say) grants nothing.
            scopes: record
                .scopes
                .iter()
                .filter_map(|s| OperatorScope::parse(s))
                .collect(),
        })
    }
}

/// With `--admin-allow`, refuses admin requests from other addresses before
/// their token is looked at ("key access from unexpected sources", seed 004 §5.2).
fn refuse_unlisted_addresses(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    let allowed = &state.config.admin_allow;
    if allowed.is_empty() {
        return Ok(());
    }
    let ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if ip.is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip))) {
        return Ok(());
    }
    state.metrics.admin_refused("address");
    tracing::warn!(address = ?ip, path = %parts.uri.path(), "admin request from outside --admin-allow refused");
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        "admin requests are not accepted from this address",
    ))
}

/// The scope an [`Admin`] extractor demands.
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope.
    const SCOPE: OperatorScope;
}

/// An operator request whose token holds the scope `S` names: a handler that
/// takes `Admin<scope::Mls>` is an MLS admin route, checked before it runs.
pub struct Admin<S: RequiredScope> {
    /// The authenticated operator.
    pub operator: OperatorAuth,
    scope: std::marker::PhantomData<S>,
}

impl<S: RequiredScope> std::ops::Deref for Admin<S> {
    type Target = OperatorAuth;

    fn deref(&self) -> &OperatorAuth {
        &self.operator
    }
}

impl<S: RequiredScope> FromRequestParts<AppState> for Admin<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let operator = OperatorAuth::from_request_parts(parts, state).await?;
        operator.require(S::SCOPE)?;
        Ok(Self {
            operator,
            scope: std::marker::PhantomData,
        })
    }
}

/// The marker types of [`Admin`], one per scope.
pub mod scope {
    use super::{OperatorScope, RequiredScope};

    macro_rules! markers {
        ($($name:ident),* $(,)?) => {$(
            #[doc = concat!("Needs the `", stringify!($name), "` scope.")]
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: OperatorScope = OperatorScope::$name;
            }
        )*};
    }

    markers!(
        Alerts, Audit, Devices, Diagnose, Dpop, Emergency, Incidents, Keys, Messages, Mls,
        Receipts, Recovery
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_gate_routes_and_all_opens_every_one() {
        let dpop_only = OperatorAuth {
            token_id: "t".into(),
            label: String::new(),
            scopes: vec![OperatorScope::Dpop],
        };
        assert!(dpop_only.require(OperatorScope::Dpop).is_ok());
        assert_eq!(
            dpop_only
                .require(OperatorScope::Receipts)
                .unwrap_err()
                .code(),
            ErrorCode::InsufficientScope
        );
        let all = OperatorAuth {
            token_id: "t".into(),
            label: String::new(),
            scopes: vec![OperatorScope::All],
        };
        assert!(all.require(OperatorScope::Receipts).is_ok());
    }

    #[test]
    fn new_tokens_are_prefixed_and_only_hashed() {
        let (token, record) = new_token(
            &[OperatorScope::Dpop],
            "x".into(),
            time::OffsetDateTime::UNIX_EPOCH,
            time::Duration::hours(1),
        );
        assert_eq!(
            record.expires_at,
            Some(time::OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1))
        );
        assert!(token.starts_with(&format!("{TOKEN_PREFIX}{}.", record.token_id)));
        assert_eq!(record.token_hash, Sha256::digest(token.as_bytes()).to_vec());
    }
}
