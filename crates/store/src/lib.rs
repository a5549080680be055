//! Server storage: one trait per area ([`Stores`] hands them out; [`Store`] is
//! their sum), their records and errors, and two backends (SQLite, the
//! embedded default, and PostgreSQL) sharing one schema whose table and column
//! names the operator runbooks query verbatim. Each area's SQL is written once
//! for both backends (see `db.rs`).
#![forbid(unsafe_code)]

mod accounts;
mod alerts;
mod audit;
mod backups;
mod db;
mod dr_records;
mod e2ee;
mod groups;
mod identities;
mod incidents;
mod jti;
mod key_checks;
mod key_packages;
mod lockdown;
mod member_actions;
mod messages;
mod migrations;
pub mod pg_snapshot;
mod postgres;
mod prekeys;
mod probes;
mod records;
mod repair;
mod server_keys;
mod snapshot;
mod sql;
mod sqlite;
pub mod testdb;
mod tokens;

pub use accounts::AccountStore;
pub use alerts::{ALERTS_KEPT, AlertStore};
pub use audit::{AuditFilter, AuditStore, Sealer, StoredCheckpoint};
pub use backups::{BACKUPS_KEPT, BackupMeta, BackupStore, NewBackup};
pub use dr_records::{DrRecordStore, DrSummary};
pub use e2ee::{FailureCaps, NewReport, OutcomeCounts, ReportChange, ReportRecord, ReportStore};
pub use groups::*;
pub use identities::{
    IdentityStore, RekeyOutcome, RevokedDevice, RevokedIdentities, RevokedUserIdentity,
};
pub use incidents::{Attempt, IncidentStore, NewNotification, NotificationRecord};
pub use jti::JtiStore;
pub use key_checks::{KeyCheckRecord, KeyStore, UserKeyRecord};
pub use key_packages::{ClaimedKeyPackageRecord, KeyPackageCounts, KeyPackageStore, NewKeyPackage};
pub use lockdown::LockdownStore;
pub use member_actions::{MemberAction, MemberActionStore};
pub use messages::MessageStore;
pub use postgres::PostgresStore;
pub use prekeys::PrekeyStore;
pub use probes::{ErasedProbe, MAX_PROBES, PROBE_PREFIX, ProbeStore, ReservedProbe};
pub use records::*;
pub use repair::{
    MessageCopy, RepairStore, ResendOutcome, ResendRequestRecord, SessionParties,
    SessionResetRecord,
};
pub use server_keys::ServerKeyStore;
pub use snapshot::{
    SnapshotFacts, SnapshotStore, fill_synthetic_messages, fill_synthetic_messages_postgres,
    inspect_sqlite_file,
};
pub use sqlite::{SqliteStore, set_mode, sqlite_path};
pub use tokens::{OperatorTokenStore, RefreshTokenStore};

use atlas_proto::DeviceId;
use std::sync::Arc;

/// Why a storage operation failed: a client's mistake, or the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The user id is taken.
    #[error("user already exists")]
    UserExists,
    /// The device id is taken for that user.
    #[error("device already exists")]
    DeviceExists,
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// No such active device.
    #[error("unknown device")]
    UnknownDevice,
    /// The link token is unknown, used or expired.
    #[error("link token invalid")]
    InvalidLinkToken,
    /// The envelopes do not match the recipient's current devices.
    #[error("device list mismatch")]
    DeviceListMismatch(atlas_proto::api::DeviceListMismatch),
    /// A client message id was reused for different content.
    #[error("client message id reused for a different message")]
    IdempotencyConflict,
    /// The group name is taken.
    #[error("group already exists")]
    GroupExists,
    /// A backup with this id exists.
    #[error("backup already exists")]
    BackupExists,
    /// No such group.
    #[error("unknown group")]
    UnknownGroup,
    /// The member is not (or no longer) in the group.
    #[error("not a member of the group")]
    NotAGroupMember,
    /// A recipient device holds the most unacknowledged messages it may.
    #[error("the queue of device {0} is full")]
    QueueFull(DeviceId),
    /// The request's DPoP proof id was recorded before: a replay.
    #[error("DPoP proof replayed")]
    Replay,
    /// The database failed (our side, not the client's).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite writer thread's connection failed (our side, not the client's).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be read back (corruption or a bug).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The backend cannot do this.
    #[error("not supported on this backend: {0}")]
    Unsupported(&'static str),
    /// The user is not a reserved recovery probe.
    #[error("not a recovery probe")]
    NotAProbe,
    /// As many probes as may be are reserved already.
    #[error("{0} recovery probes are reserved already")]
    TooManyProbes(usize),
    /// The probe shares a conversation with someone who is not a probe.
    #[error("the probe is not isolated: {0}")]
    ProbeNotIsolated(String),
    /// The database was migrated by a newer release that this binary cannot serve.
    #[error(
        "this database needs atlas {needs} or newer (migrated by atlas {written_by}); this is atlas {this}: \
         run the newer release, or restore a backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// The oldest binary version that can serve it.
        needs: String,
        /// The binary that migrated it.
        written_by: String,
        /// This binary.
        this: String,
    },
}

/// Result of storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the server persists: one trait per area. Every method that
/// returns `Ok` after a write has committed it durably.
#[async_trait::async_trait]
pub trait Store:
    AccountStore
    + PrekeyStore
    + MessageStore
    + RefreshTokenStore
    + OperatorTokenStore
    + ServerKeyStore
    + JtiStore
    + GroupStore
    + KeyPackageStore
    + MemberActionStore
    + ReportStore
    + RepairStore
    + KeyStore
    + BackupStore
    + IncidentStore
    + AlertStore
    + AuditStore
    + LockdownStore
    + IdentityStore
    + SnapshotStore
    + DrRecordStore
    + ProbeStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// One round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    /// Rows in each of [`COUNTED_TABLES`].
    async fn row_counts(&self) -> StoreResult<Vec<(String, i64)>>;
}

