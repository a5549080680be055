//! The measured window of a run: a warm-up, then the measured seconds, with a
//! progress line on stderr and the CPU both processes used in between.
use super::proc_stat::cpu_seconds;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a run warms up, measures and ends.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The run's start.
    pub start: Instant,
    /// The end of the warm-up.
    pub measure_from: Instant,
    /// The end of the run.
    pub end: Instant,
}

/// CPU seconds used in the measured part of a window.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuUsed {
    /// By the server (with its process id).
    pub server: Option<f64>,
    /// By this load generator.
    pub client: Option<f64>,
}

impl CpuUsed {
    /// Microseconds of server and client CPU per unit of work.
    pub fn per(self, units: u64) -> (Option<f64>, Option<f64>) {
        let per = |s: Option<f64>| s.filter(|_| units > 0).map(|s| s / units as f64 * 1e6);
        (per(self.server), per(self.client))
    }
}

impl Window {
    /// A window starting now.
    pub fn new(warmup_secs: u64, duration_secs: u64) -> Self {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs(warmup_secs);
        Self {
            start,
            measure_from,
            end: measure_from + Duration::from_secs(duration_secs),
        }
    }

    /// Whether work started at `at` and finished now counts.
    pub fn counts(&self, at: Instant) -> bool {
        at >= self.measure_from && Instant::now() <= self.end
    }

    /// Shows `done` (what the scenario counts, named `what`) twice a second
    /// until the end, and measures the CPU used while measuring: the servers'
    /// summed over `server_pids` (one gone before the end counts nothing).
    pub async fn watch(&self, done: &AtomicU64, what: &str, server_pids: &[u32]) -> CpuUsed {
        let me = std::process::id();
        let read = || {
            let servers: Vec<Option<f64>> = server_pids.iter().map(|&p| cpu_seconds(p)).collect();
            (servers, cpu_seconds(me))
        };
        let mut at_start = None;
        let mut last = (Instant::now(), 0u64);
        while Instant::now() < self.end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = Instant::now();
            if at_start.is_none() && now >= self.measure_from {
                at_start = Some(read());
            }
            let count = done.load(Ordering::Relaxed);
            let rate = count.saturating_sub(last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, count);
            let phase = if now < self.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            eprint!(
                "\r{phase} {:>5.1} s  {what} {count}  {rate:>7.0}/s   ",
                now.duration_since(self.start).as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        eprintln!();
        let at_end = read();
        let (server_start, client_start) = at_start.unwrap_or_else(|| at_end.clone());
        let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let servers: Vec<f64> = server_start
            .into_iter()
            .zip(at_end.0)
            .filter_map(|(a, b)| used(a, b))
            .collect();
        CpuUsed {
            server: (!servers.is_empty()).then(|| servers.iter().sum()),
            client: used(client_start, at_end.1),
        }
    }
}

/// Paces one sender's requests: the next request number and its start time,
/// at `interval` apart when given (`--rate`), until the window ends.
pub struct Pacer {
    interval: Option<Duration>,
    next: Instant,
    n: u64,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(interval: Option<Duration>) -> Self {
        Self {
            interval,
            next: Instant::now(),
            n: 0,
        }
    }

    /// Waits for the next request's turn; `None` once `window` has ended.
    pub async fn tick(&mut self, window: &Window) -> Option<(u64, Instant)> {
        if let Some(interval) = self.interval {
            tokio::time::sleep_until(self.next.into()).await;
            self.next += interval;
        }
        let now = Instant::now();
        self.n += 1;
        (now < window.end).then_some((self.n, now))
    }
}
