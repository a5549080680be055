//! `atlas bench send`: every sender sends 1:1 messages, a fresh DPoP proof
//! each, to the next sender (so no extra recipients are needed), as fast as
//! answers come or at `--rate`. A progress line runs on stderr.
use super::SendArgs;
use super::device::BenchDevice;
use super::proc_stat::{cpu_seconds, peak_rss_bytes};
use super::report::{Latency, Report};
use atlas_crypto::dpop::create_proof;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one sender saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

/// Runs the scenario and prints its report.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let server = args.server.trim_end_matches('/').to_owned();
    let http = atlas_client::http_client()?;
    let prefix = format!("bench-{}", &hex_prefix());
    let senders = args.senders as usize;
    let mut devices = Vec::with_capacity(senders);
    for i in 0..senders {
        let device = BenchDevice::register(&http, &server, &format!("{prefix}-{i}"), |wait| {
            eprint!(
                "\rregistering {i}/{senders}: the server's per-address limit, waiting {wait} s \
                 (serve --registrations-per-minute raises it)   "
            );
        })
        .await?;
        let token = device.token(&http, &server).await?;
        devices.push((device, token));
        eprint!("\rregistering {}/{senders}{}", i + 1, " ".repeat(60));
    }
    eprintln!();

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    // Each sender's pace, when --rate asks for one.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(senders as f64 / r));
    let answered = Arc::new(AtomicU64::new(0));
    let body = "A".repeat(args.body_bytes as usize);
    let mut tasks = Vec::with_capacity(senders);
    for (i, (device, token)) in devices.into_iter().enumerate() {
        let recipient = format!("{prefix}-{}", (i + 1) % senders);
        let (http, server, body, answered) =
            (http.clone(), server.clone(), body.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let url = format!("{server}/messages");
            let mut tally = Tally::default();
            let mut next = Instant::now();
            let mut n = 0u64;
            while Instant::now() < end {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                n += 1;
                let request = json!({
                    "recipient_id": recipient,
                    "client_message_id": format!("b{n}"),
                    "envelopes": [{"device_id": "BENCH", "msg_type": 1, "body": body}],
                });
                let sent = Instant::now();
                let iat = time::OffsetDateTime::now_utc().unix_timestamp();
                let proof = create_proof(&device.dpop, "POST", &url, iat, Some(&token), None);
                let outcome = http
                    .post(&url)
                    .header("Authorization", format!("DPoP {token}"))
                    .header("DPoP", proof)
                    .json(&request)
                    .send()
                    .await;
                let measured = sent >= measure_from && Instant::now() <= end;
                let code = match outcome {
                    Ok(answer) if answer.status() == 201 => {
                        let _ = answer.bytes().await;
                        if measured {
                            answered.fetch_add(1, Ordering::Relaxed);
                            tally.latencies_us.push(sent.elapsed().as_micros() as u32);
                        }
                        continue;
                    }
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let body: serde_json::Value = answer.json().await.unwrap_or_default();
                        body["error"]
                            .as_str()
                            .map_or_else(|| format!("http_{status}"), str::to_owned)
                    }
                    Err(e) if e.is_timeout() => "timeout".to_owned(),
                    Err(_) => "connection".to_owned(),
                };
                if measured {
                    *tally.errors.entry(code).or_default() += 1;
                }
            }
            tally
        }));
    }

    // Progress while it runs; the measured window's CPU readings at its edges.
    let client_pid = std::process::id();
    let mut cpu_start = None;
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Instant::now();
        if cpu_start.is_none() && now >= measure_from {
            cpu_start = Some((
                args.server_pid.and_then(cpu_seconds),
                cpu_seconds(client_pid),
            ));
        }
        let count = answered.load(Ordering::Relaxed);
        let rate = (count - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, count);
        let phase = if now < measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        eprint!(
            "\r{phase} {:>5.1} s  answered {count}  {rate:>7.0}/s   ",
            now.duration_since(start).as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
    let cpu_end = (
        args.server_pid.and_then(cpu_seconds),
        cpu_seconds(client_pid),
    );
    eprintln!();

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
    let seconds = args.duration as f64;
    let per_message = |before: Option<f64>, after: Option<f64>| {
        let (before, after) = (before?, after?);
        (messages > 0).then(|| (after - before) / messages as f64 * 1e6)
    };
    let (server_before, client_before) = cpu_start.unwrap_or((None, None));
    let report = Report {
        scenario: "send",
        server,
        senders: args.senders,
        seconds,
        messages,
        messages_per_second: messages as f64 / seconds,
        latency_ms: Latency::of(latencies),
        errors,
        server_cpu_us_per_message: per_message(server_before, cpu_end.0),
        server_peak_rss_mib: args
            .server_pid
            .and_then(peak_rss_bytes)
            .map(|b| b as f64 / (1024.0 * 1024.0)),
        client_cpu_us_per_message: per_message(client_before, cpu_end.1),
    };
    if args.json {
        crate::output::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(())
}

/// Six hex characters, so each run's users are new.
fn hex_prefix() -> String {
    atlas_crypto::random_bytes::<3>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
