//! Whether a device may act: pending (linked, not yet certified), active, or
//! removed. Every authenticated request asks, so answers are cached briefly; the
//! process that removes or certifies a device forgets its entry at once, so its
//! tokens die there immediately (other processes notice within [`TTL`]).
use atlas_proto::api::DeviceStatus;
use atlas_proto::{DeviceId, UserId};
use atlas_store::{AccountStore, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up status is trusted.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// A device's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Linked; only its certificate may be fetched.
    Pending,
    /// Certified and in use.
    Active,
    /// Its identity keys were revoked: it may only publish new ones.
    Rekey,
    /// Removed, or never registered.
    Gone,
}

impl DeviceState {
    fn of(status: DeviceStatus) -> Self {
        match status {
            DeviceStatus::Active => Self::Active,
            DeviceStatus::Pending => Self::Pending,
            DeviceStatus::Revoked => Self::Gone,
            DeviceStatus::Rekey => Self::Rekey,
        }
    }
}

/// A device's state and the time before which its access tokens are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// What the device may do.
    pub state: DeviceState,
    /// Tokens issued before this (Unix seconds) are dead: set by an identity
    /// revocation and by the re-key after it.
    pub tokens_after: Option<i64>,
}

type Entries = HashMap<(UserId, DeviceId), (Instant, Standing)>;

/// The cache.
#[derive(Default)]
pub struct DeviceStatuses {
    entries: Mutex<Entries>,
}

impl DeviceStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Entries are plain values: a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's standing, from the cache or the store.
    pub async fn standing(
        &self,
        store: &dyn AccountStore,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Standing, StoreError> {
        let key = (user_id.clone(), device_id.clone());
        if let Some((at, standing)) = self.lock().get(&key)
            && at.elapsed() < TTL
        {
            return Ok(*standing);
        }
        let state = store.device(user_id, device_id).await?.map_or(
            Standing {
                state: DeviceState::Gone,
                tokens_after: None,
            },
            |d| Standing {
                state: DeviceState::of(d.status),
                tokens_after: d.tokens_after,
            },
        );
        let mut entries = self.lock();
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
        }
        entries.insert(key, (Instant::now(), state));
        Ok(state)
    }

    /// Forgets every entry (after many devices changed status at once).
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    /// Forgets a device's entry (after this process changed its status).
    pub fn forget(&self, user_id: &UserId, device_id: &DeviceId) {
        self.lock().remove(&(user_id.clone(), device_id.clone()));
    }
}
