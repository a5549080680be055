//! A device's local state: one SQLite file per profile. Olm pickles are
//! encrypted by vodozemac, other secrets (DPoP key, refresh token, outbox
//! plaintext) are sealed with XChaCha20-Poly1305; the key lives in a `0600` file.
use crate::error::ClientError;
use atlas_crypto::at_rest::SecretBox;
use atlas_proto::api::{PublicKey, PublishedKey};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::path::Path;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, peer_user TEXT NOT NULL, peer_device TEXT NOT NULL, \
       pickle TEXT NOT NULL, last_used INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sessions_peer ON sessions (peer_user, peer_device, last_used)",
    "CREATE TABLE IF NOT EXISTS peers (peer_user TEXT NOT NULL, peer_device TEXT NOT NULL, ed25519 TEXT NOT NULL, \
       curve25519 TEXT NOT NULL, PRIMARY KEY (peer_user, peer_device))",
    "CREATE TABLE IF NOT EXISTS outbox (message_id TEXT PRIMARY KEY, recipient TEXT NOT NULL, sealed BLOB NOT NULL, created_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS published_keys (key_type TEXT NOT NULL, key_id TEXT NOT NULL, public_key TEXT NOT NULL, \
       published_at INTEGER NOT NULL, PRIMARY KEY (key_type, key_id))",
];

/// How many published one-time and fallback keys the device remembers for consistency checks.
const PUBLISHED_KEEP: i64 = 1000;

/// How many sent plaintexts the outbox keeps for resends.
const OUTBOX_KEEP: i64 = 1000;

/// The profile's database and sealing key.
pub(crate) struct LocalState {
    pool: SqlitePool,
    pub(crate) key: [u8; 32],
    sealer: SecretBox,
}

impl Drop for LocalState {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

fn read_or_create_key(path: &Path) -> Result<[u8; 32], ClientError> {
    if path.exists() {
        let bytes = std::fs::read(path).map_err(|e| {
            ClientError::State(format!("cannot read key file {}: {e}", path.display()))
        })?;
        return bytes
            .try_into()
            .map_err(|_| ClientError::State(format!("key file {} is corrupted", path.display())));
    }
    let key: [u8; 32] = atlas_crypto::random_bytes();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        ClientError::State(format!("cannot create key file {}: {e}", path.display()))
    })?;
    std::io::Write::write_all(&mut file, &key)
        .map_err(|e| ClientError::State(format!("cannot write key file: {e}")))?;
    file.sync_all()
        .map_err(|e| ClientError::State(format!("cannot sync key file: {e}")))?;
    Ok(key)
}

impl LocalState {
    /// Opens (creating) the profile in `dir`.
    pub(crate) async fn open(dir: &Path) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ClientError::State(format!("cannot create {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let key = read_or_create_key(&dir.join("key"))?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("state.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await?;
        }
        Ok(Self {
            pool,
            key,
            sealer: SecretBox::new(&key),
        })
    }

