//! The server's own keys as the server uses them: sealed under the KEK on the
//! way into `server_keys`, opened on the way out. Nothing else reads that table.
use crate::error::ApiError;
use crate::kek::{Kek, KekError, Opened};
use atlas_store::{ServerKeyRecord, ServerKeyState, ServerKeyStore, StoreError};
use std::sync::Arc;
use time::OffsetDateTime;

/// `server_keys.purpose` of the access-token MAC key.
pub const ACCESS_TOKEN_PURPOSE: &str = "access-token";
/// `server_keys.purpose` of the DPoP nonce MAC key.
pub const NONCE_PURPOSE: &str = "dpop-nonce";
/// `server_keys.purpose` of the salt of group labels in `/metrics`.
pub const METRICS_LABEL_PURPOSE: &str = "metrics-label";

/// Why a server key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ServerKeyError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The secret does not open (wrong KEK or a tampered row).
    #[error(transparent)]
    Kek(#[from] KekError),
}

impl From<ServerKeyError> for ApiError {
    fn from(e: ServerKeyError) -> Self {
        match e {
            ServerKeyError::Store(e) => e.into(),
            e @ ServerKeyError::Kek(_) => ApiError::internal(e),
        }
    }
}

/// Sealing access to `server_keys`.
pub struct ServerKeys {
    store: Arc<dyn ServerKeyStore>,
    kek: std::sync::RwLock<Arc<Kek>>,
}

impl ServerKeys {
    /// Keys in `store`, sealed under `kek`.
    pub fn new(store: Arc<dyn ServerKeyStore>, kek: Kek) -> Self {
        Self {
            store,
            kek: std::sync::RwLock::new(Arc::new(kek)),
        }
    }

    /// The KEK in use.
    pub fn kek(&self) -> Arc<Kek> {
        self.kek.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Uses `kek` from now on (after a rotation, here or on another replica),
    /// and re-seals under it every secret still sealed under the KEK it
    /// replaces: one this process, or a replica that had not reloaded yet,
    /// wrote while the rotation ran. How many such stragglers there were.
    pub async fn adopt_kek(&self, kek: Kek) -> Result<usize, ServerKeyError> {
        let old = std::mem::replace(
            &mut *self.kek.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(kek),
        );
        let new = self.kek();
        let stragglers = std::sync::atomic::AtomicUsize::new(0);
        let reseal = |key: &ServerKeyRecord| -> Option<Vec<u8>> {
            if new.open(&key.purpose, &key.kid, &key.secret).is_ok() {
                return Some(key.secret.clone());
            }
            let secret = match old.open(&key.purpose, &key.kid, &key.secret).ok()? {
                Opened::Sealed(secret) | Opened::Legacy(secret) => secret,
            };
            stragglers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(new.seal(&key.purpose, &key.kid, &secret))
        };
        self.store.reseal_server_keys(&reseal).await?;
        Ok(stragglers.into_inner())
    }

    /// Re-seals every stored secret under `next`, in one transaction (all or
    /// nothing); how many. Destroyed secrets stay empty.
    pub async fn reseal_all(&self, next: &Kek) -> Result<usize, ServerKeyError> {
        let current = self.kek();
        let reseal = |key: &ServerKeyRecord| -> Option<Vec<u8>> {
            let secret = match current.open(&key.purpose, &key.kid, &key.secret).ok()? {
                Opened::Sealed(secret) | Opened::Legacy(secret) => secret,
            };
            Some(next.seal(&key.purpose, &key.kid, &secret))
        };
        Ok(self.store.reseal_server_keys(&reseal).await?)
    }

    fn sealed(&self, key: &ServerKeyRecord) -> ServerKeyRecord {
        ServerKeyRecord {
            secret: self.kek().seal(&key.purpose, &key.kid, &key.secret),
            ..key.clone()
        }
    }

    fn opened(&self, key: ServerKeyRecord) -> Result<ServerKeyRecord, KekError> {
        let secret = match self.kek().open(&key.purpose, &key.kid, &key.secret)? {
            Opened::Sealed(secret) | Opened::Legacy(secret) => secret,
        };
        Ok(ServerKeyRecord { secret, ..key })
    }

    /// The active key of `purpose`, created with `make` (and stored sealed) if there is none.
    pub async fn active(
        &self,
        purpose: &str,
        make: &(dyn Fn() -> ServerKeyRecord + Send + Sync),
    ) -> Result<ServerKeyRecord, ServerKeyError> {
        let make_sealed = || self.sealed(&make());
        let stored = self.store.server_key(purpose, &make_sealed).await?;
        Ok(self.opened(stored)?)
    }

    /// Every key of `purpose` with its lifecycle, newest first, opened.
    pub async fn all(&self, purpose: &str) -> Result<Vec<ServerKeyState>, ServerKeyError> {
        let mut keys = self.store.server_keys(purpose).await?;
        for state in &mut keys {
            state.key = self.opened(state.key.clone())?;
        }
        Ok(keys)
    }

    /// Makes `next` the active key of its purpose; the old one is published until `publish_until`.
    pub async fn rotate(
        &self,
        next: &ServerKeyRecord,
        publish_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), ServerKeyError> {
        Ok(self
            .store
            .rotate_server_key(&self.sealed(next), publish_until, now)
            .await?)
    }

    /// Revokes `kid`; `replacement` becomes active if `kid` was. False if there is no such key.
    pub async fn revoke(
        &self,
        purpose: &str,
        kid: &str,
        replacement: &ServerKeyRecord,
        now: OffsetDateTime,
    ) -> Result<bool, ServerKeyError> {
        Ok(self
            .store
            .revoke_server_key(purpose, kid, &self.sealed(replacement), now)
            .await?)
    }

    /// Emergency revocation of every key of `purposes` (secrets destroyed),
    /// `replacements` active instead, every refresh token revoked, in one
    /// transaction; the keys as they were, opened, and the refresh tokens revoked.
    pub async fn revoke_all(
        &self,
        purposes: &[&str],
        replacements: &[ServerKeyRecord],
        now: OffsetDateTime,
    ) -> Result<(Vec<ServerKeyState>, u64), ServerKeyError> {
        let sealed: Vec<ServerKeyRecord> = replacements.iter().map(|k| self.sealed(k)).collect();
        let (mut before, refresh) = self.store.revoke_keys_of(purposes, &sealed, now).await?;
        for state in &mut before {
            state.key = self.opened(state.key.clone())?;
        }
        Ok((before, refresh))
    }

    /// Seals every key of `purposes` still stored plain (written before sealing existed)
    /// and checks that every sealed one opens under this KEK; how many it sealed.
    pub async fn seal_legacy(&self, purposes: &[&str]) -> Result<usize, ServerKeyError> {
        let mut sealed = 0;
        for purpose in purposes {
            for state in self.store.server_keys(purpose).await? {
                let key = state.key;
                // A destroyed secret (emergency revocation) has nothing to seal.
                if key.secret.is_empty() {
                    continue;
                }
                if let Opened::Legacy(secret) =
                    self.kek().open(&key.purpose, &key.kid, &key.secret)?
                {
                    let row = self.sealed(&ServerKeyRecord { secret, ..key });
                    self.store
                        .replace_server_key_secret(&row.kid, &row.secret)
                        .await?;
                    sealed += 1;
                }
            }
        }
        Ok(sealed)
    }
}
