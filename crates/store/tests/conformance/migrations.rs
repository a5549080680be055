//! Migrations through sqlx's migrator: a database migrated before it is
//! adopted without running anything twice, and a changed migration is refused.
use super::*;

/// Runs one statement on the test database; rows affected.
async fn exec(db: &Db, sql: &str) -> u64 {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Sqlite(_) => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap()
                .rows_affected()
        }
        Db::Postgres(pg) => {
            let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap()
                .rows_affected()
        }
    }
}

async fn older_databases_are_adopted_and_changed_migrations_refused(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    drop(store);
    let applied = exec(&db, "UPDATE _sqlx_migrations SET success = success").await;
    assert!(applied >= 19, "{applied}");
    // What a database migrated by an earlier Atlas looks like.
    exec(
        &db,
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .await;
    exec(
        &db,
        "INSERT INTO schema_migrations (version, applied_at) SELECT version, 'then' FROM _sqlx_migrations",
    )
    .await;
    exec(&db, "DROP TABLE _sqlx_migrations").await;

    // Adopted: nothing runs twice (a second CREATE TABLE users would fail), the data is there.
    let store = db.open().await;
    assert_eq!(store.devices(&uid("alice")).await.unwrap().len(), 1);
    add_user(&store, "bob", "D1").await;
    drop(store);
    assert_eq!(
        exec(&db, "UPDATE _sqlx_migrations SET success = success").await,
        applied
    );
    // A migration whose text changed after it ran: the server refuses to start.
    exec(
        &db,
        "UPDATE _sqlx_migrations SET checksum = \
         (SELECT checksum FROM _sqlx_migrations WHERE version = 2) WHERE version = 1",
    )
    .await;
    let refused = atlas_store::open(&db.url()).await;
    let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("migrat"), "{error}");
}

/// Every table of the schema is counted (evidence bundles and backups compare
/// row counts), and every count is a real number.
async fn row_counts_cover_every_table(db: Db) {
    use sqlx::Connection;
    let store = db.open().await;
    let tables: Vec<(String,)> = match &db {
        Db::Sqlite(_) => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
        Db::Postgres(pg) => {
            let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::query_as(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
    };
    let mut schema: Vec<String> = tables.into_iter().map(|(t,)| t).collect();
    schema.sort();
    let mut counted: Vec<String> = atlas_store::COUNTED_TABLES
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    counted.sort();
    assert_eq!(schema, counted, "a table is missing from COUNTED_TABLES");
    add_user(&store, "alice", "D1").await;
    let counts: std::collections::BTreeMap<String, i64> =
        store.row_counts().await.unwrap().into_iter().collect();
    assert_eq!(counts["users"], 1);
    assert_eq!(counts["devices"], 1);
}

on_both_backends!(
    older_databases_are_adopted_and_changed_migrations_refused,
    row_counts_cover_every_table
);