    /// A sealed value.
    pub(crate) async fn get(&self, k: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let row = sqlx::query("SELECT v FROM kv WHERE k = $1")
            .bind(k)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let sealed: Vec<u8> = r.try_get("v")?;
            self.sealer
                .open(format!("kv/{k}").as_bytes(), &sealed)
                .map_err(|_| {
                    ClientError::State(format!("stored '{k}' is corrupted or under another key"))
                })
        })
        .transpose()
    }

    /// A sealed value as text.
    pub(crate) async fn get_text(&self, k: &str) -> Result<Option<String>, ClientError> {
        self.get(k)
            .await?
            .map(|v| {
                String::from_utf8(v)
                    .map_err(|_| ClientError::State(format!("stored '{k}' is not text")))
            })
            .transpose()
    }

    /// Stores a value sealed.
    pub(crate) async fn put(&self, k: &str, v: &[u8]) -> Result<(), ClientError> {
        let sealed = self.sealer.seal(format!("kv/{k}").as_bytes(), v);
        sqlx::query(
            "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        )
        .bind(k)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The keys (without the prefix) of the values whose key starts with `prefix`.
    pub(crate) async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT k FROM kv WHERE substr(k, 1, length($1)) = $1 ORDER BY k")
                .bind(prefix)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
            .collect())
    }

    /// Removes a value.
    pub(crate) async fn delete(&self, k: &str) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM kv WHERE k = $1")
            .bind(k)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Pickles of the sessions with a peer device, most recently used first.
    pub(crate) async fn sessions(
        &self,
        peer_user: &str,
        peer_device: &str,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let rows = sqlx::query("SELECT session_id, pickle FROM sessions WHERE peer_user = $1 AND peer_device = $2 ORDER BY last_used DESC")
            .bind(peer_user)
            .bind(peer_device)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("session_id")?, r.try_get("pickle")?)))
            .collect()
    }

    /// Saves a session and, in the same transaction, the account when it changed (an inbound session consumes a one-time key).
    pub(crate) async fn save_session(
        &self,
        peer_user: &str,
        peer_device: &str,
        session_id: &str,
        pickle: &str,
        account: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (session_id, peer_user, peer_device, pickle, last_used) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (session_id) DO UPDATE SET pickle = excluded.pickle, last_used = excluded.last_used",
        )
        .bind(session_id)
        .bind(peer_user)
        .bind(peer_device)
        .bind(pickle)
        .bind(time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64)
        .execute(&mut *tx)
        .await?;
        if let Some(account) = account {
            let sealed = self.sealer.seal(b"kv/account", account.as_bytes());
            sqlx::query("INSERT INTO kv (k, v) VALUES ('account', $1) ON CONFLICT (k) DO UPDATE SET v = excluded.v").bind(sealed).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Retires a session (after a reset): forgets it and remembers that it is
    /// gone, so messages still arriving on it are recognised as such.
    pub(crate) async fn retire_session(&self, session_id: &str) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        let key = format!("retired_session/{session_id}");
        let sealed = self.sealer.seal(format!("kv/{key}").as_bytes(), b"1");
        sqlx::query("INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING")
            .bind(&key)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a session was retired by a reset.
    pub(crate) async fn is_retired(&self, session_id: &str) -> Result<bool, ClientError> {
        Ok(self
            .get(&format!("retired_session/{session_id}"))
            .await?
            .is_some())
    }

    /// Forgets every session with a peer device.
    async fn drop_sessions(&self, peer_user: &str, peer_device: &str) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM sessions WHERE peer_user = $1 AND peer_device = $2")
            .bind(peer_user)
            .bind(peer_device)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A peer device's verified identity keys `(ed25519, curve25519)`.
    pub(crate) async fn peer(
        &self,
        peer_user: &str,
        peer_device: &str,
    ) -> Result<Option<(String, String)>, ClientError> {
        let row = sqlx::query(
            "SELECT ed25519, curve25519 FROM peers WHERE peer_user = $1 AND peer_device = $2",
        )
        .bind(peer_user)
        .bind(peer_device)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("ed25519")?, r.try_get("curve25519")?)))
            .transpose()
    }

    /// The known devices of a peer user.
    pub(crate) async fn peer_devices(&self, peer_user: &str) -> Result<Vec<String>, ClientError> {
        let rows =
            sqlx::query("SELECT peer_device FROM peers WHERE peer_user = $1 ORDER BY peer_device")
                .bind(peer_user)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|r| Ok(r.try_get("peer_device")?))
            .collect()
    }

    /// Forgets a peer device and its sessions (it is no longer one of the user's devices).
    pub(crate) async fn forget_peer(
        &self,
        peer_user: &str,
        peer_device: &str,
    ) -> Result<(), ClientError> {
        self.drop_sessions(peer_user, peer_device).await?;
        sqlx::query("DELETE FROM peers WHERE peer_user = $1 AND peer_device = $2")
            .bind(peer_user)
            .bind(peer_device)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remembers a peer device's verified identity keys.
    pub(crate) async fn save_peer(
        &self,
        peer_user: &str,
        peer_device: &str,
        ed25519: &str,
        curve25519: &str,
    ) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO peers (peer_user, peer_device, ed25519, curve25519) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (peer_user, peer_device) DO UPDATE SET ed25519 = excluded.ed25519, curve25519 = excluded.curve25519",
        )
        .bind(peer_user)
        .bind(peer_device)
        .bind(ed25519)
        .bind(curve25519)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every session: `(session_id, peer_user, peer_device, pickle)`.
    pub(crate) async fn all_sessions(
        &self,
    ) -> Result<Vec<(String, String, String, String)>, ClientError> {
        Ok(sqlx::query_as(
            "SELECT session_id, peer_user, peer_device, pickle FROM sessions ORDER BY last_used",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every known peer device: `(user, device, ed25519, curve25519)`.
    pub(crate) async fn all_peers(
        &self,
    ) -> Result<Vec<(String, String, String, String)>, ClientError> {
        Ok(sqlx::query_as(
            "SELECT peer_user, peer_device, ed25519, curve25519 FROM peers ORDER BY peer_user, peer_device",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Remembers public keys about to be published, for later consistency checks.
    pub(crate) async fn record_published(
        &self,
        keys: &[(&str, &PublicKey)],
    ) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        for (key_type, key) in keys {
            sqlx::query(
                "INSERT INTO published_keys (key_type, key_id, public_key, published_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key_type, key_id) DO UPDATE SET public_key = excluded.public_key, published_at = excluded.published_at",
            )
            .bind(key_type)
            .bind(&key.key_id)
            .bind(&key.key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM published_keys WHERE (key_type, key_id) NOT IN \
                     (SELECT key_type, key_id FROM published_keys ORDER BY published_at DESC LIMIT $1)")
            .bind(PUBLISHED_KEEP)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the published keys (after a re-key: they were the old account's).
    pub(crate) async fn forget_published(&self) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM published_keys")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every remembered published key.
    pub(crate) async fn published_keys(&self) -> Result<Vec<PublishedKey>, ClientError> {
        let rows = sqlx::query(
            "SELECT key_type, key_id, public_key FROM published_keys ORDER BY published_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PublishedKey {
                    key_type: r.try_get::<String, _>("key_type")?.parse().map_err(
                        |e: atlas_proto::keys::UnknownName| ClientError::State(e.to_string()),
                    )?,
                    key_id: r.try_get("key_id")?,
                    key: r.try_get("public_key")?,
                })
            })
            .collect()
    }

    /// Keeps a sent plaintext (sealed) so it can be re-encrypted for a resend.
    pub(crate) async fn remember_sent(
        &self,
        message_id: &str,
        recipient: &str,
        plaintext: &str,
    ) -> Result<(), ClientError> {
        let sealed = self.sealer.seal(
            format!("outbox/{message_id}").as_bytes(),
            plaintext.as_bytes(),
        );
        sqlx::query("INSERT INTO outbox (message_id, recipient, sealed, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(message_id)
            .bind(recipient)
            .bind(sealed)
            .bind(time::OffsetDateTime::now_utc().unix_timestamp())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM outbox WHERE message_id NOT IN (SELECT message_id FROM outbox ORDER BY created_at DESC, message_id DESC LIMIT $1)")
            .bind(OUTBOX_KEEP)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A sent plaintext still in the outbox.
    pub(crate) async fn sent(
        &self,
        message_id: &str,
    ) -> Result<Option<(String, String)>, ClientError> {
        let row = sqlx::query("SELECT recipient, sealed FROM outbox WHERE message_id = $1")
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get("sealed")?;
        let plain = self
            .sealer
            .open(format!("outbox/{message_id}").as_bytes(), &sealed)
            .map_err(|_| ClientError::State("outbox entry corrupted".into()))?;
        Ok(Some((
            row.try_get("recipient")?,
            String::from_utf8_lossy(&plain).into_owned(),
        )))
    }
}