/// Every table, for row counts (evidence, and checks that a copy is whole).
pub const COUNTED_TABLES: &[&str] = &[
    "users",
    "devices",
    "user_keys",
    "messages",
    "send_log",
    "refresh_tokens",
    "link_tokens",
    "server_keys",
    "dpop_jti",
    "operator_tokens",
    "receipts",
    "mls_key_packages",
    "mls_groups",
    "mls_group_members",
    "mls_commits",
    "mls_epochs",
    "mls_messages",
    "mls_welcomes",
    "mls_member_actions",
    "decryption_reports",
    "resend_requests",
    "olm_session_resets",
    "key_checks",
    "key_backups",
    "incidents",
    "incident_events",
    "notifications",
    "notification_attempts",
    "alerts",
    "request_minutes",
    "audit_log",
    "audit_checkpoints",
    "lockdown",
    "schema_compat",
    "dr_backups",
    "recovery_probes",
];

#[async_trait::async_trait]
impl<T: db::Backend> Store for T {
    fn backend(&self) -> &'static str {
        self.name()
    }

    async fn ping(&self) -> StoreResult<()> {
        let _: (i64,) = db::read!(
            self.db(),
            sqlx::query_as("SELECT CAST(1 AS BIGINT)"),
            fetch_one
        )?;
        Ok(())
    }

    async fn row_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let mut counts = Vec::with_capacity(COUNTED_TABLES.len());
        for table in COUNTED_TABLES {
            // The names are our own constants, never input.
            let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
            let (n,): (i64,) = db::read!(
                self.db(),
                sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())),
                fetch_one
            )?;
            counts.push(((*table).to_owned(), n));
        }
        Ok(counts)
    }
}

/// Every storage area of one database, each behind its own trait, so code
/// takes only the areas it uses (`stores.messages`, `stores.groups`, …).
#[derive(Clone)]
pub struct Stores {
    /// Users and devices.
    pub accounts: Arc<dyn AccountStore>,
    /// Olm prekeys.
    pub prekeys: Arc<dyn PrekeyStore>,
    /// 1:1 messages and receipts.
    pub messages: Arc<dyn MessageStore>,
    /// Refresh tokens.
    pub refresh_tokens: Arc<dyn RefreshTokenStore>,
    /// Operator tokens.
    pub operator_tokens: Arc<dyn OperatorTokenStore>,
    /// The server's own keys.
    pub server_keys: Arc<dyn ServerKeyStore>,
    /// The DPoP replay cache.
    pub jtis: Arc<dyn JtiStore>,
    /// MLS groups.
    pub groups: Arc<dyn GroupStore>,
    /// MLS KeyPackages.
    pub key_packages: Arc<dyn KeyPackageStore>,
    /// Recovery steps asked of group members.
    pub member_actions: Arc<dyn MemberActionStore>,
    /// Decryption outcome reports.
    pub reports: Arc<dyn ReportStore>,
    /// Resend requests and session resets.
    pub repair: Arc<dyn RepairStore>,
    /// Prekey rows and key checks.
    pub key_checks: Arc<dyn KeyStore>,
    /// Key backups.
    pub backups: Arc<dyn BackupStore>,
    /// Incidents and their timelines.
    pub incidents: Arc<dyn IncidentStore>,
    /// Alerts Alertmanager reported.
    pub alerts: Arc<dyn AlertStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    /// The emergency lockdown.
    pub lockdown: Arc<dyn LockdownStore>,
    /// Emergency revocation of identity keys, and re-keying.
    pub identities: Arc<dyn IdentityStore>,
    /// Recovery probes.
    pub probes: Arc<dyn ProbeStore>,
    /// The whole store, for its backend name and liveness.
    pub all: Arc<dyn Store>,
}

impl Stores {
    /// Each area of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            accounts: store.clone(),
            prekeys: store.clone(),
            messages: store.clone(),
            refresh_tokens: store.clone(),
            operator_tokens: store.clone(),
            server_keys: store.clone(),
            jtis: store.clone(),
            groups: store.clone(),
            key_packages: store.clone(),
            member_actions: store.clone(),
            reports: store.clone(),
            repair: store.clone(),
            key_checks: store.clone(),
            backups: store.clone(),
            incidents: store.clone(),
            alerts: store.clone(),
            audit: store.clone(),
            lockdown: store.clone(),
            identities: store.clone(),
            probes: store.clone(),
            all: store,
        }
    }
}

pub use migrations::{
    BINARY_VERSION, SCHEMA_FLOOR, SchemaStatus, latest_schema_version, version_key,
};

/// The schema state of the database `database_url` names, read without
/// migrating or writing anything (`atlas db status`).
pub async fn schema_status(database_url: &str) -> StoreResult<SchemaStatus> {
    let db = if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")
    {
        db::Db::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(database_url)
                .await?,
        )
    } else {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(database_url)?.read_only(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        db::Db::Sqlite {
            writer: pool.clone(),
            reader: pool,
            gate: Default::default(),
        }
    };
    migrations::schema_status(&db).await
}

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`) and migrates it.
pub async fn open(database_url: &str) -> StoreResult<Arc<dyn Store>> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(database_url).await?))
    } else {
        Ok(Arc::new(SqliteStore::open(database_url).await?))
    }
}
