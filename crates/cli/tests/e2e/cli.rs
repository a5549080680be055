//! The `atlas` binary as a user runs it: the README quickstart with the exact
//! command forms, JSON output, a server that demands DPoP nonces, and a
//! graceful stop on SIGTERM.

use atlas_store::testdb::TempDir;
use atlas_testing::{Server, serve};
use std::process::Command;

fn atlas(home: &TempDir, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atlas"))
        .env("ATLAS_HOME", &home.path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(home: &TempDir, args: &[&str]) -> String {
    let (success, stdout, stderr) = atlas(home, args);
    assert!(success, "atlas {args:?} failed: {stderr}");
    stdout
}

fn quickstart(server: &Server, home: &TempDir) {
    let url = server.url.as_str();
    ok(
        home,
        &["--profile", "alice", "register", "alice", "--server", url],
    );
    ok(
        home,
        &["--profile", "bob", "register", "bob", "--server", url],
    );
    let sent: serde_json::Value = serde_json::from_str(&ok(
        home,
        &["--profile", "alice", "send", "bob", "hello bob", "--json"],
    ))
    .unwrap();
    assert_eq!(sent["deliveries"].as_array().unwrap().len(), 1);
    let inbox = ok(home, &["--profile", "bob", "inbox"]);
    assert!(
        inbox.contains("alice/") && inbox.contains(": hello bob"),
        "{inbox}"
    );
    ok(home, &["--profile", "bob", "send", "alice", "hi alice"]);
    let received: serde_json::Value =
        serde_json::from_str(&ok(home, &["--profile", "alice", "inbox", "--json"])).unwrap();
    assert_eq!(received[0]["text"], "hi alice");
    assert_eq!(received[0]["sender_id"], "bob");
    let again: serde_json::Value =
        serde_json::from_str(&ok(home, &["--profile", "alice", "inbox", "--json"])).unwrap();
    assert_eq!(
        again,
        serde_json::json!([]),
        "acknowledged messages are gone"
    );

    // A second device through a link code.
    let code = ok(home, &["--profile", "alice", "device", "link-code"]);
    ok(
        home,
        &[
            "--profile",
            "alice2",
            "register",
            "alice",
            "--server",
            url,
            "--link-code",
            code.trim(),
        ],
    );
    // alice's first device certifies the newcomer on its next command.
    let own = ok(home, &["--profile", "alice", "devices"]);
    let certified = own
        .lines()
        .filter(|l| l.split_whitespace().take(3).skip(1).eq(["active", "yes"]))
        .count();
    assert_eq!(certified, 2, "{own}");
    let devices: serde_json::Value = serde_json::from_str(&ok(
        home,
        &["--profile", "bob", "devices", "alice", "--json"],
    ))
    .unwrap();
    let listed = devices["devices"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|d| d["status"] == "active" && d["certificate"].is_string())
    );
    ok(
        home,
        &["--profile", "bob", "send", "alice", "to both of you"],
    );
    assert!(ok(home, &["--profile", "alice2", "inbox"]).contains("to both of you"));
    assert!(ok(home, &["--profile", "alice", "inbox"]).contains("to both of you"));

    // Mistakes get a clear error and a non-zero exit.
    let (success, _, stderr) = atlas(home, &["--profile", "alice", "send", "nobody", "x"]);
    assert!(!success);
    assert!(stderr.contains("unknown_user"), "{stderr}");
    let (success, _, stderr) = atlas(home, &["--profile", "ghost", "inbox"]);
    assert!(!success && stderr.contains("register it first"), "{stderr}");
    let (success, _, stderr) = atlas(
        home,
        &["--profile", "alice", "register", "alice", "--server", url],
    );
    assert!(
        !success && stderr.contains("already registered"),
        "{stderr}"
    );
    let (success, _, stderr) = atlas(
        home,
        &["--profile", "x", "register", "bad user", "--server", url],
    );
    assert!(!success && stderr.contains("invalid value"), "{stderr}");
}

fn stop(server: &mut Server) {
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop, got {status}");
}

#[test]
fn readme_quickstart_works_and_sigterm_stops_cleanly() {
    let data = TempDir::new("atlas-cli-data").unwrap();
    let home = TempDir::new("atlas-cli-home").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &[]);
    quickstart(&server, &home);
    stop(&mut server);
    // The data survived the stop: a new server process on the same address serves the same users.
    let mut server = serve(&data, server.url.trim_start_matches("http://"), &[]);
    ok(
        &home,
        &["--profile", "alice", "send", "bob", "after restart"],
    );
    assert!(ok(&home, &["--profile", "bob", "inbox"]).contains("after restart"));
    stop(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_server_dpop_nonces() {
    let data = TempDir::new("atlas-cli-nonce").unwrap();
    let home = TempDir::new("atlas-cli-nonce-home").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &["--require-dpop-nonce"]);
    // The server really demands nonces: a proof without one is refused with a fresh nonce.
    let device = atlas_testing::RawDevice::register(&server.url, "raw").await;
    let r = device
        .http
        .post(format!("{}/token", server.url))
        .header(
            "DPoP",
            device.proof("POST", "/token", None, atlas_testing::now()),
        )
        .json(&serde_json::json!({"grant_type": "refresh_token", "refresh_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("dpop-nonce"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");
    let challenged =
        |m: &str| atlas_testing::series(m, "atlas_dpop_proofs_total{result=\"use_nonce\"}");
    let before = challenged(&atlas_testing::metrics_text(&server.url).await);

    // …and the CLI still completes the whole quickstart, answering each challenge.
    let s = &server;
    let h = &home;
    tokio::task::block_in_place(|| quickstart(s, h));
    let after = challenged(&atlas_testing::metrics_text(&server.url).await);
    assert!(
        after > before,
        "the clients were challenged ({before} → {after}) and followed"
    );
    stop(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_dpop_dissects_real_proofs() {
    let mut h = atlas_testing::Harness::sqlite().await;
    let url = h.url();
    let device = atlas_testing::RawDevice::register(&url, "ops").await;
    let token = device.token().await;
    let proof = device.proof("POST", "/messages", Some(&token), atlas_testing::now());
    let messages_url = format!("{url}/messages");
    let run = |args: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_atlas"))
            .args(args)
            .output()
            .unwrap()
    };

    let base = |proof: &str| {
        vec![
            "verify-dpop".to_string(),
            "--proof".into(),
            proof.into(),
            "--token".into(),
            format!("DPoP {token}"),
        ]
    };
    let mut args = base(&proof);
    args.extend([
        "--method".into(),
        "POST".into(),
        "--url".into(),
        messages_url.clone(),
    ]);
    let out = run(args.clone());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS token binding") && stdout.contains("PASS signature"),
        "{stdout}"
    );
    args.push("--json".into());
    let report: serde_json::Value = serde_json::from_slice(&run(args).stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["claims"]["htm"], "POST");

    // A proof made with another key than the token's: binding fails, exit status says so.
    let thief = atlas_crypto::jws::JwsSigner::generate_p256();
    let stolen = atlas_crypto::dpop::create_proof(
        &thief,
        "GET",
        &messages_url,
        atlas_testing::now(),
        Some(&token),
        None,
    );
    let mut args = base(&stolen);
    args.extend(["--method".into(), "POST".into()]);
    let out = run(args);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL token binding") && stdout.contains("FAIL htm"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Invalid DPoP proof: failed token binding, htm")
    );

    // Garbage, and a proof read from a file.
    let out = run(base("not-a-proof"));
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("FAIL structure")
    );
    let dir = TempDir::new("atlas-verify-dpop").unwrap();
    let file = dir.path.join("proof.txt");
    std::fs::write(&file, format!("{proof}\n")).unwrap();
    let out = run(base(&format!("@{}", file.display())));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_inspect_and_clear_the_replay_cache() {
    let mut h = atlas_testing::Harness::sqlite().await;
    let url = h.url();
    let db = h.database_url();
    let atlas = |args: &[&str], token: Option<&str>| atlas_testing::run_atlas(None, token, args);

    let (ok, stdout, stderr) = atlas(
        &[
            "admin",
            "token",
            "create",
            "--scope",
            "dpop",
            "--label",
            "on-call",
            "--database-url",
            &db,
            "--json",
        ],
        None,
    );
    assert!(ok, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let op_token = created["token"].as_str().unwrap().to_owned();
    let (ok, _, stderr) = atlas(
        &[
            "admin",
            "token",
            "create",
            "--scope",
            "everything",
            "--database-url",
            &db,
        ],
        None,
    );
    // Refused by the one list of scopes, which the error names.
    assert!(
        !ok && stderr.contains("invalid value 'everything'") && stderr.contains("dpop"),
        "{stderr}"
    );

    // A proof is used, then replayed: refused.
    let device = atlas_testing::RawDevice::register(&url, "ops").await;
    let token = device.token().await;
    let proof = device.proof("GET", "/keys/count", Some(&token), atlas_testing::now());
    let jti = atlas_crypto::jws::CompactJws::parse(&proof)
        .unwrap()
        .claims()
        .unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = |proof: String| {
        device.send_raw(
            "GET",
            "/keys/count",
            Some(format!("DPoP {token}")),
            Some(proof),
            None,
        )
    };
    assert_eq!(send(proof.clone()).await.0, 200);
    assert_eq!(send(proof.clone()).await.0, 401);

    // The operator looks it up and clears it (the runbook's false-positive repair); the proof works again.
    let (ok, stdout, stderr) = atlas(
        &["dpop", "jti", "show", &jti, "--server", &url],
        Some(&op_token),
    );
    assert!(
        ok && stdout.contains(&format!("dpop:jti:{jti}: seen")),
        "{stdout}{stderr}"
    );
    let (ok, stdout, _) = atlas(
        &["dpop", "jti", "clear", &jti, "--server", &url, "--json"],
        Some(&op_token),
    );
    let cleared: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(ok && cleared["cleared"] == true, "{stdout}");
    assert_eq!(send(proof.clone()).await.0, 200);
    let (_, stdout, _) = atlas(
        &["dpop", "jti", "clear", "never-seen", "--server", &url],
        Some(&op_token),
    );
    assert!(stdout.contains("was not in the cache"), "{stdout}");

    // Unauthorised: no token, a made-up token, a device's DPoP token as Bearer, an oversized jti.
    let (ok, _, stderr) = atlas(&["dpop", "jti", "show", &jti, "--server", &url], None);
    assert!(!ok && stderr.contains("--token"), "{stderr}");
    let (ok, _, stderr) = atlas(
        &["dpop", "jti", "show", &jti, "--server", &url],
        Some("atlas-op.nope.nope"),
    );
    assert!(!ok && stderr.contains("invalid_token"), "{stderr}");
    let (status, headers, body) = device
        .send_raw(
            "GET",
            &format!("/admin/dpop/jti/{jti}"),
            Some(format!("Bearer {token}")),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=")
    );
    let long = "x".repeat(200);
    let (ok, _, stderr) = atlas(
        &["dpop", "jti", "show", &long, "--server", &url],
        Some(&op_token),
    );
    assert!(!ok && stderr.contains("invalid_request"), "{stderr}");

    // Revoked tokens stop working.
    let token_id = created["token_id"].as_str().unwrap();
    let (ok, _, stderr) = atlas(
        &["admin", "token", "revoke", token_id, "--database-url", &db],
        None,
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = atlas(
        &["dpop", "jti", "show", &jti, "--server", &url],
        Some(&op_token),
    );
    assert!(!ok && stderr.contains("unknown or revoked"), "{stderr}");
    let (ok, _, stderr) = atlas(
        &["admin", "token", "revoke", token_id, "--database-url", &db],
        None,
    );
    assert!(
        !ok && stderr.contains("no active operator token"),
        "{stderr}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_refused_after_kill_9_and_restart() {
    let data = TempDir::new("atlas-cli-kill").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &[]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let device = atlas_testing::RawDevice::register(&server.url, "victim").await;
    let token = device.token().await;
    let auth = Some(format!("DPoP {token}"));
    let mut used = Vec::new();
    for _ in 0..4 {
        let proof = device.proof("GET", "/keys/count", Some(&token), atlas_testing::now());
        let (s, _, _) = device
            .send_raw(
                "GET",
                "/keys/count",
                auth.clone(),
                Some(proof.clone()),
                None,
            )
            .await;
        assert_eq!(s, 200);
        used.push(proof);
    }
    // Killed the instant the last answer arrived: no flush, no graceful shutdown.
    server.kill_9();
    let mut server = serve(&data, &addr, &[]);
    for (i, proof) in used.into_iter().enumerate() {
        let (s, _, b) = device
            .send_raw("GET", "/keys/count", auth.clone(), Some(proof), None)
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (401, Some("invalid_dpop_proof")),
            "proof {i} replayed after kill -9"
        );
    }
    let (s, _) = device.call(&token, "GET", "/keys/count", None).await;
    assert_eq!(s, 200, "fresh proofs still work");
    stop(&mut server);
}

async fn expired_jtis(db: &mut sqlx::SqliteConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM dpop_jti WHERE expires_at < $1")
        .bind(atlas_testing::now())
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_loads_no_replay_cache_and_expired_ids_are_pruned_while_serving() {
    use sqlx::Connection;
    let data = TempDir::new("atlas-cli-prune").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &[]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let device = atlas_testing::RawDevice::register(&server.url, "victim").await;
    let token = device.token().await;
    let live = device.proof("GET", "/keys/count", Some(&token), atlas_testing::now());
    let auth = Some(format!("DPoP {token}"));
    let (s, _, _) = device
        .send_raw("GET", "/keys/count", auth.clone(), Some(live.clone()), None)
        .await;
    assert_eq!(s, 200);
    stop(&mut server);

    // 5,000 expired ids left behind, as a long-running server would accumulate.
    let url = data.sqlite_url("atlas.db");
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let expired = atlas_testing::now() - 3600;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
         INSERT INTO dpop_jti (jti, expires_at) SELECT 'old-' || i, $1 FROM n",
    )
    .bind(expired)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(expired_jtis(&mut db).await, 5000);

    let mut server = serve(&data, &addr, &[]);
    // The server answers at once; the backlog goes while it serves.
    let (s, _, b) = device
        .send_raw("GET", "/keys/count", auth.clone(), Some(live), None)
        .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_dpop_proof")));
    let mut left = expired_jtis(&mut db).await;
    for _ in 0..300 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = expired_jtis(&mut db).await;
    }
    assert_eq!(left, 0, "expired ids are pruned while the server runs");
    let (s, _) = device.call(&token, "GET", "/keys/count", None).await;
    assert_eq!(s, 200);
    stop(&mut server);
}

/// A send the server answered 201 is in the recipient's queue after the server
/// is killed (SIGKILL, nothing flushed) and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_send_survives_kill_9() {
    let data = TempDir::new("atlas-cli-durable").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &[]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let sender = atlas_testing::RawDevice::register(&server.url, "sender").await;
    let recipient = atlas_testing::RawDevice::register(&server.url, "recipient").await;
    let sender_token = sender.token().await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let body = serde_json::json!({
            "recipient_id": "recipient",
            "client_message_id": format!("m{i}"),
            "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": "AAAA"}],
        });
        let (status, body) = sender
            .call(&sender_token, "POST", "/messages", Some(body))
            .await;
        assert_eq!(status, 201, "{body}");
        sent.push(body["message_id"].as_str().unwrap().to_owned());
    }
    server.kill_9();
    let mut server = serve(&data, &addr, &[]);
    let token = recipient.token().await;
    let (status, inbox) = recipient
        .call(&token, "GET", "/messages?limit=100", None)
        .await;
    assert_eq!(status, 200, "{inbox}");
    let stored: Vec<&str> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(stored, sent, "every acknowledged send is there, in order");
    stop(&mut server);
}

