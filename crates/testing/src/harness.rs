//! A server on port 0 over SQLite or a fresh PostgreSQL database, with a
//! test clock, and SDK clients in profiles of its own.
use crate::*;
use atlas_proto::UserId;
use atlas_server::{RunningServer, ServerConfig};
use atlas_store::testdb::{TempDir, TempPostgres};
use std::net::SocketAddr;
use std::sync::Arc;

pub enum Backend {
    Sqlite(TempDir),
    Postgres(TempPostgres),
}

/// A database, a clock and (while running) a server.
pub struct Harness {
    pub backend: Backend,
    pub clock: Arc<TestClock>,
    pub server: Option<RunningServer>,
    pub addr: Option<SocketAddr>,
    pub homes: TempDir,
}

impl Harness {
    pub async fn sqlite() -> Self {
        Self::with(Backend::Sqlite(TempDir::new("atlas-e2e").unwrap())).await
    }

    pub async fn postgres() -> Self {
        Self::with(Backend::Postgres(
            TempPostgres::create()
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (ATLAS_TEST_POSTGRES_URL)"),
        ))
        .await
    }

    async fn with(backend: Backend) -> Self {
        let mut h = Self {
            backend,
            clock: Arc::new(TestClock::default()),
            server: None,
            addr: None,
            homes: TempDir::new("atlas-e2e-homes").unwrap(),
        };
        h.start().await;
        h
    }

    pub fn database_url(&self) -> String {
        match &self.backend {
            Backend::Sqlite(dir) => dir.sqlite_url("atlas.db"),
            Backend::Postgres(pg) => pg.url.clone(),
        }
    }

    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(self.database_url());
        config.listen = self.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        config.max_body_bytes = 256 * 1024;
        config.max_envelope_bytes = 16 * 1024;
        if let Backend::Postgres(_) = &self.backend {
            // SQLite keeps its KEK beside the database by default; PostgreSQL servers share one file.
            config.kek_file = Some(self.homes.path.join("server.kek"));
        }
        config
    }

    /// Starts the server (on the same port as before, after a restart).
    pub async fn start(&mut self) {
        let server = atlas_server::start_with_clock(self.config(), self.clock.clone())
            .await
            .expect("server starts");
        self.addr = Some(server.addr);
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    pub fn profile(&self, name: &str) -> std::path::PathBuf {
        self.homes.path.join(name)
    }

    /// Runs one SQL statement on the server's database (fault injection); rows affected.
    pub async fn sql(&self, statement: &str) -> u64 {
        use sqlx::Connection;
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        match &self.backend {
            Backend::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url())
                    .await
                    .unwrap();
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            Backend::Postgres(pg) => {
                let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        }
    }
}

impl Harness {
    /// `(kid, secret)` of every stored server key of `purpose`, as a reader of the database sees them.
    pub async fn stored_server_keys(&self, purpose: &str) -> Vec<(String, Vec<u8>)> {
        use sqlx::Connection;
        let query = "SELECT kid, secret FROM server_keys WHERE purpose = $1 ORDER BY created_at";
        match &self.backend {
            Backend::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url())
                    .await
                    .unwrap();
                sqlx::query_as(query)
                    .bind(purpose)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
            Backend::Postgres(pg) => {
                let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
                sqlx::query_as(query)
                    .bind(purpose)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }
}

/// Runs one SQL statement on a device's local state (`state.db` of a profile); rows affected.
pub async fn profile_sql(profile: &std::path::Path, statement: &str) -> u64 {
    use sqlx::Connection;
    let db = profile.join("state.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected()
}

/// A registered SDK client in the harness's profile `name` (user `name`).
pub async fn client(h: &Harness, name: &str) -> atlas_client::Client {
    atlas_client::Client::register(&h.profile(name), &h.url(), UserId::new(name).unwrap(), None)
        .await
        .unwrap()
}

/// Makes `a` and `b` exchange one message each way, so later messages between
/// them are ordinary (not pre-key) messages of one established session.
pub async fn acquaint(a: &atlas_client::Client, b: &atlas_client::Client) {
    a.messages().send_text(b.user_id(), "hello").await.unwrap();
    b.messages().sync().await.unwrap();
    b.messages().send_text(a.user_id(), "hi").await.unwrap();
    a.messages().sync().await.unwrap();
}
