//! In-process counters exported on `/metrics`: crypto operations as devices
//! report them, HTTP requests, DPoP proof checks. Each server process counts
//! what it handled; Prometheus sums the processes.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Outcomes of `operation="decrypt"`: `recovered` counts a message that failed
/// first and decrypted later (its failure was counted when it was reported).
pub const DECRYPT_STATUSES: [&str; 3] = ["success", "failure", "recovered"];
/// Results of a DPoP proof check.
pub const DPOP_RESULTS: [&str; 5] = ["valid", "invalid", "replay", "use_nonce", "binding_failed"];

/// The counters. Every series that alerts read exists from the start at 0, so
/// `rate()` sees the first increment.
pub struct Metrics {
    crypto: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
    dpop: Mutex<BTreeMap<&'static str, u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    admin_requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    admin_refused: Mutex<BTreeMap<&'static str, u64>>,
    /// How long requests take.
    pub latency: crate::performance::Latency,
}

/// Failed authentications counted from the start, so an alert sees the first.
pub const AUTH_FAILURE_REASONS: [&str; 4] = [
    "invalid_token",
    "invalid_dpop_proof",
    "insufficient_scope",
    "forbidden",
];

/// Operator tokens whose admin requests are counted apart; more share one series.
const MAX_ADMIN_TOKENS: usize = 200;

impl Default for Metrics {
    fn default() -> Self {
        Self {
            crypto: Mutex::new(
                DECRYPT_STATUSES
                    .iter()
                    .map(|s| (("decrypt", *s), 0))
                    .collect(),
            ),
            http: Mutex::new(BTreeMap::new()),
            dpop: Mutex::new(DPOP_RESULTS.iter().map(|r| (*r, 0)).collect()),
            auth_failures: Mutex::new(AUTH_FAILURE_REASONS.iter().map(|r| (*r, 0)).collect()),
            admin_requests: Mutex::new(BTreeMap::new()),
            admin_refused: Mutex::new([("address", 0)].into()),
            latency: Default::default(),
        }
    }
}

/// Most distinct HTTP series kept; routes are templates, so this is never reached in practice.
const MAX_HTTP_SERIES: usize = 2000;

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    // A poisoned lock only means another thread panicked mid-increment: keep counting.
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry(key).or_insert(0) += 1;
}

impl Metrics {
    /// Counts one crypto operation outcome.
    pub fn crypto(&self, operation: &'static str, status: &'static str) {
        bump(&self.crypto, (operation, status));
    }

    /// A request refused for its credentials (401/403), by its error code.
    pub fn auth_failure(&self, reason: &'static str) {
        bump(&self.auth_failures, reason);
    }

    /// An admin request of an operator token: `read` (GET) or `write`.
    pub fn admin_request(&self, token_id: &str, kind: &'static str) {
        let mut map = self
            .admin_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let known = map.keys().any(|(t, _)| t == token_id);
        let token = if known || map.len() < MAX_ADMIN_TOKENS {
            token_id.to_owned()
        } else {
            "other".to_owned()
        };
        *map.entry((token, kind)).or_insert(0) += 1;
    }

    /// An admin request refused before its token was looked at (`address`: outside `--admin-allow`).
    pub fn admin_refused(&self, reason: &'static str) {
        bump(&self.admin_refused, reason);
    }

