//! Load generator: 1:1 sends through the real HTTP API with DPoP, against an
//! in-process server on SQLite. Prints throughput and p50/p99 latency.
//!
//! `cargo bench -p atlas-cli --bench send_throughput -- [--senders N] [--seconds S]`
//!
//! Each sender is a registered device with its own DPoP key and token; every
//! request carries a fresh proof (Ed25519) and is verified, replay-checked and
//! stored durably by the server before it answers. Ciphertexts are opaque to
//! the server, so a fixed 256-byte body stands in for Olm output here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)] // A benchmark: fail loudly.

use atlas_crypto::dpop::create_proof;
use atlas_store::testdb::TempDir;
use atlas_testing::{RawDevice, now};
use serde_json::json;
use std::time::{Duration, Instant};

/// A registered sender with its token, and a recipient of its own.
async fn sender(base: &str, i: usize) -> (RawDevice, String) {
    let device = RawDevice::register(base, &format!("sender{i}")).await;
    RawDevice::register(base, &format!("recipient{i}")).await;
    let token = device.token().await;
    (device, token)
}

/// CPU seconds (user + system) this process has used, from /proc (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let senders = arg("--senders", 64) as usize;
    let seconds = arg("--seconds", 10);
    let dir = TempDir::new("atlas-bench").unwrap();
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    // Every simulated device registers and authenticates from this one address.
    config.limits.registrations_per_address = (u32::MAX, u32::MAX);
    config.limits.tokens_per_address = (u32::MAX, u32::MAX);
    let server = atlas_server::start(config).await.unwrap();
    let base = server.public_url.clone();

    let mut all = Vec::new();
    for i in 0..senders {
        all.push(sender(&base, i).await);
    }
    let body = "A".repeat(256);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let warmup_end = Instant::now() + Duration::from_secs(1);
    let cpu_before = cpu_seconds();
    let mut tasks = Vec::new();
    for (i, (s, token)) in all.into_iter().enumerate() {
        let base = base.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let request = json!({
                    "recipient_id": format!("recipient{i}"),
                    "client_message_id": format!("c{n}"),
                    "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": body}],
                });
                n += 1;
                let started = Instant::now();
                let proof = create_proof(
                    &s.dpop,
                    "POST",
                    &format!("{base}/messages"),
                    now(),
                    Some(&token),
                    None,
                );
                let r = s
                    .http
                    .post(format!("{base}/messages"))
                    .header("Authorization", format!("DPoP {token}"))
                    .header("DPoP", proof)
                    .json(&request)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
                let _ = r.bytes().await;
                if started > warmup_end {
                    latencies.push(started.elapsed().as_micros() as u32);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let cpu = cpu_before
        .zip(cpu_seconds())
        .map(|(before, after)| after - before);
    latencies.sort_unstable();
    let measured = (seconds - 1) as f64;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "send_throughput: {senders} concurrent senders, {measured:.0} s measured (after 1 s warm-up), SQLite, DPoP EdDSA"
    );
    println!("  messages/s: {:.0}", latencies.len() as f64 / measured);
    println!(
        "  latency p50: {:.2} ms  p99: {:.2} ms  max: {:.2} ms",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    if let Some(cpu) = cpu {
        // Server and load generator share the machine: this is both sides' CPU per message.
        let messages = latencies.len() as f64 * seconds as f64 / measured;
        println!(
            "  CPU per message (server + load generator): {:.0} us",
            cpu / messages * 1e6
        );
    }
    server.stop().await;
}
