//! Cross-signing on the device: the user identity key (kept sealed in the
//! profile), linking new devices, removing devices, and the contacts' identity
//! keys pinned on first use, which decide which of their devices get a copy.
use crate::client::Client;
use crate::error::ClientError;
use atlas_crypto::identity::{self, LinkCode, UserIdentity};
use atlas_proto::api::{
    CertificateClaim, CertifyRequest, DeviceListResponse, LinkTokenResponse,
    PendingDevicesResponse, RevokeDeviceRequest,
};
use atlas_proto::{DeviceId, UserId};
use reqwest::Method;
use serde::{Deserialize, Serialize};

/// Local key of the identity key's seed.
const IDENTITY: &str = "identity";
/// Local key of the link code a pending (linked, uncertified) device registered with.
pub(crate) const LINK_PENDING: &str = "link_pending";

fn link_secret_key(token_hash: &str) -> String {
    format!("link_secret/{token_hash}")
}

fn pin_key(user: &UserId) -> String {
    format!("pin/{user}")
}

fn untrusted_key(user: &UserId) -> String {
    format!("untrusted/{user}")
}

/// What this device knows of a contact's identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityPin {
    /// The pinned identity key.
    pub identity_key: String,
    /// Whether the user compared safety numbers and confirmed it.
    pub verified: bool,
    /// A different key the server now lists, not accepted (an identity change).
    pub changed_to: Option<String>,
}

/// A contact's device that gets no copy of messages, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntrustedDevice {
    /// The device.
    pub device_id: DeviceId,
    /// Why it is not trusted.
    pub reason: String,
}

/// A contact's devices as this device judges them.
#[derive(Debug, Clone)]
pub(crate) struct PeerDevices {
    /// Certified by the pinned identity key: these get copies.
    pub trusted: Vec<DeviceKeysOf>,
    /// Listed as active but not certified by it.
    pub untrusted: Vec<UntrustedDevice>,
}

/// A trusted device's public keys.
#[derive(Debug, Clone)]
pub(crate) struct DeviceKeysOf {
    pub device_id: DeviceId,
    pub ed25519: String,
    pub curve25519: String,
}

/// The safety number of this user and a contact, with the pin's state.
#[derive(Debug, Clone, Serialize)]
pub struct SafetyNumber {
    /// The contact.
    pub user_id: UserId,
    /// 60 digits in groups of five, the same on both sides.
    pub number: String,
    /// The contact's identity key it is computed from (the one the server lists now).
    pub identity_key: String,
    /// Whether that key was confirmed (`atlas verify USER --confirm`).
    pub verified: bool,
    /// Whether it differs from the key pinned before.
    pub changed: bool,
}

impl Client {
    /// This user's identity key, if this device holds it.
    pub(crate) async fn identity(&self) -> Result<Option<UserIdentity>, ClientError> {
        let Some(seed) = self.local.get(IDENTITY).await? else {
            return Ok(None);
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| ClientError::State("stored identity key is corrupted".into()))?;
        Ok(Some(UserIdentity::from_seed(&seed)))
    }

    pub(crate) async fn store_identity(&self, identity: &UserIdentity) -> Result<(), ClientError> {
        self.local.put(IDENTITY, &identity.seed()).await?;
        let pin = IdentityPin {
            identity_key: identity.public_key(),
            verified: true,
            changed_to: None,
        };
        self.save_pin(self.user_id(), &pin).await
    }

    async fn pin(&self, user: &UserId) -> Result<Option<IdentityPin>, ClientError> {
        let Some(bytes) = self.local.get(&pin_key(user)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::State(format!("identity pin of {user}: {e}")))
    }

