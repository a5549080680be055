//! Events every replica obeys at once: a change one replica makes that the
//! others cache (the receipt-signing key, the token key, a device's standing)
//! is announced on the Redis channel `atlas:control`, so their caches drop it
//! and the sockets it authenticated close now rather than when they expire.
//! Without Redis there is one process and nothing to tell.
use crate::disconnects::Reason;
use crate::state::Inner;
use atlas_proto::{DeviceId, UserId};

/// The Redis channel of control events.
pub const CHANNEL: &str = "atlas:control";

/// Something every replica must act on at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// Receipt-signing keys were rotated or revoked: sign with the new one.
    SigningKeysChanged,
    /// A device was certified: read its standing again.
    DeviceChanged(UserId, DeviceId),
    /// A device was revoked: read its standing again and close its sockets.
    DeviceRevoked(UserId, DeviceId),
    /// The access-token key was rotated: load the new one (tokens under the
    /// old one die) and close every socket.
    TokenKeyRotated,
    /// A lockdown started or was lifted: read it again (and close every socket if it started).
    LockdownChanged,
    /// The KEK was rotated: load it again from the KEK file.
    KekChanged,
    /// A device's identity keys were revoked: read its standing again and close its sockets.
    DeviceRekey(UserId, DeviceId),
    /// Every device's identity keys were revoked: forget every standing, close every socket.
    AllRekey,
}

impl ControlEvent {
    /// The event as published.
    pub fn encode(&self) -> String {
        match self {
            Self::SigningKeysChanged => "signing_keys".into(),
            Self::TokenKeyRotated => "token_key".into(),
            Self::LockdownChanged => "lockdown".into(),
            Self::KekChanged => "kek".into(),
            Self::AllRekey => "all_rekey".into(),
            Self::DeviceRekey(user, device) => format!("device_rekey {user}/{device}"),
            Self::DeviceChanged(user, device) => format!("device {user}/{device}"),
            Self::DeviceRevoked(user, device) => format!("device_revoked {user}/{device}"),
        }
    }

    /// An event as published; `None` for what this version does not know.
    pub fn decode(text: &str) -> Option<Self> {
        match text.split_once(' ') {
            None if text == "signing_keys" => Some(Self::SigningKeysChanged),
            None if text == "token_key" => Some(Self::TokenKeyRotated),
            None if text == "lockdown" => Some(Self::LockdownChanged),
            None if text == "kek" => Some(Self::KekChanged),
            None if text == "all_rekey" => Some(Self::AllRekey),
            Some(("device_rekey", id)) => device_of(id).map(|(u, d)| Self::DeviceRekey(u, d)),
            Some(("device", id)) => device_of(id).map(|(u, d)| Self::DeviceChanged(u, d)),
            Some(("device_revoked", id)) => device_of(id).map(|(u, d)| Self::DeviceRevoked(u, d)),
            _ => None,
        }
    }
}

/// `USER/DEVICE`, both valid ids.
fn device_of(id: &str) -> Option<(UserId, DeviceId)> {
    let (user, device) = id.split_once('/')?;
    Some((UserId::new(user).ok()?, DeviceId::new(device).ok()?))
}

/// Acts on `event` in this process.
pub async fn apply(state: &Inner, event: &ControlEvent) {
    match event {
        ControlEvent::SigningKeysChanged => state.signing_keys.invalidate(),
        ControlEvent::DeviceChanged(user, device) => state.device_statuses.forget(user, device),
        ControlEvent::DeviceRevoked(user, device) => {
            state.device_statuses.forget(user, device);
            state
                .disconnects
                .device(user, device, Reason::DeviceRevoked);
        }
        ControlEvent::DeviceRekey(user, device) => {
            state.device_statuses.forget(user, device);
            state
                .disconnects
                .device(user, device, Reason::RekeyRequired);
        }
        ControlEvent::AllRekey => {
            state.device_statuses.forget_all();
            state.disconnects.everyone(Reason::RekeyRequired);
        }
        ControlEvent::TokenKeyRotated => {
            crate::auth::tokens::reload_key_now(state).await;
            state.disconnects.everyone(Reason::TokensRevoked);
        }
        ControlEvent::LockdownChanged => crate::lockdown::refresh(state).await,
        ControlEvent::KekChanged => match crate::kek::Kek::load(&state.kek_file) {
            Ok(kek) if kek.fingerprint() != state.keys.kek().fingerprint() => {
                tracing::warn!(kek = %kek.fingerprint(), "the KEK was rotated: using the new one");
                match state.keys.adopt_kek(kek).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        stragglers = n,
                        "re-sealed secrets this server wrote under the old KEK during the rotation"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "secrets written under the old KEK could not be re-sealed")
                    }
                }
            }
            Ok(_) => {}
            // Another replica rotated a file this one does not share: its secrets
            // no longer open here. Loud, since every server must share one KEK.
            Err(e) => {
                tracing::error!(error = %e, "the KEK was rotated but cannot be reloaded here")
            }
        },
    }
}

impl Inner {
    /// Acts on `event` here and tells every other replica to.
    pub async fn announce(&self, event: ControlEvent) {
        apply(self, &event).await;
        if let Some(redis) = &self.redis {
            let mut c = redis.connection();
            tokio::spawn(async move {
                let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(event.encode())
                    .query_async(&mut c)
                    .await;
                if let Err(e) = sent {
                    // The others' caches expire by themselves within seconds.
                    tracing::warn!(error = %e, event = %event.encode(), "control event not published");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_unknown_ones_are_ignored() {
        let device = ControlEvent::DeviceChanged(
            UserId::new("alice").unwrap(),
            DeviceId::new("PHONE").unwrap(),
        );
        let revoked = ControlEvent::DeviceRevoked(
            UserId::new("alice").unwrap(),
            DeviceId::new("PHONE").unwrap(),
        );
        for event in [
            ControlEvent::SigningKeysChanged,
            ControlEvent::TokenKeyRotated,
            ControlEvent::LockdownChanged,
            ControlEvent::KekChanged,
            ControlEvent::AllRekey,
            ControlEvent::DeviceRekey(
                UserId::new("bob").unwrap(),
                DeviceId::new("LAPTOP").unwrap(),
            ),
            device,
            revoked,
        ] {
            assert_eq!(ControlEvent::decode(&event.encode()), Some(event));
        }
        for junk in [
            "",
            "device",
            "device alice",
            "device a/b/c",
            "lockdown now",
            "signing_keys now",
            "token_key alice",
            "device_revoked alice",
            "device_rekey bob",
            "all_rekey now",
            "device_revoked a/b c",
        ] {
            assert_eq!(ControlEvent::decode(junk), None, "{junk}");
        }
    }
}
