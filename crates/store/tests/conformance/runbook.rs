//! The runbook's SQL, verbatim, on this schema.
use super::*;

/// The runbook's diagnosis queries run verbatim.
async fn runbook_queries_run_verbatim(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "B").await;
    let sent = store
        .store_message(&send("alice", "bob", "c1", vec![envelope("B", "x")]))
        .await
        .unwrap();
    let q1 = "SELECT user_id, key_id, status, last_rotated FROM user_keys WHERE user_id='alice';";
    let q2 = format!(
        "SELECT message_id, sender_id, recipient_id, encryption_algorithm, created_at FROM messages WHERE message_id='{}';",
        sent.message_id
    );
    match &db {
        Db::Postgres(pg) => {
            for q in [q1.to_string(), q2] {
                let text = pg.psql(&q).unwrap();
                assert!(text.contains("alice"), "{q} printed {text}");
            }
        }
        Db::Sqlite(_) => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            for q in [q1.to_string(), q2] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                assert!(!rows.is_empty());
            }
        }
    }
}

on_both_backends!(runbook_queries_run_verbatim,);
