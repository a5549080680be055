//! Storage of MLS KeyPackages: published per device, each ordinary one
//! claimed at most once (also under concurrent claims), then the device's
//! last-resort one.
use crate::accounts::registered_device;
use crate::db::{Backend, read, run};
use crate::{StoreError, StoreResult};
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// A KeyPackage to publish.
#[derive(Debug, Clone)]
pub struct NewKeyPackage {
    /// Its reference (hex SHA-256 of the bytes), unique per device.
    pub key_package_ref: String,
    /// TLS-serialized KeyPackage.
    pub bytes: Vec<u8>,
    /// Handed out when the stock is empty, and then more than once.
    pub last_resort: bool,
    /// The device's signature of the package's MLS signature key (see `atlas_crypto::mls`).
    pub binding: Option<String>,
}

/// A claimed KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeyPackageRecord {
    /// TLS-serialized KeyPackage.
    pub bytes: Vec<u8>,
    /// The device's signature of its MLS signature key, if it gave one.
    pub binding: Option<String>,
}

/// A device's KeyPackage stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPackageCounts {
    /// Unclaimed ordinary KeyPackages.
    pub available: u64,
    /// Whether a last-resort KeyPackage is published.
    pub last_resort: bool,
}

/// The KeyPackage part of the store.
#[async_trait::async_trait]
pub trait KeyPackageStore: Send + Sync {
    /// Publishes KeyPackages of a device; a new last-resort one replaces the old.
    async fn upload_key_packages(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        packages: &[NewKeyPackage],
        now: OffsetDateTime,
    ) -> StoreResult<KeyPackageCounts>;
    /// A device's stock (bound KeyPackages only: unbound ones are never counted).
    async fn key_package_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<KeyPackageCounts>;
    /// Claims one KeyPackage per active device of `user_id` (only `devices` if
    /// not empty): an ordinary one never handed out before, else the last-resort one.
    async fn claim_key_packages(
        &self,
        user_id: &UserId,
        devices: &[DeviceId],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(DeviceId, Option<ClaimedKeyPackageRecord>)>>;
}

/// Counts a device's bound, unclaimed KeyPackages.
const STOCK: &str = "SELECT \
    (SELECT COUNT(*) FROM mls_key_packages WHERE user_id = $1 AND device_id = $2 \
       AND status = 'active' AND last_resort = 0 AND binding IS NOT NULL), \
    (SELECT COUNT(*) FROM mls_key_packages WHERE user_id = $1 AND device_id = $2 \
       AND status = 'active' AND last_resort = 1 AND binding IS NOT NULL)";

fn stock((available, last_resort): (i64, i64)) -> KeyPackageCounts {
    KeyPackageCounts {
        available: available.max(0) as u64,
        last_resort: last_resort > 0,
    }
}

#[async_trait::async_trait]
impl<T: Backend> KeyPackageStore for T {
    async fn upload_key_packages(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        packages: &[NewKeyPackage],
        now: OffsetDateTime,
    ) -> StoreResult<KeyPackageCounts> {
        let (user, device) = (user_id.as_str(), device_id.as_str());
        let mut tx = self.db().begin().await?;
        registered_device(&mut tx, user, device).await?;
        if packages.iter().any(|p| p.binding.is_some()) {
            // Bound packages supersede those published before bindings existed.
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE mls_key_packages SET status = 'replaced' \
                     WHERE user_id = $1 AND device_id = $2 AND status = 'active' AND binding IS NULL",
                )
                .bind(user)
                .bind(device),
                execute
            )?;
        }
        if packages.iter().any(|p| p.last_resort) {
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE mls_key_packages SET status = 'replaced' \
                     WHERE user_id = $1 AND device_id = $2 AND last_resort = 1 AND status = 'active'",
                )
                .bind(user)
                .bind(device),
                execute
            )?;
        }
        for p in packages {
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO mls_key_packages (user_id, device_id, key_package_ref, key_package, \
                       last_resort, status, created_at, binding) \
                     VALUES ($1, $2, $3, $4, $5, 'active', $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(user)
                .bind(device)
                .bind(&p.key_package_ref)
                .bind(&p.bytes)
                .bind(i64::from(p.last_resort))
                .bind(now)
                .bind(p.binding.as_deref()),
                execute
            )?;
        }
        let counts = run!(
            &mut tx,
            sqlx::query_as(STOCK).bind(user).bind(device),
            fetch_one
        )?;
        tx.commit().await?;
        Ok(stock(counts))
    }

    async fn key_package_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<KeyPackageCounts> {
        let counts = read!(
            self.db(),
            sqlx::query_as(STOCK)
                .bind(user_id.as_str())
                .bind(device_id.as_str()),
            fetch_one
        )?;
        Ok(stock(counts))
    }

    async fn claim_key_packages(
        &self,
        user_id: &UserId,
        only: &[DeviceId],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(DeviceId, Option<ClaimedKeyPackageRecord>)>> {
        let user = user_id.as_str();
        let mut tx = self.db().begin().await?;
        let devices: Vec<(String,)> = run!(
            &mut tx,
            sqlx::query_as(
                "SELECT device_id FROM devices WHERE user_id = $1 AND status = 'active' \
                 ORDER BY created_at, device_id",
            )
            .bind(user),
            fetch_all
        )?;
        if devices.is_empty() {
            let known: Option<(i64,)> = run!(
                &mut tx,
                sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM users WHERE user_id = $1").bind(user),
                fetch_optional
            )?;
            if known.is_none() {
                return Err(StoreError::UnknownUser);
            }
        }
        // Concurrent claimers on PostgreSQL skip a row another holds and take the next.
        let claim_sql = format!(
            "UPDATE mls_key_packages SET status = 'claimed', claimed_at = $1 \
             WHERE user_id = $2 AND device_id = $3 AND status = 'active' AND last_resort = 0 \
               AND key_package_ref = ( \
                 SELECT key_package_ref FROM mls_key_packages \
                 WHERE user_id = $2 AND device_id = $3 AND status = 'active' AND last_resort = 0 \
                 ORDER BY created_at, key_package_ref LIMIT 1{}) \
             RETURNING key_package, binding",
            tx.dialect().skip_locked()
        );
        let mut out = Vec::new();
        for (device,) in devices {
            let device_id =
                DeviceId::new(&device).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if !only.is_empty() && !only.contains(&device_id) {
                continue;
            }
            let ordinary: Option<(Vec<u8>, Option<String>)> = run!(
                &mut tx,
                sqlx::query_as(sqlx::AssertSqlSafe(claim_sql.as_str()))
                    .bind(now)
                    .bind(user)
                    .bind(&device),
                fetch_optional
            )?;
            let package = match ordinary {
                Some(p) => Some(p),
                None => run!(
                    &mut tx,
                    sqlx::query_as(
                        "SELECT key_package, binding FROM mls_key_packages \
                         WHERE user_id = $1 AND device_id = $2 AND status = 'active' AND last_resort = 1 \
                         ORDER BY created_at DESC LIMIT 1",
                    )
                    .bind(user)
                    .bind(&device),
                    fetch_optional
                )?,
            };
            let package =
                package.map(|(bytes, binding)| ClaimedKeyPackageRecord { bytes, binding });
            out.push((device_id, package));
        }
        tx.commit().await?;
        Ok(out)
    }
}
