//! Where the time comes from. Server and client both take it from a
//! [`Clock`], so tests move time instead of waiting for it.
use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;
    /// Now in Unix seconds.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
    /// Now in Unix seconds with a fraction (for rate limits).
    fn seconds(&self) -> f64 {
        self.now().unix_timestamp_nanos() as f64 / 1e9
    }
}

/// The system clock, truncated to microseconds (what PostgreSQL keeps).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        let t = OffsetDateTime::now_utc();
        t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
            .unwrap_or(t)
    }
}
