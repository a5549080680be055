//! The HTTP/1.1 accept loop. `axum::serve` sets no timer, so a client could
//! hold a connection open forever by never finishing its request head; here
//! every connection gets a header-read timeout that also bounds how long an
//! idle keep-alive connection lives (hyper starts it whenever it waits for a
//! request head), and request bodies time out between chunks.
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Connection timeouts (`atlas serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the end of one response (or the connection's start) to the end of
    /// the next request head; an idle or half-sent connection is closed after it.
    pub header_read: Duration,
    /// Longest wait for the next chunk of a request body.
    pub body_read: Duration,
    /// A WebSocket from which nothing (not even a pong to the server's pings) arrives for this long is closed.
    pub websocket_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(30),
            body_read: Duration::from_secs(30),
            websocket_idle: Duration::from_secs(90),
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish their current request and waits for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        timeouts.body_read,
    ));
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (drain, _) = watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut closing = drain.subscribe();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app.map_request(
                move |mut req: axum::http::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.map(axum::body::Body::new)
                },
            ));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header_read)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result, peer),
                () = stopping(&mut closing) => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await, peer);
                }
            }
        });
    }
    drain.send_replace(true);
    drain.closed().await;
}

/// Resolves once `flag` is true (or its sender is gone).
async fn stopping(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

fn log_end(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}
