//! In-process fan-out: pushes each stored envelope to the WebSocket of its
//! recipient device, if connected, and nudges member devices when a group log
//! grows. Lossy by design (a lagging socket re-reads from the store), so it
//! never holds up a send.
use atlas_proto::api::{GroupNotice, InboxMessage};
use atlas_proto::{DeviceId, UserId};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::broadcast;

type DeviceKey = (UserId, DeviceId);

/// Channels of connected devices.
#[derive(Default)]
pub struct Fanout {
    channels: Mutex<HashMap<DeviceKey, broadcast::Sender<InboxMessage>>>,
    groups: Mutex<HashMap<DeviceKey, broadcast::Sender<GroupNotice>>>,
}

impl Fanout {
    /// Subscribes a connection of `device` to its new messages.
    pub fn subscribe(&self, user: &UserId, device: &DeviceId) -> broadcast::Receiver<InboxMessage> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry((user.clone(), device.clone()))
            .or_insert_with(|| broadcast::channel(256).0)
            .subscribe()
    }

    /// Pushes a message to the device's connections (no-op when none is connected).
    pub fn publish(&self, user: &UserId, device: &DeviceId, message: InboxMessage) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.clone(), device.clone());
        if let Some(sender) = channels.get(&key)
            && sender.send(message).is_err()
        {
            // Nobody listens any more.
            channels.remove(&key);
        }
    }

    /// Subscribes a connection of `device` to notices of its groups.
    pub fn subscribe_groups(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> broadcast::Receiver<GroupNotice> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .entry((user.clone(), device.clone()))
            .or_insert_with(|| broadcast::channel(256).0)
            .subscribe()
    }

    /// Nudges a device's connections about a group (no-op when none is connected).
    pub fn publish_group(&self, user: &UserId, device: &DeviceId, notice: GroupNotice) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.clone(), device.clone());
        if let Some(sender) = groups.get(&key)
            && sender.send(notice).is_err()
        {
            groups.remove(&key);
        }
    }
}