/// `atlas … --json | grep -q …` closes the pipe before atlas writes: the CLI
/// ends quietly with status 0 instead of panicking on the broken pipe.
#[test]
fn a_closed_output_pipe_ends_the_cli_quietly() {
    let vectors: serde_json::Value = serde_json::from_str(include_str!(
        "../../../crypto/test-vectors/rfc9449-dpop.json"
    ))
    .unwrap();
    let proof = vectors["proofs"][0]["proof"].as_str().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"))
        .args(["verify-dpop", "--json", "--proof", proof])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Key ids are base64url and proof ids any text, so either may start with `-`:
/// the CLI takes them as values, not as unknown flags (one signing key in 64 did).
#[test]
fn ids_starting_with_a_hyphen_are_values() {
    for args in [
        [
            "keys",
            "revoke-signing",
            "-Tabc",
            "--server",
            "http://127.0.0.1:1",
        ]
        .as_slice(),
        [
            "dpop",
            "jti",
            "clear",
            "-x1",
            "--server",
            "http://127.0.0.1:1",
        ]
        .as_slice(),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"))
            .args(args)
            .env_remove("ATLAS_ADMIN_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("no operator token"), "{args:?}: {stderr}");
    }
}

/// `atlas bench send` against a server started as the README does (plus a
/// registration limit for many users from one host): it registers its own
/// users, measures, and reports throughput, latency, errors and the server's
/// CPU and memory from /proc.
#[test]
fn the_runbook_dpop_check_runs_with_a_proof_from_the_cli_and_a_rotated_key() {
    let data = TempDir::new("atlas-dpop-proof").unwrap();
    let home = TempDir::new("atlas-dpop-proof-home").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &[]);
    ok(
        &home,
        &[
            "--profile",
            "alice",
            "register",
            "alice",
            "--server",
            &server.url,
        ],
    );
    let url = format!("{}/messages", server.url);
    let proof = |home: &TempDir| -> serde_json::Value {
        let out = ok(
            home,
            &[
                "--profile",
                "alice",
                "dpop",
                "proof",
                "--method",
                "POST",
                "--url",
                &url,
                "--json",
            ],
        );
        serde_json::from_str(&out).unwrap()
    };
    let first = proof(&home);
    // The runbook's lines, verbatim but for the placeholders: the header
    // decodes, and a valid proof with a bad body is a 400, not a 401.
    let check = |p: &serde_json::Value| {
        let script = format!(
            r#"echo '{header}' | base64 -d | jq .
curl -X POST https://api.atlas.dev/messages \
  -H 'DPoP: {proof}' \
  -H 'Authorization: DPoP {token}' \
  -d '{{"content":"test"}}' -o /dev/stderr -w '%{{http_code}}' || true"#,
            header = p["header_base64"].as_str().unwrap(),
            proof = p["proof"].as_str().unwrap(),
            token = p["access_token"].as_str().unwrap(),
        );
        atlas_testing::run_runbook(&script, &server.url)
    };
    let shown = check(&first);
    assert!(
        shown.contains("\"typ\": \"dpop+jwt\"") && shown.contains("\"jwk\""),
        "{shown}"
    );
    assert!(
        shown.trim_end().ends_with("400"),
        "authentication passed, the body did not: {shown}"
    );
    // The text form is the two headers, ready for curl.
    let text = ok(
        &home,
        &["--profile", "alice", "dpop", "proof", "--url", &url],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("DPoP: ey") && lines[1].starts_with("Authorization: DPoP "),
        "{text}"
    );
    let (ok_, _, err) = atlas(
        &home,
        &["--profile", "alice", "dpop", "proof", "--url", "/messages"],
    );
    assert!(!ok_ && err.contains("absolute http(s) URL"), "{err}");

    // A new key pair: a new binding, and the old token is of no use with any proof it can now make.
    let rotated: serde_json::Value = serde_json::from_str(&ok(
        &home,
        &["--profile", "alice", "dpop", "rotate-key", "--json"],
    ))
    .unwrap();
    let second = proof(&home);
    assert_ne!(second["access_token"], first["access_token"]);
    let jwk_x = |p: &serde_json::Value| {
        let header = atlas_proto::b64::decode_std(p["header_base64"].as_str().unwrap()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&header).unwrap()["jwk"]["x"].clone()
    };
    assert_ne!(jwk_x(&second), jwk_x(&first), "{rotated}");
    assert!(check(&second).trim_end().ends_with("400"));
    let stale = serde_json::json!({
        "header_base64": second["header_base64"],
        "proof": second["proof"],
        "access_token": first["access_token"],
    });
    assert!(check(&stale).trim_end().ends_with("401"));
    stop(&mut server);
}

#[test]
fn serve_refuses_a_malformed_redis_url() {
    let data = TempDir::new("atlas-bad-redis-url").unwrap();
    let mut child = Command::new(atlas_testing::atlas_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "nonsense://x",
            "--data-dir",
        ])
        .arg(&data.path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve started with a malformed --redis-url");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success() && err.contains("--redis-url"), "{err}");
}

#[test]
fn bench_send_loads_a_running_server_and_reports() {
    let data = TempDir::new("atlas-bench-e2e").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &["--registrations-per-minute", "100"]);
    let (report, err) = bench_report(&server, "send", "4");
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(
        report["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["server_cpu_us_per_message"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["server_peak_rss_mib"].as_f64().unwrap() > 1.0,
        "{report}"
    );
    assert!(
        err.contains("measuring"),
        "a progress line on stderr: {err}"
    );

    // A second run registers users of its own: no clash with the first; it
    // checks every answered send reached its recipient's queue once.
    let (again, _) = bench_report_with(&server, "send", "2", &["--duration", "2s", "--verify"]);
    assert!(again["messages"].as_u64().unwrap() > 0, "{again}");
    let delivery = &again["delivery"];
    assert!(delivery["answered"].as_u64().unwrap() > 0, "{again}");
    assert_eq!(delivery["queued"], delivery["answered"], "{again}");
    assert_eq!(delivery["missing"], 0, "{again}");
    assert_eq!(delivery["duplicated"], 0, "{again}");
    assert!(
        delivery["receipts_checked"].as_u64().unwrap() > 0,
        "{again}"
    );
    assert!(again.get("failovers").is_none(), "one server: {again}");
    // No senders, or no server: a clear refusal, not a panic.
    let (ok, _, err) = atlas_testing::run_atlas(None, None, &["bench", "send", "--senders", "0"]);
    assert!(!ok && err.contains("--senders"), "{err}");
    let (ok, _, err) = atlas_testing::run_atlas(None, None, &["bench", "send", "--rate", "-5"]);
    assert!(!ok && err.contains("not a rate above 0"), "{err}");
    // Bodies too short to carry a send time, too many sockets, no token budget: refused at parsing.
    for bad in [
        &["bench", "conversation", "--body-bytes", "8"][..],
        &["bench", "connections", "--connections", "20001"],
        &["serve", "--tokens-per-minute", "0"],
    ] {
        let (ok, _, err) = atlas_testing::run_atlas(None, None, bad);
        assert!(!ok && err.contains("invalid value"), "{bad:?}: {err}");
    }
    let (ok, _, err) = atlas_testing::run_atlas(
        None,
        None,
        &[
            "bench",
            "send",
            "--server",
            "http://127.0.0.1:1",
            "--duration",
            "1s",
        ],
    );
    assert!(
        !ok && err.contains("cannot reach") && !err.contains("panicked"),
        "{err}"
    );
    for bad in ["ftp://127.0.0.1:1", "127.0.0.1:8080", ""] {
        let (ok, _, err) =
            atlas_testing::run_atlas(None, None, &["bench", "send", "--server", bad]);
        assert!(
            !ok && err.contains("not an http(s) server address"),
            "{bad}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    stop(&mut server);
}

/// Runs `atlas bench SCENARIO` briefly against `server` with `--json`; the
/// report and what was shown on stderr.
fn bench_report(server: &Server, scenario: &str, devices: &str) -> (serde_json::Value, String) {
    bench_report_with(server, scenario, devices, &["--duration", "2s"])
}

/// [`bench_report`] with more flags, `--duration` among them.
fn bench_report_with(
    server: &Server,
    scenario: &str,
    devices: &str,
    more: &[&str],
) -> (serde_json::Value, String) {
    let pid = server.child.id().to_string();
    let mut args = vec![
        "bench",
        scenario,
        "--server",
        &server.url,
        "--senders",
        devices,
        "--warmup",
        "1s",
        "--server-pid",
        &pid,
        "--json",
    ];
    args.extend_from_slice(more);
    let (ok, out, err) = atlas_testing::run_atlas(None, None, &args);
    assert!(ok, "{err}");
    (serde_json::from_str(&out).unwrap(), err)
}

#[test]
fn bench_conversation_measures_push_latency_and_acknowledges() {
    let data = TempDir::new("atlas-bench-conversation").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &["--registrations-per-minute", "100"]);
    let (report, _) = bench_report(&server, "conversation", "4");
    assert_eq!(report["scenario"], "conversation", "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let sent = report["messages"].as_u64().unwrap();
    assert!(sent > 0, "{report}");
    assert!(
        report["push_latency_ms"]["p50"].as_f64().unwrap() > 0.0,
        "pushes arrived and were timed: {report}"
    );
    // Recipients acknowledged what was pushed: delivered receipts were made.
    assert!(report["acknowledged"].as_u64().unwrap() > 0, "{report}");
    stop(&mut server);
}

#[test]
fn bench_groups_measures_fan_out_with_commits_between_messages() {
    let data = TempDir::new("atlas-bench-groups").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &["--registrations-per-minute", "100"]);
    // Every second operation of a member is a key update: epochs move under the senders.
    let more = [
        "--group-size",
        "3",
        "--commit-every",
        "2",
        "--duration",
        "4s",
    ];
    let (report, _) = bench_report_with(&server, "groups", "6", &more);
    assert_eq!(report["scenario"], "groups", "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let groups = &report["groups"];
    assert_eq!(
        (&groups["groups"], &groups["group_size"]),
        (&2.into(), &3.into()),
        "{report}"
    );
    assert!(groups["commits"].as_u64().unwrap() > 0, "{report}");
    let (sent, decrypted) = (
        report["messages"].as_u64().unwrap(),
        groups["decrypted"].as_u64().unwrap(),
    );
    assert!(sent > 0 && decrypted > 0, "{report}");
    // Each message reaches the two other members, once each; sends still in
    // flight when the window closed may be read without being counted as sent.
    assert!(decrypted <= (sent + 6) * 2, "{report}");
    assert!(
        report["push_latency_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{report}"
    );

    let (ok, _, err) = atlas_testing::run_atlas(
        None,
        None,
        &[
            "bench",
            "groups",
            "--server",
            &server.url,
            "--senders",
            "7",
            "--group-size",
            "3",
        ],
    );
    assert!(
        !ok && err.contains("not a multiple of --group-size 3"),
        "{err}"
    );
    stop(&mut server);
}

#[test]
fn bench_connections_holds_sockets_and_reports_server_memory() {
    let data = TempDir::new("atlas-bench-connections").unwrap();
    let mut server = serve(&data, "127.0.0.1:0", &["--registrations-per-minute", "100"]);
    let (report, _) = bench_report(&server, "connections", "40");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let sockets = &report["sockets"];
    assert_eq!(sockets["opened"], 40, "{report}");
    assert_eq!(sockets["open_at_end"], 40, "{report}");
    assert!(
        sockets["server_rss_open_mib"].as_f64().unwrap()
            >= sockets["server_rss_before_mib"].as_f64().unwrap(),
        "{report}"
    );
    assert!(sockets["server_mib_per_10k"].as_f64().is_some(), "{report}");
    stop(&mut server);
}
