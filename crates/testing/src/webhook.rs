//! A stand-in for Slack and PagerDuty: a plain HTTP/1.1 listener on 127.0.0.1
//! that answers each request from a script (429 with `Retry-After`, 500 …),
//! then with a default status, and records every request and its answer.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A status that means: keep the connection open and never answer.
pub const HANG: u16 = 0;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its path.
    pub path: String,
    /// Its JSON body.
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub status: u16,
}

#[derive(Default)]
struct Script {
    next: VecDeque<(u16, Option<u64>)>,
    default: u16,
    received: Vec<Received>,
}

/// The receiver; dropped, it stops listening.
pub struct WebhookReceiver {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// Listens; answers `script` in order (status, `Retry-After`), then `default`.
    pub async fn start(script: &[(u16, Option<u64>)], default: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script {
            next: script.iter().copied().collect(),
            default,
            received: Vec::new(),
        }));
        let shared = script.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, shared.clone()));
            }
        });
        Self { url, script, task }
    }

    /// Answers from now on with `status` ([`HANG`]: never answers).
    pub fn answer_with(&self, status: u16) {
        let mut s = self.script.lock().unwrap();
        s.next.clear();
        s.default = status;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits (`secs` at most) until `count` requests to `path` were answered 2xx; those.
    pub async fn accepted(&self, path: &str, count: usize, secs: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let got: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.path == path && (200..300).contains(&r.status))
                .collect();
            if got.len() >= count || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Reads one request (headers, then `Content-Length` bytes) and answers it.
async fn answer(mut socket: tokio::net::TcpStream, script: Arc<Mutex<Script>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_default();
    let (status, retry_after) = {
        let mut s = script.lock().unwrap();
        let (status, retry_after) = s.next.pop_front().unwrap_or((s.default, None));
        s.received.push(Received { path, body, status });
        (status, retry_after)
    };
    if status == HANG {
        std::future::pending::<()>().await;
    }
    let retry = retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
    let reply = format!(
        "HTTP/1.1 {status} Scripted\r\n{retry}Content-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok"
    );
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = socket.shutdown().await;
}
