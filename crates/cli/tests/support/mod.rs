//! Shared helpers of the end-to-end tests: a server on port 0 over SQLite or a
//! fresh PostgreSQL database, a controllable clock, and a raw device that
//! builds its own requests (to send what a real client never would).
#![allow(dead_code)]

use atlas_crypto::dpop::create_proof;
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::olm::OlmAccount;
use atlas_proto::api::{RegisterRequest, TokenRequest, TokenResponse, token_signing_payload};
use atlas_proto::{DeviceId, UserId};
use atlas_server::{Clock, RunningServer, ServerConfig};
use atlas_store::testdb::{TempDir, TempPostgres};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// The system clock plus an offset the test can move.
#[derive(Default)]
pub struct TestClock {
    offset_secs: AtomicI64,
}

impl TestClock {
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        let t = OffsetDateTime::now_utc()
            + time::Duration::seconds(self.offset_secs.load(Ordering::SeqCst));
        t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
    }
}

pub enum Backend {
    Sqlite(TempDir),
    Postgres(TempPostgres),
}

/// A database, a clock and (while running) a server.
pub struct Harness {
    pub backend: Backend,
    pub clock: Arc<TestClock>,
    pub server: Option<RunningServer>,
    pub addr: Option<SocketAddr>,
    pub homes: TempDir,
}

impl Harness {
    pub async fn sqlite() -> Self {
        Self::with(Backend::Sqlite(TempDir::new("atlas-e2e").unwrap())).await
    }

    pub async fn postgres() -> Self {
        Self::with(Backend::Postgres(
            TempPostgres::create()
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (ATLAS_TEST_POSTGRES_URL)"),
        ))
        .await
    }

    async fn with(backend: Backend) -> Self {
        let mut h = Self {
            backend,
            clock: Arc::new(TestClock::default()),
            server: None,
            addr: None,
            homes: TempDir::new("atlas-e2e-homes").unwrap(),
        };
        h.start().await;
        h
    }

    pub fn database_url(&self) -> String {
        match &self.backend {
            Backend::Sqlite(dir) => dir.sqlite_url("atlas.db"),
            Backend::Postgres(pg) => pg.url.clone(),
        }
    }

    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(self.database_url());
        config.listen = self.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        config.max_body_bytes = 256 * 1024;
        config.max_envelope_bytes = 16 * 1024;
        if let Backend::Postgres(_) = &self.backend {
            // SQLite keeps its KEK beside the database by default; PostgreSQL servers share one file.
            config.kek_file = Some(self.homes.path.join("server.kek"));
        }
        config
    }

    /// Starts the server (on the same port as before, after a restart).
    pub async fn start(&mut self) {
        let server = atlas_server::start_with_clock(self.config(), self.clock.clone())
            .await
            .expect("server starts");
        self.addr = Some(server.addr);
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    pub fn profile(&self, name: &str) -> std::path::PathBuf {
        self.homes.path.join(name)
    }

    /// Runs one SQL statement on the server's database (fault injection); rows affected.
    pub async fn sql(&self, statement: &str) -> u64 {
        use sqlx::Connection;
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        match &self.backend {
            Backend::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url())
                    .await
                    .unwrap();
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            Backend::Postgres(pg) => {
                let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        }
    }
}

