//! A TCP proxy in front of a test server that breaks downloads off: the
//! response to a GET whose request names `marker` ends after a few bytes, as a
//! store or network failing mid-download would end it.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; it stops when dropped.
pub struct CuttingProxy {
    /// `http://127.0.0.1:PORT`, to use instead of the upstream's endpoint.
    pub endpoint: String,
    cuts_left: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Forwards to `upstream` (`http://HOST:PORT`); the responses to the next
    /// `cuts` GETs naming `marker` end after `after` bytes (headers included).
    pub async fn start(upstream: &str, marker: &str, cuts: usize, after: usize) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
        let cuts_left = Arc::new(AtomicUsize::new(cuts));
        let cut = Arc::new(AtomicUsize::new(0));
        let marker = marker.to_owned();
        let (left, done) = (cuts_left.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (left, done, marker) = (left.clone(), done.clone(), marker.clone());
                tokio::spawn(relay(client, server, marker, left, done, after));
            }
        });
        Self {
            endpoint,
            cuts_left,
            cut,
            task,
        }
    }

    /// Responses cut so far.
    pub fn cut(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }

    /// Cuts still to make.
    pub fn cuts_left(&self) -> usize {
        self.cuts_left.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: requests pass as they are; a response to a marked GET is
/// cut (HTTP/1.1 clients send the next request only after the last answer).
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    marker: String,
    cuts_left: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    after: usize,
) {
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let cutting = AtomicBool::new(false);
    let requests = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("GET ")
                && text.lines().next().is_some_and(|l| l.contains(&marker))
                && cuts_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                    .is_ok()
            {
                cutting.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let responses = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut sent = 0usize;
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cutting.load(Ordering::SeqCst) {
                let room = after.saturating_sub(sent).min(n);
                let _ = client_write.write_all(&buf[..room]).await;
                sent += room;
                if sent >= after {
                    cut.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            } else if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends first ends the connection.
    tokio::select! {
        () = requests => {}
        () = responses => {}
    }
}