    /// Failed authentications so far, by reason (for the indicator watcher).
    pub fn auth_failures(&self) -> BTreeMap<&'static str, u64> {
        self.auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Admin requests so far, by token and kind (for the indicator watcher).
    pub fn admin_requests(&self) -> BTreeMap<(String, &'static str), u64> {
        self.admin_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Refused admin requests so far, by reason.
    pub fn admin_refusals(&self) -> u64 {
        self.admin_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// HTTP requests answered so far, by status class (`2xx`, `4xx`, `5xx` …).
    pub fn status_classes(&self) -> BTreeMap<String, u64> {
        let map = self.http.lock().unwrap_or_else(|p| p.into_inner());
        let mut classes = BTreeMap::new();
        for ((_, _, status), n) in map.iter() {
            *classes.entry(format!("{}xx", status / 100)).or_insert(0) += n;
        }
        classes
    }

    /// DPoP proofs refused as replays so far.
    pub fn replays(&self) -> u64 {
        let map = self.dpop.lock().unwrap_or_else(|p| p.into_inner());
        map.get("replay").copied().unwrap_or(0)
    }

    /// Counts one DPoP proof check by result (one of [`DPOP_RESULTS`]).
    pub fn dpop(&self, result: &'static str) {
        bump(&self.dpop, result);
    }

    /// Counts one answered HTTP request; `route` is the route template.
    pub fn http(&self, method: &str, route: &str, status: u16) {
        let mut map = self.http.lock().unwrap_or_else(|p| p.into_inner());
        let key = (method.to_owned(), route.to_owned(), status);
        if map.len() >= MAX_HTTP_SERIES && !map.contains_key(&key) {
            return;
        }
        *map.entry(key).or_insert(0) += 1;
    }

    /// Appends the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        {
            let map = self.crypto.lock().unwrap_or_else(|p| p.into_inner());
            header(
                out,
                "atlas_crypto_operations_total",
                "Cryptographic operations by outcome; decrypt outcomes are reported by the receiving devices.",
            );
            for ((operation, status), value) in map.iter() {
                let _ = writeln!(
                    out,
                    "atlas_crypto_operations_total{{operation=\"{operation}\",status=\"{status}\"}} {value}"
                );
            }
        }
        {
            let map = self.http.lock().unwrap_or_else(|p| p.into_inner());
            header(
                out,
                "atlas_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
            );
            for ((method, route, status), value) in map.iter() {
                let _ = writeln!(
                    out,
                    "atlas_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {value}",
                    label(method),
                    label(route)
                );
            }
        }
        let map = self.dpop.lock().unwrap_or_else(|p| p.into_inner());
        header(
            out,
            "atlas_dpop_proofs_total",
            "DPoP proofs checked, by result.",
        );
        for (result, value) in map.iter() {
            let _ = writeln!(
                out,
                "atlas_dpop_proofs_total{{result=\"{result}\"}} {value}"
            );
        }
        drop(map);
        // Indicators of compromise (seed 004, §5.2).
        header(
            out,
            "atlas_auth_failures_total",
            "Requests refused for their credentials (401/403), by error code.",
        );
        for (reason, value) in self.auth_failures() {
            let _ = writeln!(
                out,
                "atlas_auth_failures_total{{reason=\"{reason}\"}} {value}"
            );
        }
        header(
            out,
            "atlas_admin_requests_total",
            "Admin requests by operator token and kind (read: GET, write: the rest).",
        );
        for ((token, kind), value) in self.admin_requests() {
            let _ = writeln!(
                out,
                "atlas_admin_requests_total{{token_id=\"{}\",kind=\"{kind}\"}} {value}",
                label(&token)
            );
        }
        header(
            out,
            "atlas_admin_refused_total",
            "Admin requests refused before their token was read (address: outside --admin-allow).",
        );
        let refused = self.admin_refused.lock().unwrap_or_else(|p| p.into_inner());
        for (reason, value) in refused.iter() {
            let _ = writeln!(
                out,
                "atlas_admin_refused_total{{reason=\"{reason}\"}} {value}"
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}

/// Escapes a label value (text format 0.0.4).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_zeroes_for_alerted_series() {
        let m = Metrics::default();
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains(
                "atlas_crypto_operations_total{operation=\"decrypt\",status=\"failure\"} 0"
            )
        );
        assert!(out.contains("atlas_dpop_proofs_total{result=\"replay\"} 0"));
        m.crypto("decrypt", "failure");
        m.dpop("replay");
        m.http("GET", "/messages/{id}", 404);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains(
                "atlas_crypto_operations_total{operation=\"decrypt\",status=\"failure\"} 1"
            )
        );
        assert!(out.contains("atlas_dpop_proofs_total{result=\"replay\"} 1"));
        assert!(out.contains(
            "atlas_http_requests_total{method=\"GET\",route=\"/messages/{id}\",status=\"404\"} 1"
        ));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
