//! Rollback safety (seed 004 §3.2): a database migrated by a newer release
//! whose migrations only added is served by the previous binary; one that
//! needs the newer binary is refused at start with a clear message, and
//! `atlas db status` says which.
use atlas_testing::{Backend, Harness, on_both_backends, run_atlas};
use serde_json::Value;

fn db_status(h: &Harness) -> (bool, Value, String) {
    let db = h.database_url();
    let (ok, out, err) = run_atlas(
        None,
        None,
        &["db", "status", "--database-url", &db, "--json"],
    );
    (ok, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

async fn a_newer_additive_schema_is_served_and_a_newer_floor_is_refused(mut h: Harness) {
    let (ok, status, err) = db_status(&h);
    assert!(ok, "{err}");
    assert_eq!(status["servable"], true);
    assert_eq!(status["pending"], serde_json::json!([]));
    assert_eq!(status["min_binary_version"], atlas_store::SCHEMA_FLOOR);
    assert_eq!(status["written_by"], atlas_store::BINARY_VERSION);

    // A newer release (9.9.9) migrated: a table added, its migration recorded,
    // and it says binaries from 0.1.0 on can still serve the schema.
    h.stop().await;
    let checksum = match h.backend {
        Backend::Sqlite(_) => "X'00'",
        Backend::Postgres(_) => "'\\x00'::bytea",
    };
    h.sql("CREATE TABLE future_feature (id BIGINT PRIMARY KEY)")
        .await;
    h.sql(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'atlas 9999', true, {checksum}, 0)"
    ))
    .await;
    h.sql("UPDATE schema_compat SET min_binary_version = '0.1.0', written_by = '9.9.9'")
        .await;
    h.start().await;
    let health = atlas_client::http_client()
        .unwrap()
        .get(format!("{}/health", h.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "the previous binary serves the newer schema"
    );
    let (ok, status, err) = db_status(&h);
    assert!(ok, "{err}");
    let future = status["applied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == 9999)
        .unwrap();
    assert_eq!(future["known_to_this_binary"], false);
    assert_eq!(
        status["written_by"], "9.9.9",
        "a rollback does not rewrite the record"
    );

    // The newer release needs itself: this binary refuses, and changes nothing.
    h.stop().await;
    h.sql("UPDATE schema_compat SET min_binary_version = '9.9.0'")
        .await;
    let refused = atlas_server::start(h.config())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("needs atlas 9.9.0 or newer (migrated by atlas 9.9.9); this is atlas"),
        "{refused}"
    );
    let (ok, status, _) = db_status(&h);
    assert!(!ok);
    assert_eq!(status["servable"], false);
    let db = h.database_url();
    let (ok, out, _) = run_atlas(None, None, &["db", "status", "--database-url", &db]);
    assert!(
        !ok && out.contains("CANNOT serve it") && out.contains("(from a newer release)"),
        "{out}"
    );
    assert_eq!(
        h.sql("DELETE FROM future_feature").await,
        0,
        "the newer table is intact"
    );
}

on_both_backends!(a_newer_additive_schema_is_served_and_a_newer_floor_is_refused);
