//! What a bench run measured, as text or JSON.
use serde::Serialize;
use std::collections::BTreeMap;

/// The result of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: &'static str,
    /// The server loaded.
    pub server: String,
    /// Concurrent senders.
    pub senders: u32,
    /// Measured seconds.
    pub seconds: f64,
    /// Answered sends in the measured time.
    pub messages: u64,
    /// Of them per second.
    pub messages_per_second: f64,
    /// Latency percentiles, milliseconds.
    pub latency_ms: Latency,
    /// Refused or failed sends by error code (HTTP status when the body had none).
    pub errors: BTreeMap<String, u64>,
    /// Server CPU per answered send, microseconds (with `--server-pid`).
    pub server_cpu_us_per_message: Option<f64>,
    /// Server peak resident memory, MiB (with `--server-pid`).
    pub server_peak_rss_mib: Option<f64>,
    /// This load generator's CPU per answered send, microseconds.
    pub client_cpu_us_per_message: Option<f64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles of `micros` (sorted here).
    pub fn of(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        let at = |p: f64| {
            let i = ((micros.len() as f64 * p) as usize).min(micros.len().saturating_sub(1));
            micros.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

impl Report {
    /// The report for people.
    pub fn print(&self) {
        crate::output::outln!(
            "{}: {} senders against {}, {:.0} s measured",
            self.scenario,
            self.senders,
            self.server,
            self.seconds
        );
        crate::output::outln!(
            "  messages/s: {:.0} ({} answered)",
            self.messages_per_second,
            self.messages
        );
        let l = &self.latency_ms;
        crate::output::outln!(
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
        if self.errors.is_empty() {
            crate::output::outln!("  errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(c, n)| format!("{c} × {n}"))
                .collect();
            crate::output::outln!("  errors: {}", list.join(", "));
        }
        if let Some(cpu) = self.server_cpu_us_per_message {
            crate::output::outln!("  server CPU per message: {cpu:.0} µs");
        }
        if let Some(rss) = self.server_peak_rss_mib {
            crate::output::outln!("  server peak RSS: {rss:.0} MiB");
        }
        if let Some(cpu) = self.client_cpu_us_per_message {
            crate::output::outln!("  load generator CPU per message: {cpu:.0} µs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let l = Latency::of((1..=1000).rev().map(|ms| ms * 1000).collect());
        assert_eq!((l.p50, l.p90, l.p99, l.max), (501.0, 901.0, 991.0, 1000.0));
        assert_eq!(Latency::of(vec![]).p99, 0.0);
    }
}
