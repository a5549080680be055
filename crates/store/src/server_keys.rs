//! The server's own keys (`server_keys`: sealed secrets with a lifecycle of
//! active, retired while still published, revoked).
use crate::StoreResult;
use crate::db::{Backend, Tx, read, run};
use crate::records::{ServerKeyRecord, ServerKeyState};
use time::OffsetDateTime;

/// The server-key part of the store.
#[async_trait::async_trait]
pub trait ServerKeyStore: Send + Sync {
    /// The active server key for `purpose`, creating it with `make` if there is none.
    async fn server_key(
        &self,
        purpose: &str,
        make: &(dyn Fn() -> ServerKeyRecord + Send + Sync),
    ) -> StoreResult<ServerKeyRecord>;
    /// Every key for `purpose` with its lifecycle, newest first.
    async fn server_keys(&self, purpose: &str) -> StoreResult<Vec<ServerKeyState>>;
    /// Makes `next` the active key of its purpose; the active one is retired and
    /// stays published until `publish_until`.
    async fn rotate_server_key(
        &self,
        next: &ServerKeyRecord,
        publish_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Revokes a key of `purpose`; if it was the active one, `replacement` becomes
    /// active in the same transaction. False if there is no such unrevoked key.
    async fn revoke_server_key(
        &self,
        purpose: &str,
        kid: &str,
        replacement: &ServerKeyRecord,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Replaces the stored secret of key `kid` (sealing a legacy plain secret); false if there is no such key.
    async fn replace_server_key_secret(&self, kid: &str, secret: &[u8]) -> StoreResult<bool>;
    /// Replaces every non-empty stored secret by `reseal(key)` in one
    /// transaction (a KEK rotation); if any key cannot be re-sealed, nothing
    /// changes. How many were re-sealed.
    async fn reseal_server_keys(
        &self,
        reseal: &(dyn for<'k> Fn(&'k ServerKeyRecord) -> Option<Vec<u8>> + Send + Sync),
    ) -> StoreResult<usize>;
    /// Emergency revocation, in one transaction: every key of `purposes` is
    /// revoked and its secret destroyed (the row keeps only its metadata),
    /// `replacements` become the active keys, and every unspent refresh token is
    /// revoked. Returns the keys as they were (secrets still sealed), so the
    /// caller can record their public parts; and the refresh tokens revoked.
    async fn revoke_keys_of(
        &self,
        purposes: &[&str],
        replacements: &[ServerKeyRecord],
        now: OffsetDateTime,
    ) -> StoreResult<(Vec<ServerKeyState>, u64)>;
}

/// A `server_keys` row.
#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    purpose: String,
    alg: String,
    secret: Vec<u8>,
    status: String,
    created_at: OffsetDateTime,
    retired_at: Option<OffsetDateTime>,
    publish_until: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

impl From<KeyRow> for ServerKeyState {
    fn from(r: KeyRow) -> Self {
        Self {
            key: ServerKeyRecord {
                kid: r.kid,
                purpose: r.purpose,
                alg: r.alg,
                secret: r.secret,
                created_at: r.created_at,
            },
            status: r.status,
            retired_at: r.retired_at,
            publish_until: r.publish_until,
            revoked_at: r.revoked_at,
        }
    }
}

/// The oldest active key of a purpose: replicas racing to create one converge on it.
const ACTIVE: &str = "SELECT kid, purpose, alg, secret, status, created_at, retired_at, \
       publish_until, revoked_at \
     FROM server_keys WHERE purpose = $1 AND status = 'active' ORDER BY created_at, kid LIMIT 1";

async fn insert_key(tx: &mut Tx, key: &ServerKeyRecord) -> StoreResult<()> {
    run!(
        tx,
        sqlx::query(
            "INSERT INTO server_keys (kid, purpose, alg, secret, status, created_at) \
             VALUES ($1, $2, $3, $4, 'active', $5) ON CONFLICT DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.purpose)
        .bind(&key.alg)
        .bind(&key.secret)
        .bind(key.created_at),
        execute
    )?;
    Ok(())
}

#[async_trait::async_trait]
impl<T: Backend> ServerKeyStore for T {
    async fn server_key(
        &self,
        purpose: &str,
        make: &(dyn Fn() -> ServerKeyRecord + Send + Sync),
    ) -> StoreResult<ServerKeyRecord> {
        let existing: Option<KeyRow> = read!(
            self.db(),
            sqlx::query_as(ACTIVE).bind(purpose),
            fetch_optional
        )?;
        if let Some(row) = existing {
            return Ok(ServerKeyState::from(row).key);
        }
        let mut tx = self.db().begin().await?;
        insert_key(&mut tx, &make()).await?;
        tx.commit().await?;
        // Read after the commit, so a key another replica committed first wins here too.
        let row: KeyRow = read!(self.db(), sqlx::query_as(ACTIVE).bind(purpose), fetch_one)?;
        Ok(ServerKeyState::from(row).key)
    }

    async fn server_keys(&self, purpose: &str) -> StoreResult<Vec<ServerKeyState>> {
        let rows: Vec<KeyRow> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT kid, purpose, alg, secret, status, created_at, retired_at, publish_until, \
                   revoked_at \
                 FROM server_keys WHERE purpose = $1 ORDER BY created_at DESC, kid",
            )
            .bind(purpose),
            fetch_all
        )?;
        Ok(rows.into_iter().map(ServerKeyState::from).collect())
    }

