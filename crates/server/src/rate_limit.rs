//! Per-key token buckets (per device, per device pair), in process: each
//! server process limits what it sees, which bounds a flood without shared state.
use std::collections::HashMap;
use std::sync::Mutex;

/// Keys tracked before idle (full) buckets are dropped.
const MAX_KEYS: usize = 10_000;

/// A token bucket per key: `burst` requests at once, refilled at `per_second`.
pub struct RateLimiter {
    /// Requests at once.
    pub burst: f64,
    /// Refill per second.
    pub per_second: f64,
    buckets: Mutex<HashMap<String, (f64, f64)>>,
}

impl RateLimiter {
    /// A limiter allowing `burst` at once and `per_minute` sustained.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at time `now` (seconds); false when the bucket is empty.
    pub fn allow(&self, key: &str, now: f64) -> bool {
        self.check(key, now).is_ok()
    }

    /// [`RateLimiter::allow`], or how many whole seconds until a token is back.
    pub fn check(&self, key: &str, now: f64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, (tokens, at)| *tokens + (now - *at) * rate < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + (now - *at).max(0.0) * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_key() {
        let limiter = RateLimiter::new(3, 60);
        assert!((0..3).all(|_| limiter.allow("a", 0.0)));
        assert!(!limiter.allow("a", 0.0));
        assert!(limiter.allow("b", 0.0), "keys are independent");
        assert!(!limiter.allow("a", 0.5));
        assert!(limiter.allow("a", 1.0), "one token per second at 60/min");
        assert_eq!(limiter.check("a", 1.0), Err(1));
        let slow = RateLimiter::new(1, 6);
        assert!(slow.allow("x", 0.0));
        assert_eq!(
            slow.check("x", 0.0),
            Err(10),
            "Retry-After: the next token's wait"
        );
    }
}
