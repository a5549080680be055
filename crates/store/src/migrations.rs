//! Schema migrations, embedded in the binary and applied in order at start-up.
//! One source per migration, in PostgreSQL types; SQLite's dialect is derived
//! from it, so the two backends cannot drift apart.

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
];

/// The same migration with SQLite's types.
pub(crate) fn for_sqlite(sql: &str) -> String {
    sql.replace("TIMESTAMPTZ", "TEXT")
        .replace("BYTEA", "BLOB")
        .replace("BIGINT", "INTEGER")
}

/// Splits a migration into statements (our migrations have no `;` inside literals or comments).
pub(crate) fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(';').map(str::trim).filter(|s| {
        !s.is_empty()
            && !s
                .lines()
                .all(|l| l.trim_start().starts_with("--") || l.trim().is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_semicolon_hides_in_a_comment() {
        for (version, sql) in MIGRATIONS {
            for line in sql.lines().filter(|l| l.trim_start().starts_with("--")) {
                assert!(!line.contains(';'), "migration {version}: {line}");
            }
        }
    }
}
