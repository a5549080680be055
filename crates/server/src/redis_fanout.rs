//! Fan-out across replicas: each replica subscribes, in Redis, to the channel
//! of every device connected to it (`atlas:push:<USER>/<DEVICE>`) and publishes
//! there what it stores for a device. A message travels as a wake-up hint
//! (the recipient's replica reads it from the database, where the durable
//! queue stays), a notice as itself. A lost hint delays nothing beyond the
//! client's next sync or reconnect.
use crate::fanout::{Fanout, Live, LocalFanout};
use crate::redis_store::Redis;
use atlas_proto::api::{InboxMessage, PushEvent};
use atlas_proto::{DeviceId, UserId};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// The Redis channel of a device.
pub fn channel(user: &UserId, device: &DeviceId) -> String {
    format!("atlas:push:{user}/{device}")
}

/// A hint that `device` has new messages.
const WAKE: &str = "wake";
/// Prefix of a notice: `notice <PushEvent JSON>`.
const NOTICE: &str = "notice ";

/// This replica's connections, and every other replica's through Redis.
pub struct RedisFanout {
    local: Arc<LocalFanout>,
    publisher: ConnectionManager,
    subscriber: ConnectionManager,
    /// Connections per device on this replica: the device's channel is
    /// subscribed while there is one.
    connected: Mutex<HashMap<(UserId, DeviceId), usize>>,
    /// This replica's id, so it ignores what it published itself.
    me: String,
}

impl RedisFanout {
    /// Fan-out over `redis`: opens a RESP3 connection for subscriptions (it
    /// resubscribes by itself after reconnecting), subscribes to the control
    /// channel, and starts its reader; control events arrive on the receiver.
    pub async fn start(
        redis: &Redis,
        url: &str,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<String>), redis::RedisError> {
        let (pushes, mut received) = mpsc::unbounded_channel();
        let (control, events) = mpsc::unbounded_channel();
        let subscriber = redis.subscriber(url, pushes)?;
        let mut c = subscriber.clone();
        tokio::spawn(async move {
            // Until Redis answers once; after that it resubscribes by itself.
            while let Err(e) = c.subscribe(crate::control::CHANNEL).await {
                tracing::warn!(error = %e, "cannot subscribe to the control channel yet");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        let fanout = Arc::new(Self {
            local: Arc::new(LocalFanout::default()),
            publisher: redis.connection(),
            subscriber,
            connected: Mutex::default(),
            me: uuid::Uuid::new_v4().simple().to_string(),
        });
        let local = fanout.local.clone();
        let me = fanout.me.clone();
        tokio::spawn(async move {
            while let Some(push) = received.recv().await {
                deliver(&local, &me, &control, push);
            }
        });
        Ok((fanout, events))
    }

    /// Publishes `payload` on `device`'s channel without waiting for Redis.
    fn publish_remote(&self, user: &UserId, device: &DeviceId, payload: String) {
        let mut c = self.publisher.clone();
        let channel = channel(user, device);
        let message = format!("{} {payload}", self.me);
        tokio::spawn(async move {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(message)
                .query_async(&mut c)
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, %channel, "push hint not published (the device syncs on its own)");
            }
        });
    }
}

/// Hands a message from Redis to this replica's connections.
fn deliver(
    local: &LocalFanout,
    me: &str,
    control: &mpsc::UnboundedSender<String>,
    push: redis::PushInfo,
) {
    if push.kind != redis::PushKind::Message {
        return;
    }
    let [channel, payload] = push.data.as_slice() else {
        return;
    };
    let (Ok(channel), Ok(payload)) = (
        redis::from_redis_value::<String>(channel.clone()),
        redis::from_redis_value::<String>(payload.clone()),
    ) else {
        return;
    };
    if channel == crate::control::CHANNEL {
        let _ = control.send(payload);
        return;
    }
    let Some((user, device)) = channel
        .strip_prefix("atlas:push:")
        .and_then(|d| d.split_once('/'))
    else {
        return;
    };
    let (Ok(user), Ok(device)) = (UserId::new(user), DeviceId::new(device)) else {
        return;
    };
    let Some((origin, body)) = payload.split_once(' ') else {
        return;
    };
    if origin == me {
        return;
    }
    if body == WAKE {
        local.send_here(&user, &device, Live::Wake);
    } else if let Some(json) = body.strip_prefix(NOTICE)
        && let Ok(notice) = serde_json::from_str::<PushEvent>(json)
    {
        local.publish_notice(&user, &device, notice);
    }
}

#[async_trait::async_trait]
impl Fanout for RedisFanout {
    async fn subscribe(&self, user: &UserId, device: &DeviceId) -> broadcast::Receiver<Live> {
        let receiver = self.local.subscribe_here(user, device);
        let first = {
            let mut connected = self.connected.lock().unwrap_or_else(|p| p.into_inner());
            let n = connected.entry((user.clone(), device.clone())).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            let mut c = self.subscriber.clone();
            if let Err(e) = c.subscribe(channel(user, device)).await {
                // The socket still gets what this replica stores, and everything on reconnect.
                tracing::warn!(error = %e, "cannot subscribe to the device's push channel in Redis");
            }
        }
        receiver
    }

    fn unsubscribe(&self, user: &UserId, device: &DeviceId) {
        let key = (user.clone(), device.clone());
        let last = {
            let mut connected = self.connected.lock().unwrap_or_else(|p| p.into_inner());
            match connected.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    connected.remove(&key);
                    true
                }
                None => false,
            }
        };
        if last {
            let mut c = self.subscriber.clone();
            let channel = channel(user, device);
            tokio::spawn(async move {
                let _ = c.unsubscribe(channel).await;
            });
        }
    }

    fn publish(&self, user: &UserId, device: &DeviceId, message: InboxMessage) {
        self.local.publish(user, device, message);
        self.publish_remote(user, device, WAKE.to_owned());
    }

    fn subscribe_notices(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> broadcast::Receiver<Arc<PushEvent>> {
        self.local.subscribe_notices(user, device)
    }

    fn publish_notice(&self, user: &UserId, device: &DeviceId, notice: PushEvent) {
        if let Ok(json) = serde_json::to_string(&notice) {
            self.publish_remote(user, device, format!("{NOTICE}{json}"));
        }
        self.local.publish_notice(user, device, notice);
    }
}