    async fn rotate_server_key(
        &self,
        next: &ServerKeyRecord,
        publish_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE server_keys SET status = 'retired', retired_at = $1, publish_until = $2 \
                 WHERE purpose = $3 AND status = 'active'",
            )
            .bind(now)
            .bind(publish_until)
            .bind(&next.purpose),
            execute
        )?;
        insert_key(&mut tx, next).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_server_key(
        &self,
        purpose: &str,
        kid: &str,
        replacement: &ServerKeyRecord,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let sql = format!(
            "SELECT status FROM server_keys WHERE purpose = $1 AND kid = $2 AND status <> 'revoked'{}",
            tx.dialect().for_update()
        );
        let status: Option<(String,)> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(purpose)
                .bind(kid),
            fetch_optional
        )?;
        let Some((status,)) = status else {
            return Ok(false);
        };
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE server_keys SET status = 'revoked', revoked_at = $1 \
                 WHERE purpose = $2 AND kid = $3",
            )
            .bind(now)
            .bind(purpose)
            .bind(kid),
            execute
        )?;
        if status == "active" {
            insert_key(&mut tx, replacement).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reseal_server_keys(
        &self,
        reseal: &(dyn for<'k> Fn(&'k ServerKeyRecord) -> Option<Vec<u8>> + Send + Sync),
    ) -> StoreResult<usize> {
        let mut tx = self.db().begin().await?;
        let sql = format!(
            "SELECT kid, purpose, alg, secret, status, created_at, retired_at, publish_until, \
             revoked_at FROM server_keys WHERE length(secret) > 0{}",
            tx.dialect().for_update()
        );
        let rows: Vec<KeyRow> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())),
            fetch_all
        )?;
        let count = rows.len();
        for row in rows {
            let key = ServerKeyState::from(row).key;
            let sealed = reseal(&key).ok_or_else(|| {
                crate::StoreError::Corrupt(format!("server key {} does not open", key.kid))
            })?;
            run!(
                &mut tx,
                sqlx::query("UPDATE server_keys SET secret = $1 WHERE kid = $2 AND purpose = $3")
                    .bind(sealed)
                    .bind(&key.kid)
                    .bind(&key.purpose),
                execute
            )?;
        }
        tx.commit().await?;
        Ok(count)
    }

    async fn revoke_keys_of(
        &self,
        purposes: &[&str],
        replacements: &[ServerKeyRecord],
        now: OffsetDateTime,
    ) -> StoreResult<(Vec<ServerKeyState>, u64)> {
        let mut tx = self.db().begin().await?;
        let mut before = Vec::new();
        for purpose in purposes {
            let sql = format!(
                "SELECT kid, purpose, alg, secret, status, created_at, retired_at, publish_until, \
                 revoked_at FROM server_keys WHERE purpose = $1 AND length(secret) > 0{}",
                tx.dialect().for_update()
            );
            let rows: Vec<KeyRow> = run!(
                &mut tx,
                sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(*purpose),
                fetch_all
            )?;
            before.extend(rows.into_iter().map(ServerKeyState::from));
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE server_keys SET status = 'revoked', \
                     revoked_at = COALESCE(revoked_at, $1), secret = $2 WHERE purpose = $3"
                )
                .bind(now)
                .bind(Vec::<u8>::new())
                .bind(*purpose),
                execute
            )?;
        }
        for key in replacements {
            insert_key(&mut tx, key).await?;
        }
        let refresh = run!(
            &mut tx,
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE used_at IS NULL AND revoked_at IS NULL"
            )
            .bind(now),
            execute
        )?;
        tx.commit().await?;
        Ok((before, refresh))
    }

    async fn replace_server_key_secret(&self, kid: &str, secret: &[u8]) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query("UPDATE server_keys SET secret = $1 WHERE kid = $2")
                .bind(secret)
                .bind(kid),
            execute
        )?;
        tx.commit().await?;
        Ok(done > 0)
    }
}
