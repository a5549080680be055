//! What a bench run measured, as text or JSON.
use serde::Serialize;
use std::collections::BTreeMap;

/// The result of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: &'static str,
    /// The server loaded (the replicas, comma-separated).
    pub server: String,
    /// Devices taking part.
    pub senders: u32,
    /// Measured seconds.
    pub seconds: f64,
    /// Answered sends in the measured time.
    pub messages: u64,
    /// Of them per second.
    pub messages_per_second: f64,
    /// Send latency (request to answer), milliseconds; `connections`: socket opening.
    pub latency_ms: Latency,
    /// Send → WebSocket push latency, milliseconds (`conversation`); send →
    /// decrypted, per receiving member (`groups`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_latency_ms: Option<Latency>,
    /// Messages pushed and acknowledged by their recipients (`conversation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<u64>,
    /// The groups and what happened in them (`groups`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupsRun>,
    /// Sockets held and the server's memory for them (`connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<Sockets>,
    /// Refused or failed sends by error code (HTTP status when the body had none).
    pub errors: BTreeMap<String, u64>,
    /// Sends that went to the next replica because theirs did not answer (several `--server`s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failovers: Option<u64>,
    /// What the recipients' queues held after the run (`--verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<super::verify::Delivery>,
    /// Server CPU per answered send, microseconds (with `--server-pid`).
    pub server_cpu_us_per_message: Option<f64>,
    /// Server peak resident memory, MiB (with `--server-pid`).
    pub server_peak_rss_mib: Option<f64>,
    /// This load generator's CPU per answered send, microseconds.
    pub client_cpu_us_per_message: Option<f64>,
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The groups of a `groups` run.
#[derive(Debug, Serialize)]
pub struct GroupsRun {
    /// Groups.
    pub groups: u32,
    /// Members in each.
    pub group_size: u32,
    /// Key updates (commits) accepted in the measured time.
    pub commits: u64,
    /// Messages decrypted by their recipients (a message counts once per receiving member).
    pub decrypted: u64,
}

/// Idle sockets and what they cost the server.
#[derive(Debug, Serialize)]
pub struct Sockets {
    /// Opened.
    pub opened: u64,
    /// Still open at the end.
    pub open_at_end: u64,
    /// Server resident memory before opening them, MiB.
    pub server_rss_before_mib: Option<f64>,
    /// Server resident memory with them all open, MiB.
    pub server_rss_open_mib: Option<f64>,
    /// The difference, scaled to 10,000 sockets, MiB.
    pub server_mib_per_10k: Option<f64>,
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

impl Latency {
    fn print(&self, what: &str) {
        crate::output::outln!(
            "  {what} ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            self.p50,
            self.p90,
            self.p99,
            self.p999,
            self.max
        );
    }
}

impl Report {
    /// A report of `messages` answered in a run of `scenario` with `args`, figures to fill in.
    pub fn new(
        scenario: &'static str,
        servers: &super::Servers,
        args: &super::BenchArgs,
        messages: u64,
    ) -> Self {
        let seconds = args.duration as f64;
        Self {
            scenario,
            server: servers.describe(),
            senders: args.senders,
            seconds,
            messages,
            messages_per_second: messages as f64 / seconds,
            latency_ms: Latency::default(),
            push_latency_ms: None,
            acknowledged: None,
            groups: None,
            sockets: None,
            errors: BTreeMap::new(),
            failovers: None,
            delivery: None,
            server_cpu_us_per_message: None,
            server_peak_rss_mib: args
                .server_pid
                .iter()
                .filter_map(|&pid| super::proc_stat::peak_rss_bytes(pid))
                .max()
                .map(mib),
            client_cpu_us_per_message: None,
        }
    }

    /// Prints the report, as JSON with `json`.
    pub fn emit(&self, json: bool) -> anyhow::Result<()> {
        if json {
            crate::output::outln!("{}", serde_json::to_string_pretty(self)?);
        } else {
            self.print();
        }
        Ok(())
    }

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
        let what = if self.sockets.is_some() {
            "socket opening"
        } else {
            "send latency"
        };
        self.latency_ms.print(what);
        if let Some(push) = &self.push_latency_ms {
            push.print(if self.groups.is_some() {
                "send → decrypted"
            } else {
                "send → push"
            });
        }
        if let Some(n) = self.acknowledged {
            crate::output::outln!("  acknowledged by recipients: {n}");
        }
        if let Some(g) = &self.groups {
            crate::output::outln!(
                "  {} groups of {}: {} commits, {} copies decrypted",
                g.groups,
                g.group_size,
                g.commits,
                g.decrypted
            );
        }
        if let Some(s) = &self.sockets {
            crate::output::outln!(
                "  sockets: {} opened, {} open at the end",
                s.opened,
                s.open_at_end
            );
            if let (Some(before), Some(open), Some(per)) = (
                s.server_rss_before_mib,
                s.server_rss_open_mib,
                s.server_mib_per_10k,
            ) {
                crate::output::outln!(
                    "  server RSS: {before:.0} MiB before, {open:.0} MiB with them open: {per:.0} MiB per 10,000"
                );
            }
        }
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
        if let Some(n) = self.failovers {
            crate::output::outln!("  sends moved to another replica: {n}");
        }
        if let Some(d) = &self.delivery {
            crate::output::outln!(
                "  delivery: {} answered, {} queued, {} missing, {} duplicated; receipts: {} checked, {} missing",
                d.answered,
                d.queued,
                d.missing,
                d.duplicated,
                d.receipts_checked,
                d.receipts_missing
            );
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
