//! Every shared resource has a limit: backup guesses, registration,
//! WebSockets, `/metrics` exposure, queues, and connection timeouts.
use atlas_crypto::olm::OlmAccount;
use atlas_testing::{Harness, RawDevice, now};

/// A server of our own with `limits` and `registration`, over SQLite.
async fn limited_server(
    dir: &atlas_store::testdb::TempDir,
    limits: atlas_server::limits::LimitConfig,
    registration: atlas_server::state::Registration,
) -> atlas_server::RunningServer {
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.limits = limits;
    config.registration = registration;
    atlas_server::start(config).await.unwrap()
}

/// The review locked bob out of his own backup with ten wrong guesses from
/// anywhere. Now a stranger guessing from one address runs out of attempts
/// (429 with Retry-After) while bob, elsewhere, still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_guessing_backups_cannot_lock_the_owner_out() {
    let h = Harness::sqlite().await;
    let bob = atlas_testing::client(&h, "bob").await;
    let info = bob.keys().backup(b"correct horse battery").await.unwrap();
    // The stranger connects from 127.0.0.2, bob from 127.0.0.1.
    let stranger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let url = format!("{}/backups/bob/{}", h.url(), info.backup_id);
    let mut statuses = Vec::new();
    for guess in 0..12 {
        let r = stranger
            .get(&url)
            .header("Authorization", format!("Backup guess-{guess}"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    let (restored, _) = atlas_client::Client::restore_keys(
        &h.profile("bob-again"),
        &h.url(),
        bob.user_id(),
        time::OffsetDateTime::now_utc(),
        b"correct horse battery",
    )
    .await
    .expect("the owner still restores");
    assert_eq!(restored.user_id(), bob.user_id());
}

/// Registration: open within a per-address limit, with a token, or closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_limited_and_can_need_a_token() {
    use atlas_server::state::Registration;
    let dir = atlas_store::testdb::TempDir::new("atlas-registration").unwrap();
    let limits = atlas_server::limits::LimitConfig {
        registrations_per_address: (3, 1),
        ..Default::default()
    };
    let server = limited_server(
        &dir,
        limits.clone(),
        Registration::Token("sixteen-chars-token".into()),
    )
    .await;
    let url = server.public_url.clone();
    let http = reqwest::Client::new();
    let register = |body: serde_json::Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}/users"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().contains_key("retry-after");
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                retry,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let (s, _, e) = register(atlas_testing::registration("amy", "A")).await;
    assert_eq!((s, e.as_str()), (403, "forbidden"));
    let mut wrong = atlas_testing::registration("amy", "A");
    wrong["registration_token"] = serde_json::json!("not-the-token-at-all");
    assert_eq!(register(wrong).await.0, 403);
    let mut right = atlas_testing::registration("amy", "A");
    right["registration_token"] = serde_json::json!("sixteen-chars-token");
    assert_eq!(register(right).await.0, 201);
    let (s, retry, e) = register(atlas_testing::registration("ben", "B")).await;
    assert_eq!(
        (s, retry, e.as_str()),
        (429, true, "rate_limited"),
        "the fourth from one address"
    );
    server.stop().await;

    let closed = limited_server(&dir, limits, Registration::Closed).await;
    let mut body = atlas_testing::registration("cy", "C");
    body["registration_token"] = serde_json::json!("sixteen-chars-token");
    let r = reqwest::Client::new()
        .post(format!("{}/users", closed.public_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    closed.stop().await;
}

/// A `GET /ws` upgrade request of `device`, with its token and a fresh proof.
fn ws_request(
    base: &str,
    device: &RawDevice,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/ws", base.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    let proof = device.proof("GET", "/ws", Some(token), now());
    request
        .headers_mut()
        .insert("authorization", format!("DPoP {token}").parse().unwrap());
    request.headers_mut().insert("dpop", proof.parse().unwrap());
    request
}

/// The review opened 1,000 WebSockets for one device. Now a device gets at most
/// its limit (429 with Retry-After after), and a closed socket frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_per_device_are_capped() {
    let dir = atlas_store::testdb::TempDir::new("atlas-ws-cap").unwrap();
    let limits = atlas_server::limits::LimitConfig {
        websockets_per_device: 2,
        ..Default::default()
    };
    let server = limited_server(&dir, limits, atlas_server::state::Registration::Open).await;
    let url = server.public_url.clone();
    let device = RawDevice::register(&url, "wsuser").await;
    let token = device.token().await;
    let open =
        || async { tokio_tungstenite::connect_async(ws_request(&url, &device, &token)).await };
    let first = open().await.expect("first socket");
    let _second = open().await.expect("second socket");
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            assert!(r.headers().contains_key("retry-after"));
        }
        other => panic!(
            "a third socket must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(s) = open().await {
            reopened = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a closed socket frees its place");
    server.stop().await;
}

/// A client may only send pings, pongs and a close on its push socket: a frame
/// over 64 KiB ends the socket instead of being buffered (the default was 64 MiB),
/// while a small one is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_client_frame_closes_the_socket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = atlas_store::testdb::TempDir::new("atlas-ws-frame").unwrap();
    let server = limited_server(
        &dir,
        Default::default(),
        atlas_server::state::Registration::Open,
    )
    .await;
    let url = server.public_url.clone();
    let device = RawDevice::register(&url, "frames").await;
    let token = device.token().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_request(&url, &device, &token))
        .await
        .unwrap();
    socket
        .send(Message::Ping(vec![1; 64].into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next()).await;
    assert!(
        matches!(answer, Ok(Some(Ok(Message::Pong(_))))),
        "a small frame is answered: {answer:?}"
    );
    socket
        .send(Message::Binary(vec![0; 70 * 1024].into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the server ended the socket");
    server.stop().await;
}

/// `/metrics` on an address of its own: the public listener no longer answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listener_of_their_own() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    let dir = atlas_store::testdb::TempDir::new("atlas-metrics-listen").unwrap();
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = Some(metrics_addr);
    let server = atlas_server::start(config).await.unwrap();
    let public = reqwest::get(format!("{}/metrics", server.public_url))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let internal = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(internal.status(), 200);
    assert!(
        internal
            .text()
            .await
            .unwrap()
            .contains("# TYPE atlas_mls_group_epoch gauge")
    );
    server.stop().await;
}

/// The review queued without bound. Now a device's undelivered messages are
/// capped: the send past it gets 429 `queue_full` with `Retry-After`, and
/// acknowledging frees room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_senders_wait() {
    let dir = atlas_store::testdb::TempDir::new("atlas-queue-cap").unwrap();
    let limits = atlas_server::limits::LimitConfig {
        queued_per_device: 2,
        ..Default::default()
    };
    let server = limited_server(&dir, limits, atlas_server::state::Registration::Open).await;
    let sender = RawDevice::register(&server.public_url, "flooder").await;
    let recipient = RawDevice::register(&server.public_url, "target").await;
    let token = sender.token().await;
    let send = |i: u32| {
        let body = serde_json::json!({
            "recipient_id": "target",
            "client_message_id": format!("f{i}"),
            "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": "AAAA"}],
        });
        let proof = sender.proof("POST", "/messages", Some(&token), now());
        sender.send_raw(
            "POST",
            "/messages",
            Some(format!("DPoP {token}")),
            Some(proof),
            Some(body.to_string().into_bytes()),
        )
    };
    assert_eq!(send(0).await.0, 201);
    assert_eq!(send(1).await.0, 201);
    let (s, headers, b) = send(2).await;
    assert_eq!((s, b["error"].as_str()), (429, Some("queue_full")), "{b}");
    assert!(headers.contains_key("retry-after"));
    let rtoken = recipient.token().await;
    let (s, _) = recipient
        .call(
            &rtoken,
            "POST",
            "/messages/ack",
            Some(serde_json::json!({"up_to_seq": 2})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(send(3).await.0, 201, "acknowledging frees room");
    server.stop().await;
}

/// Reads from `stream` until the server closes it; how long that took. Panics
/// after `limit`, so a connection the server keeps open fails the test.
async fn time_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> std::time::Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

/// The review left idle and half-sent connections open for good. Now a request
/// head must arrive within the header-read timeout, an idle keep-alive connection
/// is closed after it, and a body that stops flowing ends the request — while a
/// prompt client is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let dir = atlas_store::testdb::TempDir::new("atlas-timeouts").unwrap();
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.timeouts = atlas_server::listener::Timeouts {
        header_read: std::time::Duration::from_secs(1),
        body_read: std::time::Duration::from_secs(1),
        websocket_idle: std::time::Duration::from_secs(3),
    };
    let server = atlas_server::start(config).await.unwrap();
    let limit = std::time::Duration::from_secs(10);

    // Half a request head, then silence.
    let mut half = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let waited = time_until_closed(&mut half, limit).await;
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );

    // Connected, never a byte.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    time_until_closed(&mut silent, limit).await;

    // A full request is answered; the idle keep-alive connection then closes.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut idle, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    time_until_closed(&mut idle, limit).await;

    // A body announced but never sent: the request fails and the connection ends.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"us")
        .await
        .unwrap();
    time_until_closed(&mut stalled, limit).await;

    // A prompt client is served throughout.
    let health = reqwest::get(format!("{}/health", server.public_url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A WebSocket whose client never answers pings is closed after the idle limit.
    let device = RawDevice::register(&server.public_url, "sleeper").await;
    let token = device.token().await;
    let request = ws_request(&server.public_url, &device, &token);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // Take the raw stream back so nothing answers the pings.
    let mut raw = match socket.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain TCP"),
    };
    let waited = time_until_closed(&mut raw, limit).await;
    assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
    server.stop().await;
}

