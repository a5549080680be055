//! Schema migrations, embedded in the binary and applied in order at start-up.
//! Each backend has its own SQL (types differ), with the same tables and columns.

/// `(version, sql)` pairs for SQLite.
pub(crate) const SQLITE: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite_0001.sql"))];

/// `(version, sql)` pairs for PostgreSQL.
pub(crate) const POSTGRES: &[(i64, &str)] = &[(1, include_str!("../migrations/postgres_0001.sql"))];

/// Splits a migration into statements (our migrations have no `;` inside literals or comments).
pub(crate) fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(';').map(str::trim).filter(|s| {
        !s.is_empty()
            && !s
                .lines()
                .all(|l| l.trim_start().starts_with("--") || l.trim().is_empty())
    })
}
