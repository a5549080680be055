//! A clock the test moves: the system clock plus an offset.
use atlas_server::Clock;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// The system clock plus an offset the test can move.
#[derive(Default)]
pub struct TestClock {
    offset_secs: AtomicI64,
}

impl TestClock {
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        let t = OffsetDateTime::now_utc()
            + time::Duration::seconds(self.offset_secs.load(Ordering::SeqCst));
        t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
    }
}