/// Someone who writes the database replaces bob's KeyPackages with ones of
/// their own making for bob's certified device (bob's device id in the
/// credential, their own MLS signature key): alice's client refuses to add
/// them, with or without a binding signature, and nothing is committed. Once
/// bob publishes his own (bound) KeyPackages again, the add works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_key_package_is_not_added() {
    use atlas_crypto::mls::{MlsDevice, signature_key_statement};
    let h = Harness::sqlite().await;
    let alice = atlas_testing::client(&h, "alice").await;
    let bob = atlas_testing::client(&h, "bob").await;
    alice.groups().create("team").await.unwrap();
    let (user, device) = (bob.user_id().clone(), bob.device_id().clone());
    let forger = MlsDevice::new(&user, &device).unwrap();
    let forged = forger.key_package(false).unwrap();
    let checked = atlas_crypto::mls::check_key_package(&forged).unwrap();
    let statement = signature_key_statement(&checked.member, &checked.signature_key);
    let attacker = OlmAccount::new();
    for binding in [
        "NULL".to_owned(),
        format!("'{}'", attacker.sign(&statement)),
    ] {
        h.sql("DELETE FROM mls_key_packages WHERE user_id = 'bob'")
            .await;
        let hex: String = forged.iter().map(|b| format!("{b:02x}")).collect();
        h.sql(&format!(
            "INSERT INTO mls_key_packages (user_id, device_id, key_package_ref, key_package, last_resort, status, created_at, binding) \
             VALUES ('bob', '{device}', 'forged', X'{hex}', 0, 'active', '2026-01-01T00:00:00Z', {binding})"
        ))
        .await;
        match alice.groups().add("team", &user).await {
            Err(atlas_client::ClientError::UntrustedKeys(what)) => {
                assert!(what.contains("MLS KeyPackage"), "{what}")
            }
            other => panic!("a forged KeyPackage must be refused, got {other:?}"),
        }
        let view = alice.groups().view("team").await.unwrap();
        assert_eq!(view.current_epoch, 0, "nothing was committed");
    }
    h.sql("DELETE FROM mls_key_packages WHERE user_id = 'bob'")
        .await;
    bob.groups().top_up_key_packages().await.unwrap();
    alice.groups().add("team", &user).await.unwrap();
}
