//! `atlas bench send`: every sender sends 1:1 messages, a fresh DPoP proof
//! each, to the next sender (so no extra recipients are needed), as fast as
//! answers come or at `--rate`. A progress line runs on stderr. With several
//! `--server`s a send whose replica stops answering goes to the next one;
//! `--verify` then checks every answered send reached its recipient once.
use super::device::BenchDevice;
use super::report::{Latency, Report};
use super::servers::Servers;
use super::verify::{Answered, verify};
use super::window::{Pacer, Window};
use super::{BenchArgs, Setup};
use atlas_crypto::dpop::create_proof;
use atlas_proto::api::SendResponse;
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one sender saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    /// Every send answered, warm-up and late answers too (for `--verify`).
    answered: Vec<Answered>,
    failovers: u64,
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

    let window = Window::new(args.warmup, args.duration);
    let interval = args.interval();
    let answered = Arc::new(AtomicU64::new(0));
    let bytes = args.body_bytes as usize;
    let devices: Vec<Arc<(BenchDevice, String)>> = devices.into_iter().map(Arc::new).collect();
    let mut tasks = Vec::with_capacity(senders);
    for (i, me) in devices.iter().enumerate() {
        let to = (i + 1) % senders;
        let recipient = format!("{prefix}-{to}");
        let (http, servers, me, answered) =
            (http.clone(), servers.clone(), me.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let (device, token) = &*me;
            let mut tally = Tally::default();
            let mut pacer = Pacer::new(interval);
            let mut at = servers.home(i);
            while let Some((n, sent)) = pacer.tick(&window).await {
                let body = tagged_body(n, bytes);
                let to_send = Outgoing {
                    recipient: &recipient,
                    client_message_id: &format!("b{n}"),
                    body: &body,
                };
                let outcome = send_one(&http, &servers, &mut at, device, token, &to_send).await;
                if let Ok(ok) = &outcome {
                    tally.failovers += u64::from(ok.failovers);
                    tally.answered.push(Answered {
                        recipient: to,
                        message_id: ok.answer.message_id.to_string(),
                    });
                }
                if !window.counts(sent) {
                    continue;
                }
                match outcome {
                    Ok(_) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        tally.latencies_us.push(sent.elapsed().as_micros() as u32);
                    }
                    Err(code) => *tally.errors.entry(code).or_default() += 1,
                }
            }
            tally
        }));
    }
    let cpu = window.watch(&answered, "answered", &args.server_pid).await;

    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.answered.extend(tally.answered);
        all.failovers += tally.failovers;
        for (code, n) in tally.errors {
            *all.errors.entry(code).or_default() += n;
        }
    }
    let delivery = if args.verify {
        Some(verify(&http, &servers, &devices, all.answered).await)
    } else {
        None
    };
    let messages = all.latencies_us.len() as u64;
    let (server_cpu, client_cpu) = cpu.per(messages);
    let report = Report {
        latency_ms: Latency::of(all.latencies_us),
        errors: all.errors,
        failovers: (servers.len() > 1).then_some(all.failovers),
        delivery,
        server_cpu_us_per_message: server_cpu,
        client_cpu_us_per_message: client_cpu,
        ..Report::new("send", &servers, &args, messages)
    };
    report.emit(args.json)?;
    match &report.delivery {
        Some(d) if !d.all_delivered_once() => {
            anyhow::bail!(
                "delivery check failed: {} missing, {} duplicated",
                d.missing,
                d.duplicated
            )
        }
        _ => Ok(()),
    }
}

/// A body of `bytes` base64 characters that starts with the send's number, so
/// a copy stored twice shows in the recipient's queue.
fn tagged_body(n: u64, bytes: usize) -> String {
    let mut body = format!("{n:016}");
    body.push_str(&"A".repeat(bytes.max(24) / 4 * 4 - 16));
    body
}

/// The send's number in a [`tagged_body`].
pub(super) fn tag_of(body: &str) -> Option<&str> {
    body.get(..16)
}

/// A 1:1 send, as the bench makes it.
pub struct Outgoing<'a> {
    /// The recipient user (one device, `BENCH`).
    pub recipient: &'a str,
    /// The sender's id for the send: a retry with it is answered, not stored again.
    pub client_message_id: &'a str,
    /// The ciphertext.
    pub body: &'a str,
}

/// A send the server answered (201, or 200 for one it had stored already).
pub struct Sent {
    /// The server's answer.
    pub answer: SendResponse,
    /// Replicas that did not answer before one did.
    pub failovers: u32,
}

/// One send with a fresh proof, through replica `*at` or, when it does not
/// answer, the next (see [`call`]); the error code of a refusal otherwise
/// (the HTTP status where the body has none).
pub async fn send_one(
    http: &reqwest::Client,
    servers: &Servers,
    at: &mut usize,
    device: &BenchDevice,
    token: &str,
    send: &Outgoing<'_>,
) -> Result<Sent, String> {
    let request = json!({
        "recipient_id": send.recipient,
        "client_message_id": send.client_message_id,
        "envelopes": [{"device_id": "BENCH", "msg_type": 1, "body": send.body}],
    });
    let auth = Caller { device, token };
    let (answer, failovers) = call(
        http,
        servers,
        at,
        &auth,
        Method::POST,
        "/messages",
        Some(&request),
    )
    .await?;
    match answer.status().as_u16() {
        200 | 201 => {
            let answer = answer
                .json::<SendResponse>()
                .await
                .map_err(|_| "unreadable_answer".to_owned())?;
            Ok(Sent { answer, failovers })
        }
        _ => Err(error_code(answer).await),
    }
}

/// A device making authenticated requests.
pub struct Caller<'a> {
    /// The device, for its DPoP key.
    pub device: &'a BenchDevice,
    /// Its access token.
    pub token: &'a str,
}

/// An authenticated request with a fresh proof through replica `*at`. When
/// that replica does not answer, the same request goes to the next, once
/// round all of them, and `*at` stays where it was answered: a send retried
/// keeps its client message id, so a copy the silent replica stored is not
/// stored twice. The answer and how many replicas failed before it.
pub async fn call(
    http: &reqwest::Client,
    servers: &Servers,
    at: &mut usize,
    caller: &Caller<'_>,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(reqwest::Response, u32), String> {
    let mut failovers = 0;
    loop {
        let url = format!("{}{path}", servers.url(*at));
        let iat = time::OffsetDateTime::now_utc().unix_timestamp();
        // The proof names the path without its query (RFC 9449 htu).
        let named = servers.proof_url(*at, path.split('?').next().unwrap_or(path));
        let token = caller.token;
        let proof = create_proof(
            &caller.device.dpop,
            method.as_str(),
            &named,
            iat,
            Some(token),
            None,
        );
        let mut request = http
            .request(method.clone(), &url)
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof);
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(answer) => return Ok((answer, failovers)),
            Err(e) if e.is_timeout() => return Err("timeout".to_owned()),
            Err(_) if (failovers as usize) + 1 < servers.len() => {
                failovers += 1;
                *at = servers.next(*at);
            }
            Err(_) => return Err("connection".to_owned()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_base64_of_the_asked_size_and_carry_their_number() {
        let body = tagged_body(42, 256);
        assert_eq!(body.len(), 256);
        assert_eq!(tag_of(&body), Some("0000000000000042"));
        assert!(atlas_server::receipts::ciphertext_digest(&body).is_some());
        assert_eq!(tagged_body(7, 30).len(), 28);
    }
}
