//! Replay detection for DPoP proofs: every `jti` is remembered until its proof
//! could no longer be accepted anyway. The embedded cache keeps entries in
//! memory (the check is on every request) and writes them behind to the
//! store, so a restarted server still refuses proofs seen before the restart.
use atlas_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// Cache key of a `jti`, the same in every backend (`dpop:jti:<JTI>` in Redis).
pub fn cache_key(jti: &str) -> String {
    format!("dpop:jti:{jti}")
}

/// Why the cache could not answer.
#[derive(Debug, thiserror::Error)]
pub enum JtiCacheError {
    /// The backing store failed.
    #[error("jti cache backend failed: {0}")]
    Backend(String),
}

/// Remembers proof ids.
#[async_trait::async_trait]
pub trait JtiCache: Send + Sync {
    /// Records `jti` until `expires_at` (Unix seconds); false if it was already recorded (a replay).
    async fn insert_new(&self, jti: &str, expires_at: i64) -> Result<bool, JtiCacheError>;
    /// Whether `jti` is recorded, and until when.
    async fn get(&self, jti: &str) -> Result<Option<i64>, JtiCacheError>;
    /// Forgets `jti` (clearing a false positive); true if it was recorded.
    async fn remove(&self, jti: &str) -> Result<bool, JtiCacheError>;
    /// Persists what is only in memory (called periodically and at shutdown).
    async fn flush(&self) -> Result<(), JtiCacheError>;
}

#[derive(Default)]
struct Entries {
    live: HashMap<String, i64>,
    unsaved: Vec<(String, i64)>,
}

/// The embedded cache: memory plus write-behind to the server's store.
pub struct EmbeddedJtiCache {
    entries: Mutex<Entries>,
    store: Arc<dyn Store>,
}

fn to_time(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl EmbeddedJtiCache {
    /// Loads the unexpired `jti`s saved before the last shutdown.
    pub async fn load(store: Arc<dyn Store>, now: OffsetDateTime) -> Result<Self, JtiCacheError> {
        let saved = store
            .load_jtis(now)
            .await
            .map_err(|e| JtiCacheError::Backend(e.to_string()))?;
        let live = saved
            .into_iter()
            .map(|(jti, exp)| (jti, exp.unix_timestamp()))
            .collect();
        Ok(Self {
            entries: Mutex::new(Entries {
                live,
                unsaved: Vec::new(),
            }),
            store,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding this lock cannot leave the map inconsistent, so recover from poisoning.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops entries that expired before `now` from memory.
    pub fn prune(&self, now: i64) {
        self.lock().live.retain(|_, exp| *exp > now);
    }
}

#[async_trait::async_trait]
impl JtiCache for EmbeddedJtiCache {
    async fn insert_new(&self, jti: &str, expires_at: i64) -> Result<bool, JtiCacheError> {
        let mut entries = self.lock();
        if entries.live.contains_key(jti) {
            return Ok(false);
        }
        entries.live.insert(jti.to_owned(), expires_at);
        entries.unsaved.push((jti.to_owned(), expires_at));
        Ok(true)
    }

    async fn get(&self, jti: &str) -> Result<Option<i64>, JtiCacheError> {
        Ok(self.lock().live.get(jti).copied())
    }

    async fn remove(&self, jti: &str) -> Result<bool, JtiCacheError> {
        let was = {
            let mut entries = self.lock();
            entries.unsaved.retain(|(j, _)| j != jti);
            entries.live.remove(jti).is_some()
        };
        let stored = self
            .store
            .delete_jti(jti)
            .await
            .map_err(|e| JtiCacheError::Backend(e.to_string()))?;
        Ok(was || stored)
    }

    async fn flush(&self) -> Result<(), JtiCacheError> {
        let batch: Vec<(String, OffsetDateTime)> = std::mem::take(&mut self.lock().unsaved)
            .into_iter()
            .map(|(j, e)| (j, to_time(e)))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.save_jtis(&batch).await {
            // Keep them for the next flush rather than forgetting them.
            self.lock()
                .unsaved
                .extend(batch.into_iter().map(|(j, e)| (j, e.unix_timestamp())));
            return Err(JtiCacheError::Backend(e.to_string()));
        }
        Ok(())
    }
}
