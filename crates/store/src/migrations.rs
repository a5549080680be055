//! Schema migrations, embedded in the binary and applied in order at start-up
//! by sqlx's migrator. One source per migration, in PostgreSQL types; SQLite's
//! dialect is derived from it, so the two backends cannot drift apart.
use crate::db::{Db, Tx, run};
use crate::{StoreError, StoreResult};
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

/// `(version, sql)` pairs in PostgreSQL dialect.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_operator_tokens.sql")),
    (3, include_str!("../migrations/0003_receipts.sql")),
    (4, include_str!("../migrations/0004_mls.sql")),
    (5, include_str!("../migrations/0005_mls_actions.sql")),
    (6, include_str!("../migrations/0006_decryption_reports.sql")),
    (7, include_str!("../migrations/0007_resend.sql")),
    (8, include_str!("../migrations/0008_session_resets.sql")),
    (9, include_str!("../migrations/0009_key_checks.sql")),
    (10, include_str!("../migrations/0010_key_backups.sql")),
    (11, include_str!("../migrations/0011_jti_unix.sql")),
    (12, include_str!("../migrations/0012_refresh_families.sql")),
    (13, include_str!("../migrations/0013_member_removal.sql")),
    (14, include_str!("../migrations/0014_cross_signing.sql")),
    (
        15,
        include_str!("../migrations/0015_operator_token_expiry.sql"),
    ),
    (16, include_str!("../migrations/0016_queue_depth.sql")),
    (17, include_str!("../migrations/0017_counted_reports.sql")),
    (18, include_str!("../migrations/0018_group_gauges.sql")),
    (
        19,
        include_str!("../migrations/0019_key_package_binding.sql"),
    ),
    (20, include_str!("../migrations/0020_undelivered_index.sql")),
    (21, include_str!("../migrations/0021_incidents.sql")),
    (22, include_str!("../migrations/0022_notifications.sql")),
    (23, include_str!("../migrations/0023_alerts.sql")),
    (24, include_str!("../migrations/0024_request_minutes.sql")),
    (25, include_str!("../migrations/0025_audit.sql")),
    (26, include_str!("../migrations/0026_lockdown.sql")),
];

/// The same migration with SQLite's types.
pub(crate) fn for_sqlite(sql: &str) -> String {
    sql.replace("TIMESTAMPTZ", "TEXT")
        .replace("BYTEA", "BLOB")
        .replace("BIGINT", "INTEGER")
}

/// The migrations as sqlx's [`Migrator`] runs them, in the backend's dialect:
/// it records each applied version with its checksum in `_sqlx_migrations`,
/// refuses to start when an applied migration's text changed, and holds a
/// database lock while migrating (PostgreSQL), so replicas starting together
/// migrate once.
pub(crate) fn migrator(sqlite: bool) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, sql)| {
                let sql = if sqlite {
                    for_sqlite(sql)
                } else {
                    (*sql).to_owned()
                };
                Migration::new(
                    *version,
                    format!("atlas {version:04}").into(),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Advisory lock id held while moving old migration records (PostgreSQL).
const ADOPT_LOCK: i64 = 0x0041_544c_4153;

/// Moves a database migrated before sqlx's migrator onto it: the versions
/// `schema_migrations` lists are recorded in `_sqlx_migrations` with their
/// checksums (they ran the same text), and the old table goes, all in one
/// transaction. A database without the old table is left alone.
pub(crate) async fn adopt_legacy(db: &Db, migrator: &Migrator) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    let legacy: Option<(i64,)> = match &mut tx {
        Tx::Sqlite(t, _) => {
            sqlx::query_as(
                "SELECT CAST(1 AS BIGINT) FROM sqlite_master \
                 WHERE type = 'table' AND name = 'schema_migrations'",
            )
            .fetch_optional(&mut **t)
            .await?
        }
        Tx::Postgres(t) => {
            // Replicas starting together: one moves the records, the others find none.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ADOPT_LOCK)
                .execute(&mut **t)
                .await?;
            sqlx::query_as(
                "SELECT CAST(1 AS BIGINT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'schema_migrations'",
            )
            .fetch_optional(&mut **t)
            .await?
        }
    };
    if legacy.is_none() {
        return Ok(());
    }
    let created = match &mut tx {
        Tx::Sqlite(t, _) => t.ensure_migrations_table("_sqlx_migrations").await,
        Tx::Postgres(t) => t.ensure_migrations_table("_sqlx_migrations").await,
    };
    created.map_err(|e| StoreError::Database(sqlx::Error::Migrate(Box::new(e))))?;
    let applied: Vec<(i64,)> = run!(
        &mut tx,
        sqlx::query_as("SELECT version FROM schema_migrations"),
        fetch_all
    )?;
    for (version,) in applied {
        let Some(m) = migrator.iter().find(|m| m.version == version) else {
            continue;
        };
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
            )
            .bind(version)
            .bind(m.description.to_string())
            .bind(true)
            .bind(m.checksum.to_vec()),
            execute
        )?;
    }
    run!(
        &mut tx,
        sqlx::query("DROP TABLE schema_migrations"),
        execute
    )?;
    tx.commit().await?;
    tracing::info!("migration records moved to _sqlx_migrations");
    Ok(())
}

/// Adopts old records, then applies what is missing.
pub(crate) async fn run_migrations(db: &Db) -> StoreResult<()> {
    let migrator = migrator(matches!(db, Db::Sqlite { .. }));
    adopt_legacy(db, &migrator).await?;
    let done = match db {
        Db::Sqlite { writer, .. } => migrator.run(writer).await,
        Db::Postgres(pool) => migrator.run(pool).await,
    };
    done.map_err(|e| StoreError::Database(sqlx::Error::Migrate(Box::new(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_and_distinct() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(migrator(true).iter().count(), MIGRATIONS.len());
    }
}
