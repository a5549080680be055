//! Fan-out: pushes each stored envelope to the WebSocket of its recipient
//! device, if connected, and nudges devices with notices (a group log grew, a
//! resend was asked). Lossy by design (a lagging socket re-reads from the
//! store), so it never holds up a send. [`Fanout`] is the seam: [`LocalFanout`]
//! reaches the connections of this process; [`crate::redis_fanout::RedisFanout`]
//! adds the other replicas' (Redis pub/sub).
use atlas_proto::api::{InboxMessage, PushEvent};
use atlas_proto::{DeviceId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

type DeviceKey = (UserId, DeviceId);

/// Events held for a slow connection before it lags and re-reads from the
/// store: every slot is allocated up front, for every connected device (so
/// events are shared, `Arc`s: a slot is a pointer, and a receiver's copy too).
const CHANNEL: usize = 16;

/// What a connection of a device hears about its messages.
#[derive(Debug, Clone)]
pub enum Live {
    /// A new message, as stored.
    Message(Arc<InboxMessage>),
    /// New messages were stored (by another replica): read them from the store.
    Wake,
}

/// Delivery to connected devices.
#[async_trait::async_trait]
pub trait Fanout: Send + Sync {
    /// Subscribes a connection of `device` to its new messages; once this
    /// returns, every message stored afterwards reaches the receiver (or wakes it).
    async fn subscribe(&self, user: &UserId, device: &DeviceId) -> broadcast::Receiver<Live>;
    /// A connection of `device` closed (its receivers are dropped).
    fn unsubscribe(&self, _user: &UserId, _device: &DeviceId) {}
    /// Pushes a message to the device's connections (no-op when none is connected).
    fn publish(&self, user: &UserId, device: &DeviceId, message: InboxMessage);
    /// Subscribes a connection of `device` to its notices.
    fn subscribe_notices(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> broadcast::Receiver<Arc<PushEvent>>;
    /// Nudges a device's connections (no-op when none is connected).
    fn publish_notice(&self, user: &UserId, device: &DeviceId, notice: PushEvent);
}

/// Channels of the devices connected to this process.
#[derive(Default)]
pub struct LocalFanout {
    channels: Mutex<HashMap<DeviceKey, broadcast::Sender<Live>>>,
    notices: Mutex<HashMap<DeviceKey, broadcast::Sender<Arc<PushEvent>>>>,
}

impl LocalFanout {
    /// Subscribes a connection of `device` to its new messages.
    pub fn subscribe_here(&self, user: &UserId, device: &DeviceId) -> broadcast::Receiver<Live> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry((user.clone(), device.clone()))
            .or_insert_with(|| broadcast::channel(CHANNEL).0)
            .subscribe()
    }

    /// Tells `device`'s connections here about new messages (no-op when none).
    pub fn send_here(&self, user: &UserId, device: &DeviceId, live: Live) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.clone(), device.clone());
        if let Some(sender) = channels.get(&key)
            && sender.send(live).is_err()
        {
            // Nobody listens any more.
            channels.remove(&key);
        }
    }
}

#[async_trait::async_trait]
impl Fanout for LocalFanout {
    async fn subscribe(&self, user: &UserId, device: &DeviceId) -> broadcast::Receiver<Live> {
        self.subscribe_here(user, device)
    }

    fn publish(&self, user: &UserId, device: &DeviceId, message: InboxMessage) {
        self.send_here(user, device, Live::Message(Arc::new(message)));
    }

    fn subscribe_notices(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> broadcast::Receiver<Arc<PushEvent>> {
        let mut notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        notices
            .entry((user.clone(), device.clone()))
            .or_insert_with(|| broadcast::channel(CHANNEL).0)
            .subscribe()
    }

    fn publish_notice(&self, user: &UserId, device: &DeviceId, notice: PushEvent) {
        let mut notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.clone(), device.clone());
        if let Some(sender) = notices.get(&key)
            && sender.send(Arc::new(notice)).is_err()
        {
            notices.remove(&key);
        }
    }
}
