//! `atlas bench conversation`: every device is online on its WebSocket and
//! sends to the next one, as fast as answers come or at `--rate`. Each body
//! carries its send time, so the recipient measures send → push latency; each
//! recipient acknowledges what it got (`POST /messages/ack`, one request
//! covering whatever arrived meanwhile), which makes the server sign and store
//! a `delivered` receipt per message, as with real clients.
use super::device::{BenchDevice, Socket};
use super::report::{Latency, Report};
use super::send::{Caller, Outgoing, call, error_code, send_one};
use super::servers::Servers;
use super::window::{Pacer, Window};
use super::{BenchArgs, Setup};
use atlas_proto::api::PushEvent;
use futures_util::StreamExt;
use reqwest::Method;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// How long recipients keep listening after the window, for pushes in flight.
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// What one device saw in the measured window.
#[derive(Default)]
pub(super) struct Tally {
    /// Send latencies, µs.
    pub send_us: Vec<u32>,
    /// Send → push (or decrypted) latencies, µs.
    pub push_us: Vec<u32>,
    /// Messages acknowledged (`groups`: decrypted).
    pub acknowledged: u64,
    /// Commits accepted (`groups`).
    pub commits: u64,
    /// Failures by code.
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }

    pub fn add(&mut self, other: Tally) {
        self.commits += other.commits;
        self.send_us.extend(other.send_us);
        self.push_us.extend(other.push_us);
        self.acknowledged += other.acknowledged;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }
}

/// A body carrying `sent`, as microseconds since the run's start in its first
/// 20 characters (digits are base64 characters), padded to `bytes` (a multiple of 4).
pub(super) fn stamped_body(window: &Window, sent: Instant, bytes: usize) -> String {
    let micros = sent.duration_since(window.start).as_micros();
    let mut body = format!("{micros:020}");
    body.push_str(&"A".repeat(bytes.max(24) / 4 * 4 - 20));
    body
}

/// When the message with `body` was sent, if it is a stamped body.
pub(super) fn sent_at(window: &Window, body: &str) -> Option<Instant> {
    let micros: u64 = body.get(..20)?.parse().ok()?;
    Some(window.start + Duration::from_micros(micros))
}

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Setup {
        servers,
        http,
        prefix,
        devices,
    } = Setup::new(&args).await?;
    let senders = args.senders as usize;
    let mut online = Vec::with_capacity(senders);
    for (i, (device, token)) in devices.into_iter().enumerate() {
        let socket = device
            .open_socket(&servers, servers.home(i), &token)
            .await?;
        online.push((Arc::new(device), token, socket));
    }

    let window = Window::new(args.warmup, args.duration);
    let interval = args.interval();
    let pushed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(3 * senders);
    for (i, (device, token, socket)) in online.into_iter().enumerate() {
        let recipient = format!("{prefix}-{}", (i + 1) % senders);
        let (seen, last_seen) = watch::channel(0u64);
        let home = servers.home(i);
        let (h, s, d, t) = (http.clone(), servers.clone(), device.clone(), token.clone());
        tasks.push(tokio::spawn(acknowledge(
            h, s, home, d, t, last_seen, window,
        )));
        tasks.push(tokio::spawn(listen(socket, seen, window, pushed.clone())));
        let (http, servers, bytes) = (http.clone(), servers.clone(), args.body_bytes as usize);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut pacer = Pacer::new(interval);
            let mut at = home;
            while let Some((n, sent)) = pacer.tick(&window).await {
                let body = stamped_body(&window, sent, bytes);
                let send = Outgoing {
                    recipient: &recipient,
                    client_message_id: &format!("b{n}"),
                    body: &body,
                };
                let outcome = send_one(&http, &servers, &mut at, &device, &token, &send).await;
                if window.counts(sent) {
                    match outcome {
                        Ok(_) => tally.send_us.push(sent.elapsed().as_micros() as u32),
                        Err(code) => tally.error(code),
                    }
                }
            }
            tally
        }));
    }
    let cpu = window.watch(&pushed, "pushed", &args.server_pid).await;

    let mut all = Tally::default();
    for task in tasks {
        all.add(task.await?);
    }
    let messages = all.send_us.len() as u64;
    let (server_cpu, client_cpu) = cpu.per(messages);
    let report = Report {
        latency_ms: Latency::of(all.send_us),
        push_latency_ms: Some(Latency::of(all.push_us)),
        acknowledged: Some(all.acknowledged),
        errors: all.errors,
        server_cpu_us_per_message: server_cpu,
        client_cpu_us_per_message: client_cpu,
        ..Report::new("conversation", &servers, &args, messages)
    };
    report.emit(args.json)
}

/// Reads pushes until the window (and its grace) ends: measures each
/// message's latency and tells the acknowledging task the last sequence number.
async fn listen(
    mut socket: Socket,
    seen: watch::Sender<u64>,
    window: Window,
    pushed: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    let stop = tokio::time::sleep_until((window.end + GRACE).into());
    tokio::pin!(stop);
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            () = &mut stop => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                if Instant::now() < window.end {
                    tally.error("socket_closed".into());
                }
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) => {
                tally.error("socket_failed".into());
                break;
            }
        };
        let Ok(PushEvent::Message(message)) = serde_json::from_str::<PushEvent>(&text) else {
            continue;
        };
        if let Some(sent) = sent_at(&window, &message.body)
            && sent >= window.measure_from
            && sent <= window.end
        {
            tally.push_us.push(sent.elapsed().as_micros() as u32);
            pushed.fetch_add(1, Ordering::Relaxed);
        }
        seen.send_replace(message.seq);
    }
    let _ = socket.close(None).await;
    tally
}

/// Acknowledges up to the last sequence number seen, one request at a time
/// (each covering every push that arrived while the previous one ran).
async fn acknowledge(
    http: reqwest::Client,
    servers: Arc<Servers>,
    mut at: usize,
    device: Arc<BenchDevice>,
    token: String,
    mut last_seen: watch::Receiver<u64>,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    let caller = Caller {
        device: &device,
        token: &token,
    };
    while last_seen.changed().await.is_ok() {
        let up_to_seq = *last_seen.borrow_and_update();
        let started = Instant::now();
        let body = serde_json::json!({ "up_to_seq": up_to_seq });
        let outcome = call(
            &http,
            &servers,
            &mut at,
            &caller,
            Method::POST,
            "/messages/ack",
            Some(&body),
        )
        .await
        .map(|(answer, _)| answer);
        let counted = window.counts(started);
        match outcome {
            Ok(answer) if answer.status() == 200 => {
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                if counted {
                    tally.acknowledged += body["acknowledged"].as_u64().unwrap_or(0);
                }
            }
            Ok(answer) => {
                let code = error_code(answer).await;
                if counted {
                    tally.error(format!("ack_{code}"));
                }
            }
            Err(code) if counted => tally.error(format!("ack_{code}")),
            Err(_) => {}
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_body_is_base64_and_gives_back_its_time() {
        let window = Window::new(0, 1);
        let sent = window.start + Duration::from_micros(1_234_567);
        let body = stamped_body(&window, sent, 101);
        assert_eq!(body.len(), 100);
        assert!(atlas_server::receipts::ciphertext_digest(&body).is_some());
        assert_eq!(sent_at(&window, &body), Some(sent));
        assert_eq!(sent_at(&window, "AAAA"), None);
    }
}
