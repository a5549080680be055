//! The audit log: operator acts and refused admin authentications are
//! appended, signed checkpoints are published, `atlas audit verify` passes on
//! an intact log and names the entry a hand edit, a deletion or a reordering
//! touched (over the admin API and on the host with the server down).
use atlas_crypto::audit_log::Checkpoint;
use atlas_crypto::note::NoteVerifier;
use atlas_testing::{Harness, on_both_backends, run_atlas, series};
use serde_json::Value;

/// The KEK file of the harness's server.
pub(crate) fn kek_of(h: &Harness) -> String {
    let file = match &h.config().kek_file {
        Some(file) => file.clone(),
        None => atlas_store::sqlite_path(&h.database_url())
            .unwrap()
            .parent()
            .unwrap()
            .join("server.kek"),
    };
    file.display().to_string()
}

/// An operator token made on the host, its creation audited.
pub(crate) fn token(h: &Harness, kek: &str, scope: &str) -> String {
    let (token, stderr) = atlas_testing::operator_token_with(
        &h.database_url(),
        scope,
        &["--label", "drill", "--kek-file", kek],
    );
    assert!(!stderr.contains("not recorded"), "{stderr}");
    token
}

/// `atlas audit list --json` (newest first), optionally only actions starting with `action`.
pub(crate) fn audit_entries(token: &str, url: &str, action: Option<&str>) -> Vec<Value> {
    let mut args = vec!["audit", "list", "--server", url, "--json"];
    if let Some(action) = action {
        args.extend(["--action", action]);
    }
    let (ok, out, err) = run_atlas(None, Some(token), &args);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// `atlas audit verify` on the host: (exit ok, stdout).
fn verify_on_host(h: &Harness, kek: &str) -> (bool, String) {
    let db = h.database_url();
    let (ok, out, err) = run_atlas(
        None,
        None,
        &["audit", "verify", "--database-url", &db, "--kek-file", kek],
    );
    (ok, format!("{out}{err}"))
}

async fn acts_are_logged_checkpointed_and_tampering_is_named(mut h: Harness) {
    h.stop().await;
    let mut config = h.config();
    config.audit_checkpoint_interval = std::time::Duration::from_millis(200);
    let kek = kek_of(&h);
    let server = atlas_server::start(config).await.unwrap();
    let url = server.public_url.clone();

    let incidents = token(&h, &kek, "incidents");
    let auditor = token(&h, &kek, "audit");
    let narrow = token(&h, &kek, "dpop");
    let http = atlas_client::http_client().unwrap();
    // An anonymous admin call, a call without the scope, and a real act.
    let anonymous = http
        .post(format!("{url}/admin/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let unscoped = http
        .post(format!("{url}/admin/incidents"))
        .bearer_auth(&narrow)
        .json(&serde_json::json!({"severity": "SEV-3", "description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unscoped.status(), 403);
    let (ok, _, err) = run_atlas(
        None,
        Some(&incidents),
        &["incident", "declare", "SEV-2", "Drill", "--server", &url],
    );
    assert!(ok, "{err}");
    // Reads are not logged.
    let (ok, _, err) = run_atlas(
        None,
        Some(&incidents),
        &["incident", "list", "--server", &url],
    );
    assert!(ok, "{err}");

    let entries = audit_entries(&auditor, &url, None);
    let acts: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor_label"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("", "operator_token.create", "ok"),
        ("", "operator_token.create", "ok"),
        ("", "operator_token.create", "ok"),
        ("", "POST /admin/incidents", "refused"),
        ("drill", "POST /admin/incidents", "refused"),
        ("drill", "POST /admin/incidents", "ok"),
    ];
    assert_eq!(acts.len(), expected.len(), "{acts:?}");
    for ((label, action, outcome), (want_label, want_action, want_outcome)) in
        acts.iter().zip(expected)
    {
        assert_eq!(action, want_action, "{acts:?}");
        assert_eq!(outcome, want_outcome, "{acts:?}");
        if action.starts_with("POST") {
            assert_eq!(label, want_label, "{acts:?}");
        }
    }
    assert_eq!(entries.last().unwrap()["actor"], "host");
    assert_eq!(entries[2]["actor"], "anonymous");
    assert_eq!(entries[2]["source"], "127.0.0.1");
    assert_eq!(entries[1]["detail"], "403 insufficient_scope");

    // A checkpoint of all six entries is published, signed by the published key.
    let published = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let view: Value =
                atlas_testing::get_json(&format!("{url}/.well-known/atlas/audit-checkpoint")).await;
            if view["checkpoint"].is_string() && view["entries"] == 6 {
                let key = NoteVerifier::from_text(view["key"].as_str().unwrap()).unwrap();
                let checkpoint =
                    Checkpoint::open(view["checkpoint"].as_str().unwrap(), &key).unwrap();
                if checkpoint.size == 6 {
                    return (key, checkpoint);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a checkpoint of 6 entries within 10 s");
    assert!(published.1.origin.contains("/audit/"));
    let (ok, out, err) = run_atlas(None, Some(&auditor), &["audit", "verify", "--server", &url]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
    let (ok, out) = verify_on_host(&h, &kek);
    assert!(ok, "{out}");
    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(series(&metrics, "atlas_audit_verified"), 1.0);
    assert_eq!(series(&metrics, "atlas_audit_checkpoint_size"), 6.0);

    // A hand edit: named, over the API and on the host; the metric turns to 0.
    h.sql("UPDATE audit_log SET outcome = 'ok' WHERE seq = 3")
        .await;
    let (ok, out, _) = run_atlas(None, Some(&auditor), &["audit", "verify", "--server", &url]);
    assert!(!ok);
    assert!(out.contains("TAMPERED: entry 3 was edited"), "{out}");
    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(series(&metrics, "atlas_audit_verified"), 0.0);
    h.sql("UPDATE audit_log SET outcome = 'refused' WHERE seq = 3")
        .await;
    server.stop().await;
    assert!(verify_on_host(&h, &kek).0, "restored");

    // With the server down: a deleted row, then two rows swapped.
    h.sql("CREATE TABLE audit_saved AS SELECT * FROM audit_log")
        .await;
    h.sql("DELETE FROM audit_log WHERE seq = 4").await;
    let (ok, out) = verify_on_host(&h, &kek);
    assert!(
        !ok && out.contains("TAMPERED: entry 4 was deleted"),
        "{out}"
    );
    h.sql("INSERT INTO audit_log SELECT * FROM audit_saved WHERE seq = 4")
        .await;
    h.sql("UPDATE audit_log SET seq = 100 WHERE seq = 1").await;
    h.sql("UPDATE audit_log SET seq = 1 WHERE seq = 2").await;
    h.sql("UPDATE audit_log SET seq = 2 WHERE seq = 100").await;
    let (ok, out) = verify_on_host(&h, &kek);
    assert!(
        !ok && out.contains("TAMPERED: entry 1 was moved to position 2"),
        "{out}"
    );
    // A pinned key that is not the log's: every checkpoint fails.
    let other = atlas_crypto::note::NoteSigner::new(published.0.name(), &[1; 32]).unwrap();
    let db = h.database_url();
    let (ok, out, _) = run_atlas(
        None,
        None,
        &[
            "audit",
            "verify",
            "--database-url",
            &db,
            "--kek-file",
            &kek,
            "--key",
            &other.verifier().to_text(),
        ],
    );
    assert!(
        !ok && out.contains("is not signed by the audit key"),
        "{out}"
    );
}

on_both_backends!(acts_are_logged_checkpointed_and_tampering_is_named);

/// The README's PostgreSQL set-up, verbatim: the owner migrates, the server
/// runs as a role holding no UPDATE or DELETE on the audit tables, serves and
/// appends; that role cannot change an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_make_the_audit_log_append_only_for_the_server() {
    let mut h = Harness::postgres().await;
    h.stop().await;
    let owner = h.database_url();
    let kek = kek_of(&h);
    let role = format!(
        "atlas_app_{}",
        &atlas_crypto::random_id()
            .to_lowercase()
            .replace(['-', '_'], "")[..10]
    );
    h.sql(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"))
        .await;
    h.sql(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
    ))
    .await;
    h.sql(&format!(
        "REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_checkpoints FROM {role}"
    ))
    .await;
    let (ok, _, err) = run_atlas(None, None, &["db", "migrate", "--database-url", &owner]);
    assert!(ok, "{err}");
    let (_, rest) = owner.split_once('@').unwrap();
    let app = format!("postgres://{role}:pw@{rest}");

    let mut config = h.config();
    config.database_url = app.clone();
    config.audit_checkpoint_interval = std::time::Duration::from_millis(200);
    let server = atlas_server::start(config)
        .await
        .expect("the server starts as the app role");
    let incidents = token(&h, &kek, "incidents");
    let (ok, _, err) = run_atlas(
        None,
        Some(&incidents),
        &[
            "incident",
            "declare",
            "SEV-4",
            "Grant check",
            "--server",
            &server.public_url,
        ],
    );
    assert!(ok, "{err}");
    // The app role appended it (and checkpoints it), but cannot change it.
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&app).await.unwrap();
    let appended: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'POST /admin/incidents'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(appended.0, 1);
    for statement in [
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_log",
    ] {
        let refused = sqlx::query(statement)
            .execute(&mut conn)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("permission denied"),
            "{statement}: {refused}"
        );
    }
    drop(conn);
    server.stop().await;
    h.sql(&format!("DROP OWNED BY {role}")).await;
    h.sql(&format!("DROP ROLE {role}")).await;
}
