//! Redis, for what the replicas of one deployment share: the DPoP replay
//! cache, under exactly the keys the runbook reads and deletes (`redis-cli GET
//! "dpop:jti:<JTI>"`), and the rate limits that guard secrets (fan-out and
//! control events: `redis_fanout`, `control`). Every command has a short deadline, so
//! a Redis outage fails requests closed (503) instead of hanging them, and the
//! connection is re-established by itself when Redis returns.
use crate::auth::jti::{JtiCache, JtiCacheError, JtiUse, cache_key};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Longest wait for one Redis answer before the request fails closed.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to Redis, shared by every task of the server.
#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
}

impl Redis {
    /// Prepares a connection to `url` (`redis://[:PASSWORD@]HOST[:PORT][/DB]`;
    /// no TLS in this build). A malformed URL is refused now; a Redis that is
    /// down is not, so the server starts and turns ready when Redis answers.
    pub fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, base_config())?,
        })
    }

    /// A handle on the shared connection.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// A connection of its own for subscriptions (RESP3): messages on its
    /// channels go to `pushes`, and it resubscribes by itself after a reconnect.
    pub fn subscriber(
        &self,
        url: &str,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Result<ConnectionManager, redis::RedisError> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let client = redis::Client::open(info)?;
        let config = base_config()
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        ConnectionManager::new_lazy_with_config(client, config)
    }

    /// Whether Redis answers a `PING`.
    pub async fn ping(&self) -> bool {
        let mut c = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }
}

/// Deadlines and reconnection of every Redis connection.
fn base_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// What Redis keeps for a proof id: enough for an operator to tell whose and
/// which request it was (`redis-cli GET "dpop:jti:<JTI>"` shows it).
#[derive(serde::Serialize, serde::Deserialize)]
struct JtiRecord {
    first_used_at: String,
    request: String,
    device: Option<String>,
    jkt: String,
    expires_at: i64,
}

/// The replay cache in Redis: `SET dpop:jti:<JTI> <record> NX EX <seconds>`,
/// the seconds the proof could still be accepted; Redis expires it then.
pub struct RedisJtiCache {
    redis: Redis,
}

impl RedisJtiCache {
    /// A cache on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

#[async_trait::async_trait]
impl JtiCache for RedisJtiCache {
    async fn insert_new(
        &self,
        jti: &str,
        expires_at: i64,
        used: &JtiUse,
    ) -> Result<bool, JtiCacheError> {
        let now = used.at.unix_timestamp();
        let record = JtiRecord {
            first_used_at: atlas_proto::timestamp::Timestamp::from(used.at).to_string(),
            request: used.request.clone(),
            device: used.device.clone(),
            jkt: used.jkt.clone(),
            expires_at,
        };
        let value =
            serde_json::to_string(&record).map_err(|e| JtiCacheError::Redis(e.to_string()))?;
        let mut c = self.redis.connection.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(cache_key(jti))
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg((expires_at - now).max(1))
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        Ok(set.is_some())
    }

    async fn get(&self, jti: &str) -> Result<Option<i64>, JtiCacheError> {
        let mut c = self.redis.connection.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(cache_key(jti))
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        Ok(value.map(|v| {
            // A key set by hand (`redis-cli SET`) still counts as seen.
            serde_json::from_str::<JtiRecord>(&v).map_or(0, |r| r.expires_at)
        }))
    }

    async fn remove(&self, jti: &str) -> Result<bool, JtiCacheError> {
        let mut c = self.redis.connection.clone();
        let removed: i64 = redis::cmd("DEL")
            .arg(cache_key(jti))
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        Ok(removed > 0)
    }

    async fn prune(&self, _now: i64, _limit: u32) -> Result<u64, JtiCacheError> {
        // Redis expires each key itself.
        Ok(0)
    }

    fn records_with_the_write(&self) -> bool {
        false
    }
}

fn redis_error(e: redis::RedisError) -> JtiCacheError {
    JtiCacheError::Redis(e.to_string())
}

/// A token bucket in Redis, atomic (one Lua script) and timed by Redis's own
/// clock, so every replica draws from the same bucket of a key.
const TOKEN_BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1, math.ceil((1 - tokens) / rate))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return wait
";

impl Redis {
    /// Takes a token from the shared bucket `key` (`burst` at once, `per_second`
    /// refill): `Ok(None)` when one was there, `Ok(Some(seconds))` to wait.
    pub async fn take_token(
        &self,
        key: &str,
        burst: f64,
        per_second: f64,
    ) -> Result<Option<u64>, redis::RedisError> {
        let mut c = self.connection.clone();
        let wait: u64 = redis::cmd("EVAL")
            .arg(TOKEN_BUCKET)
            .arg(1)
            .arg(format!("atlas:limit:{key}"))
            .arg(burst)
            .arg(per_second)
            .query_async(&mut c)
            .await?;
        Ok((wait > 0).then_some(wait))
    }
}
