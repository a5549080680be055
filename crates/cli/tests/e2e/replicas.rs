//! Replicas on one PostgreSQL and one Redis: the DPoP replay cache is shared
//! (a proof used on one replica is a replay on every other), the runbook's
//! `redis-cli GET/DEL "dpop:jti:<JTI>"` lines work verbatim, and a Redis
//! outage fails DPoP-protected requests closed until Redis returns by itself.
use atlas_server::RunningServer;
use atlas_testing::{
    Harness, RawDevice, free_port, now, operator_token, required_tool, run_atlas, run_runbook,
};
use base64::Engine;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The origin every replica serves behind (the runbook's API host).
pub(crate) const PUBLIC: &str = "https://api.atlas.dev";

/// The runbook's replay-cache lines (`000`, "DPoP Token Binding Failures").
const CHECK_JTI: &str = r#"redis-cli -h redis.atlas.svc.cluster.local GET "dpop:jti:<JTI>""#;
const CLEAR_JTI: &str = r#"redis-cli -h redis.atlas.svc.cluster.local DEL "dpop:jti:<JTI>""#;

/// The shared Redis of the tests (`.ci/run` starts one on 127.0.0.1:6379).
pub(crate) fn shared_redis() -> String {
    std::env::var("ATLAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A replica on the harness's database and on `redis`, behind [`PUBLIC`].
pub(crate) async fn replica(h: &Harness, redis: &str) -> RunningServer {
    let mut config = h.config();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.public_url = Some(PUBLIC.into());
    config.redis_url = Some(redis.into());
    // Limits are shared through Redis: the tests' registrations must not meet them.
    config.limits.registrations_per_address = (1000, 1000);
    atlas_server::start(config).await.unwrap()
}

pub(crate) fn base(replica: &RunningServer) -> String {
    format!("http://{}", replica.addr)
}

/// The `jti` claim of a compact DPoP proof.
fn jti_of(proof: &str) -> String {
    let payload = proof.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// Runs a runbook line about `jti` against the Redis on 127.0.0.1.
fn runbook_redis(line: &str, jti: &str) -> String {
    let line = line
        .replace("redis.atlas.svc.cluster.local", "127.0.0.1")
        .replace("<JTI>", jti);
    run_runbook(&line, PUBLIC).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_used_on_one_replica_is_a_replay_on_the_others() {
    if required_tool("redis-cli").is_none() {
        return;
    }
    let h = Harness::postgres().await;
    let redis = shared_redis();
    let replicas = [
        replica(&h, &redis).await,
        replica(&h, &redis).await,
        replica(&h, &redis).await,
    ];
    let mut alice = RawDevice::register(&base(&replicas[0]), "alice")
        .await
        .behind(PUBLIC);
    let token = alice.token().await;
    let auth = Some(format!("DPoP {token}"));
    let proof = alice.proof("GET", "/messages", Some(&token), now());
    let (status, _, body) = alice
        .send_raw("GET", "/messages", auth.clone(), Some(proof.clone()), None)
        .await;
    assert_eq!(status, 200, "{body}");
    for other in &replicas[1..] {
        alice.base = base(other);
        let (status, _, body) = alice
            .send_raw("GET", "/messages", auth.clone(), Some(proof.clone()), None)
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("replay"),
            "{body}"
        );
    }

    // The runbook's check shows whose proof it was and until when it counts.
    let jti = jti_of(&proof);
    let record: serde_json::Value = serde_json::from_str(&runbook_redis(CHECK_JTI, &jti)).unwrap();
    assert_eq!(record["request"], "GET /messages", "{record}");
    assert_eq!(record["device"], "alice/RAW", "{record}");
    assert_eq!(
        record["jkt"],
        alice.dpop.public_jwk().thumbprint(),
        "{record}"
    );
    assert!(
        record["first_used_at"].as_str().unwrap().ends_with('Z'),
        "{record}"
    );
    let expires_at = record["expires_at"].as_i64().unwrap();
    assert!(
        expires_at > now() && expires_at <= now() + 120 + 30 + 1,
        "{record}"
    );
    let key = format!("dpop:jti:{jti}");
    let ttl: i64 = runbook_redis(
        &format!("redis-cli -h redis.atlas.svc.cluster.local TTL {key}"),
        &jti,
    )
    .parse()
    .unwrap();
    assert!(
        (1..=151).contains(&ttl),
        "Redis expires it with the proof: {ttl}"
    );
    // `atlas dpop jti show` reads the same cache through any replica.
    let op = operator_token(&h.database_url(), "dpop");
    let server = base(&replicas[2]);
    let (ok, shown, err) = run_atlas(
        None,
        Some(&op),
        &["dpop", "jti", "show", &jti, "--server", &server],
    );
    assert!(ok && shown.contains("seen"), "{shown}{err}");

    // Clearing it (a false positive) makes the same proof acceptable again, anywhere.
    assert_eq!(runbook_redis(CLEAR_JTI, &jti), "1");
    alice.base = base(&replicas[1]);
    let (status, _, body) = alice
        .send_raw("GET", "/messages", auth.clone(), Some(proof.clone()), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (ok, cleared, err) = run_atlas(
        None,
        Some(&op),
        &["dpop", "jti", "clear", &jti, "--server", &server],
    );
    assert!(ok && cleared.contains(": cleared"), "{cleared}{err}");
    assert_eq!(runbook_redis(CHECK_JTI, &jti), "", "gone from Redis");
    for r in replicas {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_on_one_replica_is_pushed_what_another_accepted() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let h = Harness::postgres().await;
    let redis = shared_redis();
    let (a, b) = (replica(&h, &redis).await, replica(&h, &redis).await);
    let alice = RawDevice::register(&base(&a), "alice").await.behind(PUBLIC);
    let bob = RawDevice::register(&base(&b), "bob").await.behind(PUBLIC);
    let token = bob.token().await;
    let mut request = format!("ws://{}/ws?after=0", b.addr)
        .into_client_request()
        .unwrap();
    let proof = bob.proof("GET", "/ws", Some(&token), now());
    request
        .headers_mut()
        .insert("authorization", format!("DPoP {token}").parse().unwrap());
    request.headers_mut().insert("dpop", proof.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let started = Instant::now();
    let sent = alice.send_junk("bob", "RAW", 3).await;
    for id in &sent {
        let pushed = tokio::time::timeout(Duration::from_secs(1), socket.next())
            .await
            .unwrap_or_else(|_| panic!("{id}: not pushed on B within a second"))
            .unwrap()
            .unwrap();
        let frame: serde_json::Value = serde_json::from_str(pushed.to_text().unwrap()).unwrap();
        assert_eq!(frame["message_id"], id.as_str(), "{frame}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_rotated_on_one_replica_signs_on_the_others_at_once() {
    let h = Harness::postgres().await;
    let redis = shared_redis();
    let (a, b) = (replica(&h, &redis).await, replica(&h, &redis).await);
    let alice = RawDevice::register(&base(&b), "alice").await.behind(PUBLIC);
    RawDevice::register(&base(&b), "bob").await;
    let token = alice.token().await;
    let send = |n: u32| {
        let (alice, token) = (&alice, &token);
        async move {
            let body = serde_json::json!({
                "recipient_id": "bob",
                "client_message_id": format!("rotation-{n}"),
                "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": "AAAAAAAAAAAAAAAAAAAAAAAA"}],
            });
            let (status, answer) = alice.call(token, "POST", "/messages", Some(body)).await;
            assert_eq!(status, 201, "{answer}");
            answer["receipt"]["kid"].as_str().unwrap().to_owned()
        }
    };
    // B signs with the key it has cached (for seconds, were it not told).
    let before = send(0).await;
    let op = operator_token(&h.database_url(), "keys");
    let rotated: serde_json::Value = atlas_client::http_client()
        .unwrap()
        .post(format!("{}/admin/signing-keys/rotate", base(&a)))
        .bearer_auth(&op)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_kid = rotated["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, before, "{rotated}");
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut n = 1;
    loop {
        let kid = send(n).await;
        if kid == new_kid {
            break;
        }
        assert_eq!(kid, before);
        assert!(
            Instant::now() < deadline,
            "B still signs with {kid}, not {new_kid}"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_that_guard_secrets_are_shared_by_the_replicas() {
    if required_tool("redis-cli").is_none() {
        return;
    }
    // A database of Redis of this test's own, its bucket emptied first (a rerun).
    let redis = format!("{}/5", shared_redis().trim_end_matches('/'));
    let out = Command::new("redis-cli")
        .args(["-n", "5", "DEL", "atlas:limit:registration:127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let h = Harness::postgres().await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut config = h.config();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.redis_url = Some(redis.clone());
        config.limits.registrations_per_address = (3, 3);
        replicas.push(atlas_server::start(config).await.unwrap());
    }
    let http = atlas_client::http_client().unwrap();
    let register = |i: usize| {
        let (http, url) = (http.clone(), base(&replicas[i % 2]));
        async move {
            let body = atlas_testing::registration(&format!("shared{i}"), "PHONE");
            http.post(format!("{url}/users"))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..3 {
        assert_eq!(register(i).await.status(), 201, "registration {i}");
    }
    // Three on the two replicas together: the fourth is refused wherever it goes.
    for i in 3..5 {
        let refused = register(i).await;
        assert_eq!(refused.status(), 429, "registration {i}");
        let wait: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&wait), "{wait}");
    }
    for r in replicas {
        r.stop().await;
    }
}

/// `n` `atlas serve` processes on one new PostgreSQL database and `redis`,
/// behind [`PUBLIC`] when `behind` (full SDK clients name the replica they
/// talk to, so the groups bench runs without it).
struct Replicas {
    servers: Vec<atlas_testing::Server>,
    pg: atlas_store::testdb::TempPostgres,
    _data: atlas_store::testdb::TempDir,
}

async fn serve_replicas(n: usize, redis: &str, behind: bool) -> Replicas {
    let pg = atlas_store::testdb::TempPostgres::create().await.unwrap();
    let data = atlas_store::testdb::TempDir::new("atlas-replicas").unwrap();
    let kek = data.path.join("server.kek");
    let mut extra = vec![
        "--database-url",
        &pg.url,
        "--kek-file",
        kek.to_str().unwrap(),
        "--redis-url",
        redis,
        "--registrations-per-minute",
        "1000",
    ];
    if behind {
        extra.extend(["--public-url", PUBLIC]);
    }
    let servers = (0..n)
        .map(|_| atlas_testing::serve(&data, "127.0.0.1:0", &extra))
        .collect();
    Replicas {
        servers,
        pg,
        _data: data,
    }
}

impl Replicas {
    fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|r| r.url.clone()).collect()
    }
}

/// `atlas bench send --verify` over `servers` behind [`PUBLIC`], started in
/// the background: 6 senders for a 1 s warm-up and `seconds` measured.
fn bench_in_background(servers: &[String], seconds: u32) -> Child {
    let mut args = vec!["bench".to_owned(), "send".to_owned()];
    for url in servers {
        args.extend(["--server".to_owned(), url.clone()]);
    }
    args.extend(
        [
            "--public-url",
            PUBLIC,
            "--senders",
            "6",
            "--warmup",
            "1s",
            "--duration",
            &format!("{seconds}s"),
            "--verify",
            "--json",
        ]
        .map(str::to_owned),
    );
    Command::new(atlas_testing::atlas_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The bench's report, once it has finished.
fn bench_report(bench: Child) -> serde_json::Value {
    let out = bench.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    assert!(out.status.success(), "the delivery check failed: {report}");
    report
}

/// A number from the database, e.g. `SELECT count(*) …`.
async fn number(db: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db)
        .await
        .unwrap()
}

/// Waits (a minute at most) until the bench's sends have stored `count` messages.
async fn wait_until_stored(db: &sqlx::PgPool, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while number(db, "SELECT count(*) FROM messages").await < count {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the database says of the run, apart from the bench's own check:
/// every stored message is one send (one idempotency record, no send stored
/// twice) with its signed `accepted` receipt. Returns how many were stored.
async fn stored_once_with_receipts(db: &sqlx::PgPool) -> i64 {
    let stored = number(db, "SELECT count(*) FROM messages").await;
    assert_eq!(number(db, "SELECT count(*) FROM send_log").await, stored);
    let twice = "SELECT count(*) FROM (SELECT sender_id, left(body, 16) FROM messages \
                 GROUP BY 1, 2 HAVING count(*) > 1) AS t";
    assert_eq!(number(db, twice).await, 0, "a send was stored twice");
    let unreceipted = "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM receipts r \
                       WHERE r.message_id = m.message_id AND r.receipt_type = 'accepted')";
    assert_eq!(
        number(db, unreceipted).await,
        0,
        "a message without its receipt"
    );
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atlas_bench_carries_on_through_the_others_when_a_replica_is_killed() {
    let mut replicas = serve_replicas(3, &shared_redis(), true).await;
    let urls = replicas.urls();
    let db = sqlx::PgPool::connect(&replicas.pg.url).await.unwrap();

    let bench = bench_in_background(&urls, 6);
    wait_until_stored(&db, 100).await;
    replicas.servers[1].kill_9();
    let report = bench_report(bench);

    // The devices of the killed replica moved on, and nothing failed for it.
    assert!(report["failovers"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    // Every answered send is in its recipient's queue exactly once, with its receipt…
    let delivery = &report["delivery"];
    assert_eq!(
        (
            &delivery["missing"],
            &delivery["duplicated"],
            &delivery["receipts_missing"]
        ),
        (&0.into(), &0.into(), &0.into()),
        "{report}"
    );
    assert!(
        delivery["receipts_checked"].as_u64().unwrap() > 0,
        "{report}"
    );
    // …and the database agrees: what was stored is exactly what was answered.
    let stored = stored_once_with_receipts(&db).await;
    assert_eq!(delivery["answered"].as_i64().unwrap(), stored, "{report}");
    assert_eq!(delivery["queued"].as_i64().unwrap(), stored, "{report}");
}

/// A `redis-server` of the test's own, stopped when dropped (a failing test too).
struct OwnRedis(Child);

impl OwnRedis {
    /// Stops it as a crash would (SIGKILL).
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts [`OwnRedis`] on `port` and waits until it listens.
fn redis_server(port: u16) -> OwnRedis {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    OwnRedis(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_requests_fail_closed_and_service_resumes_when_it_returns() {
    if required_tool("redis-server").is_none() {
        return;
    }
    let port = free_port();
    let mut redis = redis_server(port);
    let mut h = Harness::sqlite().await;
    h.stop().await;
    let server = replica(&h, &format!("redis://127.0.0.1:{port}")).await;
    let url = base(&server);
    let http = atlas_client::http_client().unwrap();
    let alice = RawDevice::register(&url, "alice").await.behind(PUBLIC);
    let token = alice.token().await;
    let sent = alice.send_junk("alice", "RAW", 3).await;
    assert_eq!(sent.len(), 3);
    let ready = |http: reqwest::Client| {
        let url = url.clone();
        async move { http.get(format!("{url}/readyz")).send().await.unwrap() }
    };
    assert_eq!(ready(http.clone()).await.status(), 200);

    redis.kill();
    // Fail closed: no proof is accepted unchecked while the cache is away.
    let (status, body) = alice.call(&token, "GET", "/messages", None).await;
    assert_eq!(
        (status, &body["error"]),
        (503, &"unavailable".into()),
        "{body}"
    );
    let proof = alice.proof("GET", "/messages", Some(&token), now());
    let (_, headers, _) = alice
        .send_raw(
            "GET",
            "/messages",
            Some(format!("DPoP {token}")),
            Some(proof),
            None,
        )
        .await;
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    let not_ready = ready(http.clone()).await;
    assert_eq!(not_ready.status(), 503);
    let checks: serde_json::Value = not_ready.json().await.unwrap();
    assert_eq!(checks["checks"]["redis"], false, "{checks}");
    assert_eq!(checks["checks"]["database"], true, "{checks}");
    let alive = http.get(format!("{url}/livez")).send().await.unwrap();
    assert_eq!(alive.status(), 200, "alive, only not ready");

    // Redis returns (empty: it kept nothing): service resumes by itself, and
    // what was acknowledged before the outage is all there.
    let _redis = redis_server(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (status, body) = alice.call(&token, "GET", "/messages", None).await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    for id in &sent {
        assert!(ids.contains(&id.as_str()), "{id} kept: {listed}");
    }
    assert_eq!(ready(http).await.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_sends_closed_and_loses_nothing() {
    if required_tool("redis-server").is_none() {
        return;
    }
    let port = free_port();
    let mut redis = redis_server(port);
    let replicas = serve_replicas(2, &format!("redis://127.0.0.1:{port}"), true).await;
    let urls = replicas.urls();
    let db = sqlx::PgPool::connect(&replicas.pg.url).await.unwrap();
    let http = atlas_client::http_client().unwrap();

    let bench = bench_in_background(&urls, 10);
    wait_until_stored(&db, 60).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for url in &urls {
        let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503, "{url} is not ready without Redis");
    }
    let before_return = number(&db, "SELECT count(*) FROM messages").await;
    let _redis = redis_server(port);
    let report = bench_report(bench);

    // While Redis was away, sends failed closed (503 unavailable), and only so.
    let errors = report["errors"].as_object().unwrap();
    assert!(errors["unavailable"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(errors.len(), 1, "{report}");
    // Service resumed by itself: sends were stored after Redis returned.
    let stored = stored_once_with_receipts(&db).await;
    assert!(
        stored > before_return,
        "nothing after Redis returned: {report}"
    );
    // Nothing answered was lost.
    let delivery = &report["delivery"];
    assert_eq!(
        (&delivery["missing"], &delivery["duplicated"]),
        (&0.into(), &0.into()),
        "{report}"
    );
    assert_eq!(delivery["answered"].as_i64().unwrap(), stored, "{report}");
    for url in &urls {
        let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{url} ready again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atlas_bench_groups_spread_over_replicas_commit_and_read_through_redis() {
    let replicas = serve_replicas(3, &shared_redis(), false).await;
    let mut args = vec!["bench", "groups"];
    for r in &replicas.servers {
        args.extend(["--server", &r.url]);
    }
    // Groups of three, one member on each replica; every third operation a commit.
    args.extend([
        "--senders",
        "6",
        "--group-size",
        "3",
        "--commit-every",
        "3",
        "--warmup",
        "1s",
        "--duration",
        "4s",
        "--json",
    ]);
    let (ok, out, err) = run_atlas(None, None, &args);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let groups = &report["groups"];
    assert!(groups["commits"].as_u64().unwrap() > 0, "{report}");
    // Each message is read by the two members on the other replicas (pushed
    // through Redis), once each.
    let (sent, decrypted) = (
        report["messages"].as_u64().unwrap(),
        groups["decrypted"].as_u64().unwrap(),
    );
    assert!(sent > 0 && decrypted > 0, "{report}");
    assert!(decrypted <= (sent + 6) * 2, "{report}");
}

/// Reads `socket` until the server closes it (a second at most); the close
/// frame's code and reason.
pub(crate) async fn closed_by_server(socket: &mut atlas_client::PushSocket) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the socket was not closed within a second");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                return (close.code.into(), close.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                panic!("closed without a reason: {frame:?}")
            }
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_close_sockets_and_kill_tokens_on_every_replica() {
    let h = Harness::postgres().await;
    let redis = shared_redis();
    let (a, b, c) = (
        replica(&h, &redis).await,
        replica(&h, &redis).await,
        replica(&h, &redis).await,
    );
    let mut bob = RawDevice::register(&base(&b), "bob").await.behind(PUBLIC);
    let mut carol = RawDevice::register(&base(&c), "carol").await.behind(PUBLIC);
    let (bob_token, carol_token) = (bob.token().await, carol.token().await);
    let mut bob_socket = bob.push_socket(&bob_token).await;
    let mut carol_socket = carol.push_socket(&carol_token).await;
    let http = atlas_client::http_client().unwrap();
    let admin = |path: &str, scope: &str| {
        let request = http
            .post(format!("{}/admin/{path}", base(&a)))
            .bearer_auth(operator_token(&h.database_url(), scope))
            .json(&serde_json::json!({}));
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
        }
    };

    // An operator removes bob's device through A: B closes its socket at once,
    // and its token is dead on every replica.
    admin("devices/bob/RAW/revoke", "devices").await;
    assert_eq!(
        closed_by_server(&mut bob_socket).await,
        (1008, "device_revoked".into())
    );
    for r in [&a, &b, &c] {
        bob.base = base(r);
        let (status, body) = bob.call(&bob_token, "GET", "/messages", None).await;
        assert_eq!(status, 401, "{body}");
    }

    // Carol's socket on C was left alone; rotating the token key through A
    // closes it, and her token is refused by B and C at once, before any
    // token under the new key has made them look for it.
    admin("token-key/rotate", "keys").await;
    assert_eq!(
        closed_by_server(&mut carol_socket).await,
        (1008, "tokens_revoked".into())
    );
    for r in [&b, &c, &a] {
        carol.base = base(r);
        let (status, body) = carol.call(&carol_token, "GET", "/messages", None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{body}"
        );
    }
    let fresh = carol.token().await;
    let (status, _) = carol.call(&fresh, "GET", "/messages", None).await;
    assert_eq!(status, 200, "a new token works");
    for r in [a, b, c] {
        r.stop().await;
    }
}
