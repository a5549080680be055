//! The figures an on-call engineer compares with a baseline after an
//! incident: how long requests take (a histogram) and what the process uses
//! (memory, open files, CPU time, read from Linux's `/proc/self`).
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A Prometheus histogram of request durations.
#[derive(Default)]
pub struct Latency(Mutex<Histogram>);

#[derive(Default)]
struct Histogram {
    /// Requests at or under each bound (not cumulative here; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Latency {
    /// Records one answered request.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Appends `atlas_http_request_duration_seconds` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let name = "atlas_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an HTTP request (push sockets: to the upgrade).\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
    }
}

/// Appends the standard `process_*` series, where `/proc/self` exists.
pub fn render_process(out: &mut String) {
    if let Some(kib) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            kib * 1024,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as u64,
        );
    }
    // Fields 14 and 15 of /proc/self/stat (after the parenthesised name) are
    // user and system time in clock ticks, 100 a second on Linux.
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
    {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}",
            ticks as f64 / 100.0
        );
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_every_request() {
        let latency = Latency::default();
        for ms in [0, 3, 3, 40, 20_000] {
            latency.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        latency.render(&mut out);
        assert!(out.contains("atlas_http_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("atlas_http_request_duration_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(out.contains("atlas_http_request_duration_seconds_bucket{le=\"0.05\"} 4\n"));
        assert!(out.contains("atlas_http_request_duration_seconds_bucket{le=\"10\"} 4\n"));
        assert!(out.contains("atlas_http_request_duration_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(out.contains("atlas_http_request_duration_seconds_count 5\n"));
    }

    #[test]
    fn the_process_series_are_read_from_proc() {
        let mut out = String::new();
        render_process(&mut out);
        let rss: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1 << 20, "{out}");
        assert!(out.contains("process_open_fds "));
        assert!(out.contains("process_cpu_seconds_total "));
    }
}
