//! `atlas bench send`: every sender sends 1:1 messages, a fresh DPoP proof
//! each, to the next sender (so no extra recipients are needed), as fast as
//! answers come or at `--rate`. A progress line runs on stderr.
use super::device::BenchDevice;
use super::report::{Latency, Report};
use super::window::{Pacer, Window};
use super::{BenchArgs, Setup};
use atlas_crypto::dpop::create_proof;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one sender saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Setup {
        server,
        http,
        prefix,
        devices,
    } = Setup::new(&args).await?;
    let senders = args.senders as usize;

    let window = Window::new(args.warmup, args.duration);
    let interval = args.interval();
    let answered = Arc::new(AtomicU64::new(0));
    let body = "A".repeat(args.body_bytes as usize);
    let mut tasks = Vec::with_capacity(senders);
    for (i, (device, token)) in devices.into_iter().enumerate() {
        let recipient = format!("{prefix}-{}", (i + 1) % senders);
        let (http, server, body, answered) =
            (http.clone(), server.clone(), body.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut pacer = Pacer::new(interval);
            while let Some((n, sent)) = pacer.tick(&window).await {
                let outcome = send_one(&http, &server, &device, &token, &recipient, n, &body).await;
                if !window.counts(sent) {
                    continue;
                }
                match outcome {
                    Ok(()) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        tally.latencies_us.push(sent.elapsed().as_micros() as u32);
                    }
                    Err(code) => *tally.errors.entry(code).or_default() += 1,
                }
            }
            tally
        }));
    }
    let cpu = window.watch(&answered, "answered", args.server_pid).await;

    let mut latencies = Vec::new();
    let mut errors = BTreeMap::new();
    for task in tasks {
        let tally = task.await?;
        latencies.extend(tally.latencies_us);
        for (code, n) in tally.errors {
            *errors.entry(code).or_default() += n;
        }
    }
    let messages = latencies.len() as u64;
    let (server_cpu, client_cpu) = cpu.per(messages);
    let report = Report {
        latency_ms: Latency::of(latencies),
        errors,
        server_cpu_us_per_message: server_cpu,
        client_cpu_us_per_message: client_cpu,
        ..Report::new("send", &server, &args, messages)
    };
    report.emit(args.json)
}

/// One send of `body` to `recipient`'s device, with a fresh proof; the error
/// code of a refusal (the HTTP status where the body has none).
pub async fn send_one(
    http: &reqwest::Client,
    server: &str,
    device: &BenchDevice,
    token: &str,
    recipient: &str,
    n: u64,
    body: &str,
) -> Result<(), String> {
    let url = format!("{server}/messages");
    let request = json!({
        "recipient_id": recipient,
        "client_message_id": format!("b{n}"),
        "envelopes": [{"device_id": "BENCH", "msg_type": 1, "body": body}],
    });
    let iat = time::OffsetDateTime::now_utc().unix_timestamp();
    let proof = create_proof(&device.dpop, "POST", &url, iat, Some(token), None);
    let outcome = http
        .post(&url)
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof)
        .json(&request)
        .send()
        .await;
    match outcome {
        Ok(answer) if answer.status() == 201 => {
            let _ = answer.bytes().await;
            Ok(())
        }
        Ok(answer) => Err(error_code(answer).await),
        Err(e) if e.is_timeout() => Err("timeout".to_owned()),
        Err(_) => Err("connection".to_owned()),
    }
}

/// The `error` code of a refusal, or `http_STATUS`.
pub async fn error_code(answer: reqwest::Response) -> String {
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    body["error"]
        .as_str()
        .map_or_else(|| format!("http_{status}"), str::to_owned)
}
