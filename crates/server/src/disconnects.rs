//! Forced disconnects: every push socket watches its device and the whole
//! process, so a revoked device or a rotated token key closes the sockets
//! they authenticated at once, not when their tokens expire. Lossless, unlike
//! the fan-out: a `watch` keeps the last reason until the socket reads it.
use atlas_proto::{DeviceId, UserId};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

type DeviceKey = (UserId, DeviceId);

/// Why a socket was closed; its text is the close frame's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The device was revoked.
    DeviceRevoked,
    /// The token key was rotated: every access token is dead.
    TokensRevoked,
    /// An operator locked the server down (an emergency).
    LockedDown,
    /// An operator revoked the device's identity keys: it must re-key.
    RekeyRequired,
}

impl Reason {
    /// The stable code sent as the close frame's reason.
    pub fn code(self) -> &'static str {
        match self {
            Self::DeviceRevoked => "device_revoked",
            Self::TokensRevoked => "tokens_revoked",
            Self::LockedDown => "locked_down",
            Self::RekeyRequired => "rekey_required",
        }
    }
}

/// The close code: 1008, policy violation (RFC 6455 §7.4.1); the client must
/// authenticate again, if it still can.
pub const CLOSE_CODE: u16 = 1008;

/// Devices that may be told to go, and everyone.
pub struct Disconnects {
    devices: Mutex<Devices>,
    everyone: watch::Sender<Option<Reason>>,
}

/// Per-device senders, pruned of devices without sockets as the map grows.
#[derive(Default)]
struct Devices {
    senders: HashMap<DeviceKey, watch::Sender<Option<Reason>>>,
    prune_at: usize,
}

/// Fewest entries before the map is pruned.
const PRUNE_FROM: usize = 64;

impl Default for Disconnects {
    fn default() -> Self {
        Self {
            devices: Mutex::default(),
            everyone: watch::channel(None).0,
        }
    }
}

impl Disconnects {
    /// What a socket of `device` waits on.
    pub fn watch(&self, user: &UserId, device: &DeviceId) -> Watch {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if devices.senders.len() >= devices.prune_at.max(PRUNE_FROM) {
            devices.senders.retain(|_, s| s.receiver_count() > 0);
            devices.prune_at = devices.senders.len() * 2;
        }
        let own = devices
            .senders
            .entry((user.clone(), device.clone()))
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Watch {
            own,
            everyone: self.everyone.subscribe(),
        }
    }

    /// Closes the sockets of `device` in this process.
    pub fn device(&self, user: &UserId, device: &DeviceId, reason: Reason) {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = devices.senders.get(&(user.clone(), device.clone())) {
            sender.send_replace(Some(reason));
        }
    }

    /// Push sockets open in this process (each watches everyone).
    pub fn sockets(&self) -> usize {
        self.everyone.receiver_count()
    }

    /// Closes every socket in this process.
    pub fn everyone(&self, reason: Reason) {
        self.everyone.send_replace(Some(reason));
    }
}

/// A socket's view of [`Disconnects`], from the moment it was made.
pub struct Watch {
    own: watch::Receiver<Option<Reason>>,
    everyone: watch::Receiver<Option<Reason>>,
}

impl Watch {
    /// Waits until the socket must close, and says why.
    pub async fn closed(&mut self) -> Reason {
        loop {
            let changed = tokio::select! {
                c = self.own.changed() => c.map(|()| *self.own.borrow_and_update()),
                c = self.everyone.changed() => c.map(|()| *self.everyone.borrow_and_update()),
            };
            match changed {
                Ok(Some(reason)) => return reason,
                Ok(None) => {}
                // The process is going away; its shutdown closes the socket.
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(user: &str, device: &str) -> (UserId, DeviceId) {
        (UserId::new(user).unwrap(), DeviceId::new(device).unwrap())
    }

    async fn closes(watch: &mut Watch) -> Option<Reason> {
        tokio::time::timeout(Duration::from_millis(50), watch.closed())
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_device_is_closed_alone_and_everyone_together() {
        let d = Disconnects::default();
        let (alice, phone) = id("alice", "PHONE");
        let (_, laptop) = id("alice", "LAPTOP");
        let mut phone_1 = d.watch(&alice, &phone);
        let mut phone_2 = d.watch(&alice, &phone);
        let mut other = d.watch(&alice, &laptop);
        assert_eq!(closes(&mut phone_1).await, None, "nothing happened yet");
        d.device(&alice, &phone, Reason::DeviceRevoked);
        assert_eq!(closes(&mut phone_1).await, Some(Reason::DeviceRevoked));
        assert_eq!(closes(&mut phone_2).await, Some(Reason::DeviceRevoked));
        assert_eq!(closes(&mut other).await, None);
        d.everyone(Reason::TokensRevoked);
        assert_eq!(closes(&mut other).await, Some(Reason::TokensRevoked));
    }

    #[tokio::test]
    async fn a_socket_opened_afterwards_is_not_closed_by_an_earlier_event() {
        let d = Disconnects::default();
        let (alice, phone) = id("alice", "PHONE");
        d.everyone(Reason::TokensRevoked);
        let _before = d.watch(&alice, &phone);
        d.device(&alice, &phone, Reason::DeviceRevoked);
        // A device re-certified later reconnects: its new socket starts clean.
        let mut after = d.watch(&alice, &phone);
        assert_eq!(closes(&mut after).await, None);
    }

    #[test]
    fn devices_without_sockets_are_pruned() {
        let d = Disconnects::default();
        for i in 0..1000 {
            let (user, device) = id(&format!("u{i}"), "D");
            drop(d.watch(&user, &device));
        }
        let left = d.devices.lock().unwrap().senders.len();
        assert!(left <= 2 * PRUNE_FROM, "{left} entries kept");
    }
}
