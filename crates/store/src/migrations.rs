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
    (27, include_str!("../migrations/0027_schema_compat.sql")),
    (28, include_str!("../migrations/0028_rekey_tokens.sql")),
    (29, include_str!("../migrations/0029_dr_backups.sql")),
    (30, include_str!("../migrations/0030_recovery_probes.sql")),
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
    migrator_upto(sqlite, i64::MAX)
}

/// [`migrator`] with only the migrations up to `version` (a restore brings a
/// new database to its dump's schema first).
pub(crate) fn migrator_upto(sqlite: bool, version: i64) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .filter(|(v, _)| *v <= version)
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

/// This binary's version.
pub const BINARY_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The oldest binary that can serve the schema this binary's migrations make.
/// Additive migrations keep it; raise it only with a migration an older binary
/// cannot work with, and say so in the release notes.
pub const SCHEMA_FLOOR: &str = "0.1.0";

/// The highest migration this binary knows: a database (or backup) beyond it
/// was made by a newer release.
pub fn latest_schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}

/// `a.b.c` as numbers (anything after a `-` or `+` ignored; missing parts are 0).
pub fn version_key(version: &str) -> (u64, u64, u64) {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let mut parts = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// What the database says about its schema, read without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Applied migrations: version, description, whether this binary knows it.
    pub applied: Vec<(i64, String, bool)>,
    /// This binary's migrations not applied yet.
    pub pending: Vec<i64>,
    /// The oldest binary that can serve it, and who wrote that (if recorded).
    pub min_binary_version: Option<String>,
    /// The binary that recorded it.
    pub written_by: Option<String>,
    /// This binary.
    pub this_binary: String,
    /// Whether this binary may serve it.
    pub servable: bool,
}

async fn table_exists(db: &Db, table: &str) -> StoreResult<bool> {
    let sql = match db.dialect() {
        crate::db::Dialect::Sqlite => {
            "SELECT CAST(COUNT(*) AS BIGINT) FROM sqlite_master WHERE type = 'table' AND name = $1"
        }
        crate::db::Dialect::Postgres => {
            "SELECT CAST(COUNT(*) AS BIGINT) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let (n,): (i64,) = crate::db::read!(
        db,
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(table),
        fetch_one
    )?;
    Ok(n > 0)
}

/// Reads the schema's state.
pub(crate) async fn schema_status(db: &Db) -> StoreResult<SchemaStatus> {
    let known: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
    let applied: Vec<(i64, String)> = if table_exists(db, "_sqlx_migrations").await? {
        crate::db::read!(
            db,
            sqlx::query_as(
                "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version"
            ),
            fetch_all
        )?
    } else {
        Vec::new()
    };
    let compat: Option<(String, String)> = if table_exists(db, "schema_compat").await? {
        crate::db::read!(
            db,
            sqlx::query_as("SELECT min_binary_version, written_by FROM schema_compat WHERE id = 1"),
            fetch_optional
        )?
    } else {
        None
    };
    let future = applied.iter().any(|(v, _)| !known.contains(v));
    let servable = !future
        || compat
            .as_ref()
            .is_some_and(|(min, _)| version_key(min) <= version_key(BINARY_VERSION));
    Ok(SchemaStatus {
        pending: known
            .iter()
            .filter(|v| !applied.iter().any(|(a, _)| a == *v))
            .copied()
            .collect(),
        applied: applied
            .into_iter()
            .map(|(v, d)| (v, d, known.contains(&v)))
            .collect(),
        min_binary_version: compat.as_ref().map(|(m, _)| m.clone()),
        written_by: compat.map(|(_, w)| w),
        this_binary: BINARY_VERSION.to_owned(),
        servable,
    })
}

/// Adopts old records, then applies what is missing. A database a newer
/// release migrated is served only if that release recorded that this binary
/// can (its migrations only added); otherwise start-up stops with a clear error.
pub(crate) async fn run_migrations(db: &Db) -> StoreResult<()> {
    let mut migrator = migrator(matches!(db, Db::Sqlite { .. }));
    adopt_legacy(db, &migrator).await?;
    let status = schema_status(db).await?;
    let future = status.applied.iter().any(|(_, _, known)| !known);
    if !status.servable {
        return Err(StoreError::SchemaTooNew {
            needs: status
                .min_binary_version
                .unwrap_or_else(|| "(not recorded)".into()),
            written_by: status
                .written_by
                .unwrap_or_else(|| "a newer release".into()),
            this: BINARY_VERSION.into(),
        });
    }
    if future {
        tracing::warn!(
            min = ?status.min_binary_version,
            written_by = ?status.written_by,
            "serving a database migrated by a newer release (a rollback): its extra tables and columns are left alone"
        );
    }
    let recorded = status.written_by.as_deref() == Some(BINARY_VERSION)
        && status.min_binary_version.as_deref() == Some(SCHEMA_FLOOR);
    if status.pending.is_empty() && (future || recorded) {
        // Nothing to do: no DDL, no migration lock, so a serving role without
        // CREATE on the schema (README, "Audit log") starts. What sqlx's run
        // would still check, a migration whose text changed after it ran, is
        // checked here.
        let applied: Vec<(i64, Vec<u8>)> = crate::db::read!(
            db,
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success"),
            fetch_all
        )?;
        for (version, checksum) in applied {
            if let Some(m) = migrator.iter().find(|m| m.version == version)
                && *m.checksum != *checksum
            {
                return Err(StoreError::Database(sqlx::Error::Migrate(Box::new(
                    sqlx::migrate::MigrateError::VersionMismatch(version),
                ))));
            }
        }
        return Ok(());
    }
    migrator.set_ignore_missing(future);
    let done = match db {
        Db::Sqlite { writer, .. } => migrator.run(writer).await,
        Db::Postgres(pool) => migrator.run(pool).await,
    };
    done.map_err(|e| StoreError::Database(sqlx::Error::Migrate(Box::new(e))))?;
    if !future {
        let mut tx = db.begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO schema_compat (id, min_binary_version, written_by, updated_at) \
                 VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET \
                 min_binary_version = excluded.min_binary_version, \
                 written_by = excluded.written_by, updated_at = excluded.updated_at"
            )
            .bind(SCHEMA_FLOOR)
            .bind(BINARY_VERSION)
            .bind(time::OffsetDateTime::now_utc()),
            execute
        )?;
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_key("0.10.0") > version_key("0.9.9"));
        assert_eq!(version_key("1.2.3-rc.1"), (1, 2, 3));
        assert_eq!(version_key("2"), (2, 0, 0));
        assert!(version_key(SCHEMA_FLOOR) <= version_key(BINARY_VERSION));
    }

    #[test]
    fn versions_are_ordered_and_distinct() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(migrator(true).iter().count(), MIGRATIONS.len());
    }
}
