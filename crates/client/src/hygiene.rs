//! Prekey hygiene: one-time keys topped up, the fallback key rotated with a
//! grace period for messages already encrypted to the old one, and a
//! consistency check of what the server hands out against what this device
//! published (so key material corrupted in the database is found and revoked).
use crate::client::Client;
use crate::client::{MIN_ONE_TIME_KEYS, ONE_TIME_KEY_BATCH};
use crate::error::ClientError;
use crate::handles::Keys;
use atlas_proto::api::KeysUploadRequest;
use atlas_proto::api::{KeyCheckRequest, KeyCheckResponse, KeyCounts, PublishedKey};
use atlas_proto::keys::KeyType;
use reqwest::Method;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// A fallback key older than this is replaced (the old one stays usable for
/// [`crate::FALLBACK_GRACE`]).
pub const FALLBACK_ROTATION: Duration = Duration::days(7);
/// How often a syncing device runs the maintenance on its own.
const MAINTENANCE_EVERY: Duration = Duration::hours(1);

/// What one round of key maintenance did.
#[derive(Debug, Clone, Serialize)]
pub struct KeyMaintenance {
    /// The consistency check (and what it revoked).
    pub check: KeyCheckResponse,
    /// Whether the fallback key was rotated.
    pub fallback_rotated: bool,
    /// The server's key stock afterwards.
    pub counts: KeyCounts,
}

impl Client {
    /// Runs [`Client::maintain_keys`] when the last run is an hour old; a
    /// failure is logged, never a reason to fail the sync.
    pub(crate) async fn maintain_keys_if_due(&self) {
        let now = self.clock().now();
        let last = match self.local.get_text("keys_maintained_at").await {
            Ok(t) => t.and_then(|t| t.parse::<i64>().ok()),
            Err(e) => {
                tracing::warn!(error = %e, "key maintenance state unreadable");
                return;
            }
        };
        if last.is_some_and(|t| now.unix_timestamp() < t + MAINTENANCE_EVERY.whole_seconds()) {
            return;
        }
        if let Err(e) = self.keys().maintain(now).await {
            tracing::warn!(error = %e, "key maintenance failed");
        }
    }
}

impl Keys<'_> {
    /// Compares the keys the server holds for this device with what it
    /// published; with `repair`, the server revokes the ones that differ and
    /// fresh keys are published in their place.
    pub async fn check(&self, repair: bool) -> Result<KeyCheckResponse, ClientError> {
        let mut keys = self.local.published_keys().await?;
        {
            let account = self.account.lock().await;
            for (key_type, key) in [
                (KeyType::Ed25519, account.ed25519()),
                (KeyType::Curve25519, account.curve25519()),
            ] {
                keys.push(PublishedKey {
                    key_type,
                    key_id: format!("{key_type}:{}", self.device_id()),
                    key,
                });
            }
        }
        let answer: KeyCheckResponse = self
            .transport
            .call(
                Method::POST,
                "/keys/check",
                "",
                Some(&KeyCheckRequest { keys, repair }),
            )
            .await?;
        if answer.revoked > 0 {
            tracing::warn!(
                revoked = answer.revoked,
                "server held keys this device never published: revoked, publishing fresh ones"
            );
            self.keys().top_up(false).await?;
        }
        Ok(answer)
    }

    /// Checks (and repairs) the keys, drops a fallback key past its grace
    /// period, rotates the fallback key when it is due, and tops up one-time keys.
    pub async fn maintain(&self, now: OffsetDateTime) -> Result<KeyMaintenance, ClientError> {
        let check = self.keys().check(true).await?;
        self.forget_expired_fallback_key(now).await?;
        let published_at = self
            .local
            .get_text("fallback_published_at")
            .await?
            .and_then(|t| t.parse::<i64>().ok());
        let due = published_at
            .is_none_or(|t| now.unix_timestamp() >= t + FALLBACK_ROTATION.whole_seconds());
        if due {
            self.rotate_fallback_key_at(now).await?;
        }
        let counts = self.keys().top_up(false).await?;
        self.local
            .put(
                "keys_maintained_at",
                now.unix_timestamp().to_string().as_bytes(),
            )
            .await?;
        Ok(KeyMaintenance {
            check,
            fallback_rotated: due,
            counts,
        })
    }
}

impl Keys<'_> {
    /// Publishes one-time keys when the server's stock runs low (and a fallback key if none).
    pub async fn top_up(&self, force: bool) -> Result<KeyCounts, ClientError> {
        let counts: KeyCounts = self
            .transport
            .call::<(), _>(Method::GET, "/keys/count", "", None)
            .await?;
        self.forget_expired_fallback_key(self.clock().now()).await?;
        if !force && counts.one_time_keys >= MIN_ONE_TIME_KEYS && counts.fallback_key {
            return Ok(counts);
        }
        let mut account = self.account.lock().await;
        let wanted = (ONE_TIME_KEY_BATCH as u64).saturating_sub(counts.one_time_keys) as usize;
        let most = account.max_one_time_keys() / 2;
        let one_time_keys = account.generate_one_time_keys(wanted.min(most));
        let fallback_key = if counts.fallback_key {
            None
        } else {
            account.rotate_fallback_key()
        };
        let new_fallback = fallback_key.is_some();
        let counts = self
            .publish(
                &mut account,
                KeysUploadRequest {
                    one_time_keys,
                    fallback_key,
                },
            )
            .await?;
        if new_fallback {
            let now = self.clock().unix();
            self.local
                .put("fallback_published_at", now.to_string().as_bytes())
                .await?;
        }
        Ok(counts)
    }

    /// Publishes a new fallback key. The server marks the previous one `rotated`;
    /// this device keeps its private half for [`FALLBACK_GRACE`](crate::FALLBACK_GRACE).
    pub async fn rotate_fallback(&self) -> Result<KeyCounts, ClientError> {
        self.rotate_fallback_key_at(self.clock().now()).await
    }
}
