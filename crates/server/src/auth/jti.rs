//! Replay detection for DPoP proofs: every `jti` is remembered until its proof
//! could no longer be accepted anyway. A proof id is recorded durably before
//! the request it authenticates is handled, so no proof is accepted twice —
//! not across a crash (kill -9) and restart, and not across server processes
//! sharing one database. Expired ids are pruned continuously in small batches.
use atlas_store::JtiStore;
use std::sync::Arc;

/// Cache key of a `jti`, the same in every backend (`dpop:jti:<JTI>` in Redis).
pub fn cache_key(jti: &str) -> String {
    format!("dpop:jti:{jti}")
}

/// Why the cache could not answer.
#[derive(Debug, thiserror::Error)]
pub enum JtiCacheError {
    /// The backing store failed.
    #[error("jti cache backend failed: {0}")]
    Backend(#[from] atlas_store::StoreError),
    /// Redis did not answer (in time) or refused the command.
    #[error("redis: {0}")]
    Redis(String),
}

impl From<JtiCacheError> for crate::error::ApiError {
    /// Fails closed: no proof is accepted unchecked, the client retries shortly.
    fn from(e: JtiCacheError) -> Self {
        match e {
            JtiCacheError::Backend(e) => e.into(),
            JtiCacheError::Redis(e) => {
                tracing::error!(error = %e, "the DPoP replay cache (Redis) is unavailable");
                Self::unavailable("the replay cache is unavailable, retry later", 1)
            }
        }
    }
}

/// Who used a proof id, for the operator reading the cache.
#[derive(Debug, Clone)]
pub struct JtiUse {
    /// When it was first used.
    pub at: time::OffsetDateTime,
    /// The request it authenticated, e.g. `POST /messages`.
    pub request: String,
    /// RFC 7638 thumbprint of the proof's key (the device's DPoP key).
    pub jkt: String,
    /// `USER_ID/DEVICE_ID` of the token it came with (none at `POST /token`).
    pub device: Option<String>,
}

/// Remembers proof ids.
#[async_trait::async_trait]
pub trait JtiCache: Send + Sync {
    /// Records `jti` until `expires_at` (Unix seconds), durably; false if it was
    /// already recorded (a replay).
    async fn insert_new(
        &self,
        jti: &str,
        expires_at: i64,
        used: &JtiUse,
    ) -> Result<bool, JtiCacheError>;
    /// Whether `jti` is recorded, and until when.
    async fn get(&self, jti: &str) -> Result<Option<i64>, JtiCacheError>;
    /// Forgets `jti` (clearing a false positive); true if it was recorded.
    async fn remove(&self, jti: &str) -> Result<bool, JtiCacheError>;
    /// Forgets up to `limit` ids that expired before `now`; how many.
    async fn prune(&self, now: i64, limit: u32) -> Result<u64, JtiCacheError>;
    /// Whether a send may record its proof id in the send's own transaction
    /// (the cache is the store's table), rather than before it.
    fn records_with_the_write(&self) -> bool;
}

/// The embedded cache: a table in the server's own database (SQLite: written in
/// the group commit with the sends; PostgreSQL: one statement).
pub struct StoreJtiCache {
    store: Arc<dyn JtiStore>,
}

impl StoreJtiCache {
    /// A cache over `store`. Nothing is loaded: start-up costs nothing however large the table.
    pub fn new(store: Arc<dyn JtiStore>) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl JtiCache for StoreJtiCache {
    async fn insert_new(
        &self,
        jti: &str,
        expires_at: i64,
        _used: &JtiUse,
    ) -> Result<bool, JtiCacheError> {
        Ok(self.store.insert_jti(jti, expires_at).await?)
    }

    async fn get(&self, jti: &str) -> Result<Option<i64>, JtiCacheError> {
        Ok(self.store.jti(jti).await?)
    }

    async fn remove(&self, jti: &str) -> Result<bool, JtiCacheError> {
        Ok(self.store.delete_jti(jti).await?)
    }

    async fn prune(&self, now: i64, limit: u32) -> Result<u64, JtiCacheError> {
        Ok(self.store.prune_jtis(now, limit).await?)
    }

    fn records_with_the_write(&self) -> bool {
        true
    }
}

/// Ids deleted per pruning statement: small enough not to hold the writer long.
pub const PRUNE_BATCH: u32 = 1000;

/// Deletes every expired id, a batch at a time, yielding between batches; how many.
pub async fn prune_expired(cache: &dyn JtiCache, now: i64) -> Result<u64, JtiCacheError> {
    let mut total = 0;
    loop {
        let deleted = cache.prune(now, PRUNE_BATCH).await?;
        total += deleted;
        if deleted < u64::from(PRUNE_BATCH) {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