    async fn save_pin(&self, user: &UserId, pin: &IdentityPin) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(pin).map_err(|e| ClientError::State(e.to_string()))?;
        self.local.put(&pin_key(user), &bytes).await
    }

    /// Contacts whose listed identity key differs from the one pinned here.
    pub async fn identity_changes(&self) -> Result<Vec<(UserId, IdentityPin)>, ClientError> {
        let mut out = Vec::new();
        for user in self.local.keys_with_prefix("pin/").await? {
            let Ok(user) = UserId::new(user) else {
                continue;
            };
            if let Some(pin) = self.pin(&user).await?
                && pin.changed_to.is_some()
            {
                out.push((user, pin));
            }
        }
        Ok(out)
    }

    /// The contact's identity key as pinned here (none before first contact).
    pub async fn identity_pin(&self, user: &UserId) -> Result<Option<IdentityPin>, ClientError> {
        self.pin(user).await
    }

    /// A single-use code that links a new device to this user (valid ten minutes).
    /// The new device is certified by this device on its next sync.
    pub async fn create_link_code(&self) -> Result<(String, String), ClientError> {
        if self.identity().await?.is_none() {
            return Err(ClientError::State(
                "this device does not hold the user's identity key, so it cannot certify a new one"
                    .into(),
            ));
        }
        let token: LinkTokenResponse = self
            .transport
            .call::<(), _>(Method::POST, "/devices/link-tokens", "", None)
            .await?;
        let code = LinkCode::new(token.link_token);
        self.local
            .put(&link_secret_key(&code.token_hash()), &code.secret)
            .await?;
        Ok((code.encode(), token.expires_at.to_string()))
    }

    /// Certifies the devices linked with codes this device made, after checking
    /// each proves it holds its code; returns the devices certified.
    pub async fn approve_linked_devices(&self) -> Result<Vec<DeviceId>, ClientError> {
        let Some(identity) = self.identity().await? else {
            return Ok(Vec::new());
        };
        let pending: PendingDevicesResponse = self
            .transport
            .call::<(), _>(Method::GET, "/devices/pending", "", None)
            .await?;
        let mut certified = Vec::new();
        for device in pending.devices {
            let key = link_secret_key(&device.link_token_hash);
            let Some(secret) = self.local.get(&key).await? else {
                continue; // another device's code
            };
            let secret: [u8; 32] = secret
                .try_into()
                .map_err(|_| ClientError::State("stored link secret is corrupted".into()))?;
            let code = LinkCode {
                token: String::new(),
                secret,
            };
            let user = self.user_id();
            let genuine = code
                .check_proof(user, &device.keys, &device.link_proof)
                .is_ok()
                && atlas_crypto::device::verify_device_keys(user, &device.keys).is_ok();
            // One chance per code: a device that cannot prove it holds the code burns it.
            self.local.delete(&key).await?;
            if !genuine {
                tracing::warn!(device = %device.keys.device_id, "a linked device does not hold the link code: not certified");
                continue;
            }
            let request = CertifyRequest {
                certificate: identity.certify(user, &device.keys),
                identity_transfer: code.seal_identity(&identity, user, &device.keys),
            };
            let path = format!("/devices/{}/certificate", device.keys.device_id);
            self.transport
                .call_no_content(Method::POST, &path, Some(&request))
                .await?;
            certified.push(device.keys.device_id);
        }
        Ok(certified)
    }

    /// For a linked device: fetches its certificate and the identity key once an
    /// existing device certified it; true once certified.
    pub async fn finish_link(&self) -> Result<bool, ClientError> {
        let Some(code) = self.local.get_text(LINK_PENDING).await? else {
            return Ok(true);
        };
        let code = LinkCode::parse(&code)
            .map_err(|_| ClientError::State("stored link code is corrupted".into()))?;
        let claim: CertificateClaim = self
            .transport
            .call::<(), _>(Method::POST, "/devices/certificate/claim", "", None)
            .await?;
        match (
            claim.status.as_str(),
            claim.certificate,
            claim.identity_transfer,
        ) {
            ("pending", _, _) => Ok(false),
            ("active", Some(certificate), Some(transfer)) => {
                let keys = self
                    .account
                    .lock()
                    .await
                    .device_keys(self.user_id(), self.device_id());
                let identity = code
                    .open_identity(self.user_id(), &keys, &transfer)
                    .map_err(|e| ClientError::State(format!("linking failed: {e}")))?;
                identity::verify_certificate(
                    &identity.public_key(),
                    self.user_id(),
                    &keys,
                    &certificate,
                )
                .map_err(|e| ClientError::State(format!("linking failed: {e}")))?;
                self.store_identity(&identity).await?;
                self.local.delete(LINK_PENDING).await?;
                Ok(true)
            }
            (status, _, _) => Err(ClientError::State(format!(
                "linking failed: the server lists this device as {status} without its identity key; link it again"
            ))),
        }
    }

    /// Removes one of this user's devices (this one included), signed with the identity key.
    pub async fn remove_device(&self, device_id: &DeviceId) -> Result<(), ClientError> {
        let identity = self.identity().await?.ok_or_else(|| {
            ClientError::State("this device does not hold the user's identity key".into())
        })?;
        let listed = self.devices(self.user_id()).await?;
        let device = listed
            .devices
            .iter()
            .find(|d| d.keys.device_id == *device_id)
            .ok_or_else(|| {
                ClientError::Input(format!("{} has no device {device_id}", self.user_id()))
            })?;
        let request = RevokeDeviceRequest {
            signature: identity.revoke(self.user_id(), &device.keys),
        };
        self.transport
            .call_no_content(
                Method::POST,
                &format!("/devices/{device_id}/revoke"),
                Some(&request),
            )
            .await
    }

    /// Checks a listed identity key against the pin (pinning it on first use).
    async fn pinned_identity(&self, listed: &DeviceListResponse) -> Result<String, ClientError> {
        let user = &listed.user_id;
        let Some(key) = listed.identity_key.clone() else {
            return Err(ClientError::UntrustedKeys(format!(
                "{user} has no identity key (revoked by the server's operator until {user} re-keys)"
            )));
        };
        match self.pin(user).await? {
            None => {
                let pin = IdentityPin {
                    identity_key: key.clone(),
                    verified: false,
                    changed_to: None,
                };
                self.save_pin(user, &pin).await?;
                Ok(key)
            }
            Some(pin) if pin.identity_key == key => {
                if pin.changed_to.is_some() {
                    self.save_pin(
                        user,
                        &IdentityPin {
                            changed_to: None,
                            ..pin
                        },
                    )
                    .await?;
                }
                Ok(key)
            }
            Some(pin) => {
                if pin.changed_to.as_deref() != Some(key.as_str()) {
                    tracing::warn!(%user, "identity key changed");
                    let changed = IdentityPin {
                        changed_to: Some(key),
                        ..pin
                    };
                    self.save_pin(user, &changed).await?;
                }
                Err(ClientError::IdentityChanged(user.clone()))
            }
        }
    }

    /// Judges a contact's listed devices: those its pinned identity key certified, and the rest.
    pub(crate) async fn judge_devices(
        &self,
        listed: &DeviceListResponse,
    ) -> Result<PeerDevices, ClientError> {
        let user = &listed.user_id;
        let identity_key = self.pinned_identity(listed).await?;
        let mut out = PeerDevices {
            trusted: Vec::new(),
            untrusted: Vec::new(),
        };
        for device in listed
            .devices
            .iter()
            .filter(|d| d.status == atlas_proto::api::DeviceStatus::Active)
        {
            let keys = &device.keys;
            let verdict = atlas_crypto::device::verify_device_keys(user, keys)
                .map_err(|_| "its keys are not self-signed".to_owned())
                .and_then(|()| {
                    let certificate = device
                        .certificate
                        .as_deref()
                        .ok_or_else(|| "no certificate".to_owned())?;
                    identity::verify_certificate(&identity_key, user, keys, certificate)
                        .map_err(|_| format!("not certified by {user}'s identity key"))
                });
            match verdict {
                Ok(()) => out.trusted.push(DeviceKeysOf {
                    device_id: keys.device_id.clone(),
                    ed25519: keys.ed25519.clone(),
                    curve25519: keys.curve25519.clone(),
                }),
                Err(reason) => {
                    tracing::warn!(%user, device = %keys.device_id, %reason, "not encrypting to an uncertified device");
                    out.untrusted.push(UntrustedDevice {
                        device_id: keys.device_id.clone(),
                        reason,
                    });
                }
            }
        }
        let bytes =
            serde_json::to_vec(&out.untrusted).map_err(|e| ClientError::State(e.to_string()))?;
        self.local.put(&untrusted_key(user), &bytes).await?;
        Ok(out)
    }

    /// The contact's devices this device last found untrusted (they get no copies).
    pub async fn untrusted_devices(
        &self,
        user: &UserId,
    ) -> Result<Vec<UntrustedDevice>, ClientError> {
        match self.local.get(&untrusted_key(user)).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::State(format!("untrusted devices of {user}: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    /// The safety number with `user` over the identity key the server lists now.
    pub async fn safety_number(&self, user: &UserId) -> Result<SafetyNumber, ClientError> {
        let own = self.identity().await?.ok_or_else(|| {
            ClientError::State("this device does not hold the user's identity key".into())
        })?;
        let listed = self.devices(user).await?;
        let key = listed
            .identity_key
            .ok_or_else(|| ClientError::UntrustedKeys(format!("{user} has no identity key")))?;
        let pin = self.pin(user).await?;
        let own_key = own.public_key();
        Ok(SafetyNumber {
            number: identity::safety_number((self.user_id(), &own_key), (user, &key)),
            verified: pin
                .as_ref()
                .is_some_and(|p| p.verified && p.identity_key == key),
            changed: pin.as_ref().is_some_and(|p| p.identity_key != key),
            identity_key: key,
            user_id: user.clone(),
        })
    }

    /// Marks the identity key the server lists now for `user` as verified (after
    /// comparing safety numbers), accepting it in place of a changed one.
    pub async fn confirm_identity(&self, user: &UserId) -> Result<SafetyNumber, ClientError> {
        let number = self.safety_number(user).await?;
        let pin = IdentityPin {
            identity_key: number.identity_key.clone(),
            verified: true,
            changed_to: None,
        };
        self.save_pin(user, &pin).await?;
        if number.changed {
            // Sessions with the old identity's devices are stale now.
            for device in self.local.peer_devices(user.as_str()).await? {
                self.local.forget_peer(user.as_str(), &device).await?;
            }
        }
        Ok(SafetyNumber {
            verified: true,
            changed: false,
            ..number
        })
    }
}