impl Harness {
    /// `(kid, secret)` of every stored server key of `purpose`, as a reader of the database sees them.
    pub async fn stored_server_keys(&self, purpose: &str) -> Vec<(String, Vec<u8>)> {
        use sqlx::Connection;
        let query = "SELECT kid, secret FROM server_keys WHERE purpose = $1 ORDER BY created_at";
        match &self.backend {
            Backend::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url())
                    .await
                    .unwrap();
                sqlx::query_as(query)
                    .bind(purpose)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
            Backend::Postgres(pg) => {
                let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
                sqlx::query_as(query)
                    .bind(purpose)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }
}

/// Runs one SQL statement on a device's local state (`state.db` of a profile); rows affected.
pub async fn profile_sql(profile: &std::path::Path, statement: &str) -> u64 {
    use sqlx::Connection;
    let db = profile.join("state.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected()
}

/// A device that crafts its own requests.
pub struct RawDevice {
    pub base: String,
    pub http: reqwest::Client,
    pub account: OlmAccount,
    pub dpop: JwsSigner,
    /// The user's identity key (this raw device is the user's first).
    pub identity: atlas_crypto::identity::UserIdentity,
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// The server's clock, when the test moves it (proofs and grants must follow).
    pub clock: Option<Arc<TestClock>>,
}

pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl RawDevice {
    pub async fn register(base: &str, user: &str) -> Self {
        let account = OlmAccount::new();
        let user_id = UserId::new(user).unwrap();
        let device_id = DeviceId::new("RAW").unwrap();
        let http = atlas_client::http_client().unwrap();
        let identity = atlas_crypto::identity::UserIdentity::generate();
        let keys = account.device_keys(&user_id, &device_id);
        let request = RegisterRequest {
            user_id: user_id.clone(),
            identity_key: Some(identity.public_key()),
            certificate: Some(identity.certify(&user_id, &keys)),
            device: keys,
            link_token: None,
            link_proof: None,
            registration_token: None,
        };
        let r = http
            .post(format!("{base}/users"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        Self {
            base: base.to_owned(),
            http,
            account,
            dpop: JwsSigner::generate_ed25519(),
            identity,
            user_id,
            device_id,
            clock: None,
        }
    }

    /// Sends `count` messages to one device that nothing can decrypt (no
    /// session was ever made); their message ids.
    pub async fn send_junk(&self, user: &str, device: &str, count: usize) -> Vec<String> {
        let token = self.token().await;
        let mut ids = Vec::new();
        for i in 0..count {
            let (status, body) = self
                .call(
                    &token,
                    "POST",
                    "/messages",
                    Some(serde_json::json!({
                        "recipient_id": user,
                        "client_message_id": format!("garbage-{user}-{i}"),
                        "envelopes": [{"device_id": device, "msg_type": 1, "body": "R2FyYmFnZSBjaXBoZXJ0ZXh0IGZyb20gbWFsbG9yeQ"}],
                    })),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            ids.push(body["message_id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// Reports every message in `ids` as a `KeyNotFound` failure; how many the server recorded.
    pub async fn report_failures(&self, ids: &[String]) -> u64 {
        let token = self.token().await;
        let reports: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"message_id": id, "outcome": "failure", "code": "KeyNotFound"}))
            .collect();
        let (status, answer) = self
            .call(
                &token,
                "POST",
                "/reports/decryption",
                Some(serde_json::json!({ "reports": reports })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["recorded"].as_u64().unwrap()
    }

    /// Dates proofs and grants by `clock` instead of the system clock.
    pub fn following(mut self, clock: &Arc<TestClock>) -> Self {
        self.clock = Some(clock.clone());
        self
    }

    fn now(&self) -> i64 {
        self.clock.as_ref().map_or_else(now, |c| c.unix())
    }

    pub fn proof(&self, method: &str, path: &str, token: Option<&str>, iat: i64) -> String {
        create_proof(
            &self.dpop,
            method,
            &format!("{}{path}", self.base),
            iat,
            token,
            None,
        )
    }

    pub async fn token_with(&self, dpop: &JwsSigner) -> TokenResponse {
        let iat = self.now();
        let jkt = dpop.public_jwk().thumbprint();
        let grant = TokenRequest::DeviceSignature {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
            iat,
            signature: self.account.sign(&token_signing_payload(
                &self.user_id,
                &self.device_id,
                &jkt,
                iat,
            )),
        };
        let proof = create_proof(
            dpop,
            "POST",
            &format!("{}/token", self.base),
            iat,
            None,
            None,
        );
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .header("DPoP", proof)
            .json(&grant)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    pub async fn token(&self) -> String {
        self.token_with(&self.dpop).await.access_token
    }

    /// A request with explicit Authorization and DPoP headers; returns status, headers and JSON body.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<String>,
        proof: Option<String>,
        body: Option<Vec<u8>>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        if let Some(p) = proof {
            request = request.header("DPoP", p);
        }
        if let Some(b) = body {
            request = request.header("Content-Type", "application/json").body(b);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// `POST /token` with this device's DPoP key and `grant` as the body.
    pub async fn post_token(&self, grant: serde_json::Value) -> (u16, serde_json::Value) {
        let proof = self.proof("POST", "/token", None, self.now());
        let (status, _, json) = self
            .send_raw(
                "POST",
                "/token",
                None,
                Some(proof),
                Some(grant.to_string().into_bytes()),
            )
            .await;
        (status, json)
    }

    /// An unauthenticated JSON POST.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (status, _, json) = self
            .send_raw(
                "POST",
                path,
                None,
                None,
                Some(body.to_string().into_bytes()),
            )
            .await;
        (status, json)
    }

    /// An authenticated request with a fresh, correct proof.
    pub async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let proof = self.proof(
            method,
            path.split('?').next().unwrap(),
            Some(token),
            self.now(),
        );
        let (status, _, json) = self
            .send_raw(
                method,
                path,
                Some(format!("DPoP {token}")),
                Some(proof),
                body.map(|b| b.to_string().into_bytes()),
            )
            .await;
        (status, json)
    }
}

/// Runs the `atlas` binary with `home` as `ATLAS_HOME` and `token` (only) as
/// `ATLAS_ADMIN_TOKEN`; returns success, stdout and stderr.
pub fn run_atlas(
    home: Option<&std::path::Path>,
    token: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"));
    cmd.env_remove("ATLAS_ADMIN_TOKEN").args(args);
    if let Some(home) = home {
        cmd.env("ATLAS_HOME", home);
    }
    if let Some(token) = token {
        cmd.env("ATLAS_ADMIN_TOKEN", token);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `atlas` binary as a client (`ATLAS_HOME` = `home`) and returns its
/// stdout, failing the test if the command fails.
pub fn atlas_ok(home: &std::path::Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_atlas(Some(home), None, args);
    assert!(ok, "atlas {args:?}: {stderr}");
    stdout
}

/// An operator token with `scope`, made with `atlas admin token create` against the server's database.
pub fn operator_token(database_url: &str, scope: &str) -> String {
    let (ok, token, stderr) = run_atlas(
        None,
        None,
        &[
            "admin",
            "token",
            "create",
            "--scope",
            scope,
            "--database-url",
            database_url,
        ],
    );
    assert!(ok, "{stderr}");
    token.trim().to_owned()
}

/// The body of a valid first-device registration of `user` (a new identity key certifying `device`).
pub fn registration(user: &str, device: &str) -> serde_json::Value {
    let keys = fresh_keys(user, device);
    let identity = atlas_crypto::identity::UserIdentity::generate();
    let certificate = identity.certify(&UserId::new(user).unwrap(), &keys);
    serde_json::json!({
        "user_id": user,
        "device": keys,
        "identity_key": identity.public_key(),
        "certificate": certificate,
    })
}

/// A new, validly self-signed key bundle for `user`'s device `device`.
pub fn fresh_keys(user: &str, device: &str) -> atlas_proto::api::DeviceKeys {
    OlmAccount::new().device_keys(&UserId::new(user).unwrap(), &DeviceId::new(device).unwrap())
}

/// Declares each test once for SQLite and once for PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::support::Harness::sqlite().await).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::support::Harness::postgres().await).await } )*
        }
    };
}

/// `atlas serve` as a child process, with everything it logs kept for the test.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// What the server logged so far, one line each.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Starts `atlas serve --listen LISTEN --data-dir DATA EXTRA…` (log level from
/// `ATLAS_LOG`, `warn` unless the test sets it) and waits for its address.
pub fn serve(data: &TempDir, listen: &str, extra: &[&str]) -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"))
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(&data.path)
        .args(extra)
        .env(
            "ATLAS_LOG",
            std::env::var("ATLAS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server prints its address").unwrap();
        if let Some(rest) = line.strip_prefix("atlas listening on ") {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Server { child, url, log }
}

/// An independent tool the test needs: its path, or `None` to skip — except
/// when `ATLAS_REQUIRE_INTEROP` is set (CI), where a missing tool fails the test.
pub fn required_tool(name: &str) -> Option<String> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if found.is_none() {
        assert!(
            std::env::var_os("ATLAS_REQUIRE_INTEROP").is_none(),
            "{name} is required (ATLAS_REQUIRE_INTEROP is set) but not installed"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// `GET /health/e2ee`.
pub async fn e2ee_health(url: &str) -> atlas_proto::e2ee::E2eeHealth {
    serde_json::from_value(get_json(&format!("{url}/health/e2ee")).await).unwrap()
}

/// `GET /metrics` as text.
pub async fn metrics_text(url: &str) -> String {
    let http = atlas_client::http_client().unwrap();
    let answer = http.get(format!("{url}/metrics")).send().await.unwrap();
    answer.text().await.unwrap()
}

/// The value of one series in a `/metrics` text.
pub fn series(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

/// `atlas_crypto_operations_total{operation="decrypt",status=STATUS}`.
pub fn decrypt_count(metrics: &str, status: &str) -> f64 {
    series(
        metrics,
        &format!("atlas_crypto_operations_total{{operation=\"decrypt\",status=\"{status}\"}}"),
    )
}

/// Runs runbook lines with bash, verbatim but for the placeholders the caller
/// filled in: the runbook's hosts point at `url`, and curl fails on HTTP errors
/// and stays quiet. Returns stdout; a failing line fails the test.
pub fn run_runbook(lines: &str, url: &str) -> String {
    let script = format!("set -euo pipefail\n{lines}")
        .replace("https://trust.atlas.dev", url)
        .replace("https://api.atlas.dev", url)
        .replace("curl ", "curl -sf ");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A registered SDK client in the harness's profile `name` (user `name`).
pub async fn client(h: &Harness, name: &str) -> atlas_client::Client {
    atlas_client::Client::register(&h.profile(name), &h.url(), UserId::new(name).unwrap(), None)
        .await
        .unwrap()
}

/// Makes `a` and `b` exchange one message each way, so later messages between
/// them are ordinary (not pre-key) messages of one established session.
pub async fn acquaint(a: &atlas_client::Client, b: &atlas_client::Client) {
    a.send_text(b.user_id(), "hello").await.unwrap();
    b.sync().await.unwrap();
    b.send_text(a.user_id(), "hi").await.unwrap();
    a.sync().await.unwrap();
}

/// Marks every one-time key of `user` consumed, so the next sender gets the fallback key.
pub async fn exhaust_one_time_keys(h: &Harness, user: &str) {
    // Written to the database: the server's per-user claim budget would hand out
    // the fallback key long before a stranger's claims could use them all up.
    let consumed = h
        .sql(&format!(
            "UPDATE user_keys SET status = 'consumed' WHERE user_id = '{user}' \
             AND key_type = 'one_time' AND status = 'active'"
        ))
        .await;
    assert!(consumed > 0, "{user} had one-time keys");
}

/// Fault injection for "key rotated before the message arrived": `to`'s
/// one-time keys are claimed, `from` sends `text` to its fallback key, and
/// `to` rotates the fallback key twice (Olm keeps one previous) before reading.
pub async fn send_to_rotated_key(
    h: &Harness,
    from: &atlas_client::Client,
    to: &atlas_client::Client,
    text: &str,
) -> atlas_proto::MessageId {
    exhaust_one_time_keys(h, to.user_id().as_str()).await;
    let sent = from.send_text(to.user_id(), text).await.unwrap();
    to.rotate_fallback_key().await.unwrap();
    to.rotate_fallback_key().await.unwrap();
    sent.message_id
}

/// `GET url` as JSON, without authentication.
pub async fn get_json(url: &str) -> serde_json::Value {
    let http = atlas_client::http_client().unwrap();
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Fault injection: replaces every active one-time key of `user` in
/// `user_keys` by a key the user never made; returns how many.
pub async fn corrupt_one_time_keys(h: &Harness, user: &str) -> u64 {
    let foreign = OlmAccount::new().curve25519();
    h.sql(&format!(
        "UPDATE user_keys SET public_key = '{foreign}' WHERE user_id = '{user}' AND key_type = 'one_time' AND status = 'active'"
    ))
    .await
}

/// Fault injection: the server delivers the last of `user`'s undelivered
/// messages first (it takes the lowest sequence number, the others move up).
pub async fn deliver_last_first(h: &Harness, user: &str) {
    h.sql(&format!(
        "UPDATE messages SET seq = seq + 1000 WHERE recipient_id = '{user}' AND delivered_at IS NULL"
    ))
    .await;
    h.sql(&format!(
        "UPDATE messages SET seq = (SELECT MIN(seq) - 1000 FROM messages WHERE recipient_id = '{user}' AND seq > 1000) \
         WHERE recipient_id = '{user}' AND seq = (SELECT MAX(seq) FROM messages WHERE recipient_id = '{user}')"
    ))
    .await;
    h.sql(&format!(
        "UPDATE messages SET seq = seq - 999 WHERE recipient_id = '{user}' AND seq > 1000"
    ))
    .await;
}

/// Fault injection: `profile`'s stored session with `peer` is overwritten by
/// its session with `other` (a desynchronised ratchet).
pub async fn desync_session(h: &Harness, profile: &str, peer: &str, other: &str) {
    let replaced = profile_sql(
        &h.profile(profile),
        &format!(
            "UPDATE sessions SET pickle = (SELECT pickle FROM sessions WHERE peer_user = '{other}') WHERE peer_user = '{peer}'"
        ),
    )
    .await;
    assert_eq!(replaced, 1);
}

/// `/health/e2ee` shows `failed` unrecovered and `recovered` recovered messages.
pub async fn assert_health_counts(url: &str, failed: u64, recovered: u64) {
    let health = e2ee_health(url).await;
    assert_eq!(
        (
            health.failed_decryptions_last_hour,
            health.recovered_last_hour
        ),
        (failed, recovered),
        "{health:?}"
    );
}

/// Sends "m1" … "mN" from `from` to `to`; returns the message ids in order.
pub async fn send_numbered(
    from: &atlas_client::Client,
    to: &atlas_client::Client,
    n: usize,
) -> Vec<atlas_proto::MessageId> {
    let mut ids = Vec::with_capacity(n);
    for i in 1..=n {
        let sent = from
            .send_text(to.user_id(), &format!("m{i}"))
            .await
            .unwrap();
        ids.push(sent.message_id);
    }
    ids
}
