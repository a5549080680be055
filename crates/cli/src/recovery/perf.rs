//! The performance lines: the server's own metrics (request latency, error
//! rate, memory and open files) against a baseline saved before the incident.
use super::{Checklist, PERFORMANCE};
use atlas_dr::verify::Outcome;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A latency this much above the baseline's (and 5 ms more) is a regression.
const LATENCY_FACTOR: f64 = 1.5;
/// Error rate allowed above the baseline's, as a fraction of requests.
const ERROR_MARGIN: f64 = 0.01;
/// Memory or open files this many times the baseline's are not normal.
const RESOURCE_FACTOR: f64 = 2.0;

/// What one run measured (and `--save-baseline` keeps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Figures {
    /// When.
    pub saved_at: String,
    /// 95th percentile of request durations since the server started, seconds.
    pub p95_seconds: f64,
    /// Requests answered with 5xx, as a fraction of all.
    pub error_ratio: f64,
    /// Requests counted.
    pub requests: u64,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
}

/// One sample of the Prometheus text format: name, labels, value.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name, labels, value))
        })
}

/// The figures in a `/metrics` page.
pub(super) fn figures(text: &str) -> Option<Figures> {
    let mut buckets = Vec::new();
    let (mut total, mut errors, mut requests) = (0.0, 0.0, 0.0);
    let (mut rss, mut fds) = (None, None);
    for (name, labels, value) in samples(text) {
        match name {
            "atlas_http_request_duration_seconds_bucket" => {
                let le = labels.strip_prefix("le=\"")?.trim_end_matches('"');
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                buckets.push((bound, value));
            }
            "atlas_http_request_duration_seconds_count" => requests = value,
            "atlas_http_requests_total" => {
                total += value;
                if labels.contains("status=\"5") {
                    errors += value;
                }
            }
            "process_resident_memory_bytes" => rss = Some(value as u64),
            "process_open_fds" => fds = Some(value as u64),
            _ => {}
        }
    }
    if buckets.is_empty() {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let wanted = requests * 0.95;
    let p95 = buckets
        .iter()
        .find(|(_, n)| *n >= wanted)
        .map_or(f64::INFINITY, |(b, _)| *b);
    Some(Figures {
        saved_at: atlas_proto::timestamp::rfc3339(time::OffsetDateTime::now_utc()),
        p95_seconds: p95,
        error_ratio: if total > 0.0 { errors / total } else { 0.0 },
        requests: requests as u64,
        rss_bytes: rss,
        open_fds: fds,
    })
}

/// Reads the metrics and adds the lines; the figures, for `--save-baseline`.
pub(super) async fn measure(
    list: &mut Checklist,
    metrics_url: &str,
    baseline: Option<&Path>,
) -> Option<Figures> {
    let page = async {
        let response = atlas_client::http_client()
            .map_err(|e| e.to_string())?
            .get(metrics_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;
        response.text().await.map_err(|e| e.to_string())
    };
    let now = match page.await.map(|t| figures(&t)) {
        Ok(Some(f)) => f,
        Ok(None) => {
            skip_all(
                list,
                &format!("{metrics_url} has no request-latency histogram"),
            );
            return None;
        }
        Err(why) => {
            skip_all(list, &format!("{metrics_url}: {why}"));
            return None;
        }
    };
    let base = match baseline.map(read_baseline) {
        None => {
            let why = "no baseline (save one on a healthy day with --save-baseline FILE, give it with --baseline FILE)";
            list.add(
                PERFORMANCE,
                "latency within baseline",
                Outcome::Skip,
                format!("p95 {}; {why}", ms(now.p95_seconds)),
            );
            list.add(
                PERFORMANCE,
                "error rate not increased",
                Outcome::Skip,
                format!("{}; {why}", percent(now.error_ratio)),
            );
            list.add(
                PERFORMANCE,
                "resource use normal",
                Outcome::Skip,
                format!("{}; {why}", resources(&now)),
            );
            return Some(now);
        }
        Some(Err(why)) => {
            skip_all(list, &why);
            return Some(now);
        }
        Some(Ok(base)) => base,
    };
    let limit = base.p95_seconds * LATENCY_FACTOR + 0.005;
    list.check(
        PERFORMANCE,
        "latency within baseline",
        now.p95_seconds <= limit,
        format!(
            "p95 {} over {} requests (baseline {} of {}, limit {})",
            ms(now.p95_seconds),
            now.requests,
            ms(base.p95_seconds),
            base.saved_at,
            ms(limit)
        ),
    );
    list.check(
        PERFORMANCE,
        "error rate not increased",
        now.error_ratio <= base.error_ratio + ERROR_MARGIN,
        format!(
            "5xx {} of requests (baseline {})",
            percent(now.error_ratio),
            percent(base.error_ratio)
        ),
    );
    let over = |now: Option<u64>, base: Option<u64>| match (now, base) {
        (Some(n), Some(b)) => n as f64 > b as f64 * RESOURCE_FACTOR,
        _ => false,
    };
    list.check(
        PERFORMANCE,
        "resource use normal",
        !over(now.rss_bytes, base.rss_bytes) && !over(now.open_fds, base.open_fds),
        format!("{} (baseline {})", resources(&now), resources(&base)),
    );
    Some(now)
}

fn read_baseline(path: &Path) -> Result<Figures, String> {
    let text = std::fs::read(path).map_err(|e| format!("baseline {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("baseline {}: {e}", path.display()))
}

fn skip_all(list: &mut Checklist, why: &str) {
    for name in [
        "latency within baseline",
        "error rate not increased",
        "resource use normal",
    ] {
        list.add(PERFORMANCE, name, Outcome::Skip, why);
    }
}

fn ms(seconds: f64) -> String {
    if seconds.is_finite() {
        format!("≤ {:.1} ms", seconds * 1000.0)
    } else {
        "over the largest bucket".into()
    }
}

fn percent(ratio: f64) -> String {
    format!("{:.2} %", ratio * 100.0)
}

fn resources(f: &Figures) -> String {
    let rss = f.rss_bytes.map_or("memory unknown".into(), |b| {
        format!("{:.0} MiB resident", b as f64 / 1048576.0)
    });
    let fds = f
        .open_fds
        .map_or("open files unknown".into(), |n| format!("{n} open files"));
    format!("{rss}, {fds}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE atlas_http_request_duration_seconds histogram
atlas_http_request_duration_seconds_bucket{le=\"0.001\"} 50
atlas_http_request_duration_seconds_bucket{le=\"0.005\"} 90
atlas_http_request_duration_seconds_bucket{le=\"0.01\"} 97
atlas_http_request_duration_seconds_bucket{le=\"+Inf\"} 100
atlas_http_request_duration_seconds_count 100
atlas_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 98
atlas_http_requests_total{method=\"POST\",route=\"/messages\",status=\"503\"} 2
process_resident_memory_bytes 1048576
process_open_fds 12
";

    #[test]
    fn the_figures_come_from_the_histogram_and_counters() {
        let f = figures(PAGE).unwrap();
        assert_eq!(f.p95_seconds, 0.01);
        assert!((f.error_ratio - 0.02).abs() < 1e-9);
        assert_eq!(
            (f.requests, f.rss_bytes, f.open_fds),
            (100, Some(1048576), Some(12))
        );
        assert!(figures("process_open_fds 3\n").is_none());
    }
}
