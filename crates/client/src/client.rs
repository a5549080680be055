//! The device: registration, sending (sessions created from claimed keys as
//! needed, device list kept exact), and receiving (strictly in sequence order,
//! sessions created from pre-key messages, acknowledged after processing).
use crate::error::ClientError;
use crate::inbound::{check_labels, classify};
use crate::local::LocalState;
use crate::payload::Payload;
use crate::transport::{Transport, http_client, refusal};
use atlas_crypto::identity::{LinkCode, UserIdentity};
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::olm::{Ciphertext, OlmAccount, OlmSession};
use atlas_proto::api::*;
use atlas_proto::clock::{Clock, SystemClock};
use atlas_proto::e2ee::{DecryptFailure, FailureCode};
use atlas_proto::{DeviceId, MessageId, SessionId, UserId};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Keep at least this many one-time keys published.
pub(crate) const MIN_ONE_TIME_KEYS: u64 = 10;
/// How many one-time keys to keep published. vodozemac keeps the private halves
/// of at most 50; the other half of that room holds keys claimed by senders
/// whose first message has not arrived yet.
pub(crate) const ONE_TIME_KEY_BATCH: usize = 25;
/// How long the previous fallback key keeps working after a rotation, so
/// messages encrypted to it before the sender saw the new one still decrypt.
pub const FALLBACK_GRACE: time::Duration = time::Duration::days(7);

#[derive(Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) server: String,
    pub(crate) user_id: UserId,
    pub(crate) device_id: DeviceId,
    pub(crate) dpop_alg: String,
}

/// Why a message did not decrypt.
pub(crate) enum Undecryptable {
    /// It cannot be decrypted as things stand: reported, acknowledged.
    Failed(DecryptFailure),
    /// Something local or the network failed: retry later, do not acknowledge.
    Transient(ClientError),
}

/// A registered device.
pub struct Client {
    pub(crate) transport: Transport,
    pub(crate) local: LocalState,
    /// This device's MLS state, loaded on first use.
    pub(crate) mls: tokio::sync::Mutex<Option<atlas_crypto::mls::MlsDevice>>,
    /// The epoch of each group this process last acknowledged.
    pub(crate) acknowledged: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Serialises everything that advances Olm state.
    pub(crate) account: tokio::sync::Mutex<OlmAccount>,
    /// Group messages a re-key read with the old MLS key, for the next group sync to return.
    pub(crate) read_while_rekeying: std::sync::Mutex<Vec<crate::groups::GroupReceived>>,
    user_id: UserId,
    device_id: DeviceId,
}

fn random_device_id() -> DeviceId {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let bytes: [u8; 10] = atlas_crypto::random_bytes();
    let id: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    DeviceId::new(id).unwrap_or_else(|_| {
        #[expect(
            clippy::unreachable,
            reason = "ten capital letters are a valid device id"
        )]
        {
            unreachable!("letters are valid device id characters")
        }
    })
}

fn path_segment(id: &str) -> &str {
    // Identifiers are validated to [A-Za-z0-9._-], which needs no percent-encoding.
    id
}

impl Client {
    /// Registers a new device in `profile_dir`: a new user with a new identity key,
    /// or with `link_code` (from [`Client::create_link_code`]) a new device of an
    /// existing user, which is pending until that device certifies it.
    pub async fn register(
        profile_dir: &Path,
        server: &str,
        user_id: UserId,
        link_code: Option<String>,
    ) -> Result<Self, ClientError> {
        Self::register_with(profile_dir, server, user_id, link_code, None).await
    }

    /// [`Client::register`] on a server that registers new users with a registration token only.
    pub async fn register_with(
        profile_dir: &Path,
        server: &str,
        user_id: UserId,
        link_code: Option<String>,
        registration_token: Option<String>,
    ) -> Result<Self, ClientError> {
        let local = LocalState::open(profile_dir).await?;
        if local.get("profile").await?.is_some() {
            return Err(ClientError::State(format!(
                "profile in {} is already registered",
                profile_dir.display()
            )));
        }
        let account = OlmAccount::new();
        let device_id = random_device_id();
        let server = server.trim_end_matches('/').to_owned();
        let keys = account.device_keys(&user_id, &device_id);
        let link = link_code
            .map(|c| LinkCode::parse(&c).map_err(|e| ClientError::Input(e.to_string())))
            .transpose()?;
        let identity = link.is_none().then(UserIdentity::generate);
        let request = RegisterRequest {
            user_id: user_id.clone(),
            link_token: link.as_ref().map(|l| l.token.clone()),
            link_proof: link.as_ref().map(|l| l.prove(&user_id, &keys)),
            identity_key: identity.as_ref().map(UserIdentity::public_key),
            certificate: identity.as_ref().map(|i| i.certify(&user_id, &keys)),
            registration_token,
            device: keys,
        };
        let response = http_client()?
            .post(format!("{server}/users"))
            .json(&request)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let dpop = JwsSigner::generate_ed25519();
        let profile = Profile {
            server: server.clone(),
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            dpop_alg: dpop.alg().into(),
        };
        local.put("dpop", &dpop.secret_bytes()).await?;
        local
            .put("account", account.pickle(&local.key).as_bytes())
            .await?;
        local
            .put(
                "profile",
                &serde_json::to_vec(&profile).map_err(|e| ClientError::State(e.to_string()))?,
            )
            .await?;
        let client = Self::assemble(local, profile, account, dpop)?;
        match (identity, link) {
            (Some(identity), _) => {
                client.store_identity(&identity).await?;
                client.keys().top_up(true).await?;
                client.groups().top_up_key_packages().await?;
            }
            (None, Some(link)) => {
                client
                    .local
                    .put(crate::identity::LINK_PENDING, link.encode().as_bytes())
                    .await?;
                // Published now, claimable the moment an existing device certifies this one.
                client.keys().top_up(true).await?;
                client.groups().top_up_key_packages().await?;
                client.finish_link().await?;
            }
            (None, None) => {}
        }
        Ok(client)
    }

    /// Opens a registered profile.
    pub async fn open(profile_dir: &Path) -> Result<Self, ClientError> {
        let local = LocalState::open(profile_dir).await?;
        let profile = local.get("profile").await?.ok_or_else(|| {
            ClientError::State(format!(
                "no registered profile in {}",
                profile_dir.display()
            ))
        })?;
        let profile: Profile = serde_json::from_slice(&profile)
            .map_err(|e| ClientError::State(format!("profile: {e}")))?;
        let pickle = local
            .get_text("account")
            .await?
            .ok_or_else(|| ClientError::State("account missing".into()))?;
        let account = OlmAccount::from_pickle(&pickle, &local.key)?;
        let dpop = local
            .get("dpop")
            .await?
            .ok_or_else(|| ClientError::State("DPoP key missing".into()))?;
        let dpop = JwsSigner::from_secret(&profile.dpop_alg, &dpop)
            .ok_or_else(|| ClientError::State("DPoP key corrupted".into()))?;
        let client = Self::assemble(local, profile, account, dpop)?;
        if client
            .local
            .get(crate::identity::LINK_PENDING)
            .await?
            .is_some()
            && let Err(e) = client.finish_link().await
        {
            tracing::warn!(error = %e, "this linked device is not certified yet");
        }
        Ok(client)
    }

    fn assemble(
        local: LocalState,
        profile: Profile,
        account: OlmAccount,
        dpop: JwsSigner,
    ) -> Result<Self, ClientError> {
        let signer = OlmAccount::from_pickle(&account.pickle(&local.key), &local.key)?;
        let transport = Transport::new(
            profile.server,
            dpop,
            signer,
            profile.user_id.clone(),
            profile.device_id.clone(),
            Arc::new(SystemClock),
        )?;
        Ok(Self {
            transport,
            local,
            account: tokio::sync::Mutex::new(account),
            mls: tokio::sync::Mutex::new(None),
            acknowledged: std::sync::Mutex::default(),
            read_while_rekeying: std::sync::Mutex::default(),
            user_id: profile.user_id,
            device_id: profile.device_id,
        })
    }

    /// A fresh DPoP proof for `method` on `url` and the access token it is
    /// bound to (obtained or renewed as needed), for checking a request by hand.
    pub async fn dpop_proof(
        &self,
        method: &str,
        url: &str,
    ) -> Result<(String, String), ClientError> {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ClientError::Input(format!("{method:?} is not an HTTP method")))?;
        let token = self.transport.access_token().await?;
        let proof = self.transport.proof_for_url(&method, url, Some(&token));
        Ok((proof, token))
    }

    /// Regenerates this device's DPoP key pair and binds a new access token to
    /// it; the old key is erased, so tokens bound to it are of no use to anyone.
    /// Returns the new key's thumbprint (`cnf.jkt`).
    pub async fn rotate_dpop_key(&self) -> Result<String, ClientError> {
        let dpop = JwsSigner::generate_ed25519();
        self.local.put("dpop", &dpop.secret_bytes()).await?;
        let mut profile: Profile = serde_json::from_slice(
            &self
                .local
                .get("profile")
                .await?
                .ok_or_else(|| ClientError::State("profile missing".into()))?,
        )
        .map_err(|e| ClientError::State(format!("profile: {e}")))?;
        profile.dpop_alg = dpop.alg().into();
        self.local
            .put(
                "profile",
                &serde_json::to_vec(&profile).map_err(|e| ClientError::State(e.to_string()))?,
            )
            .await?;
        self.transport.replace_dpop_key(dpop).await;
        self.transport.access_token().await?;
        Ok(self.transport.dpop_thumbprint())
    }

    /// Takes the time from `clock` from now on (tests move time with it).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.transport.clock = clock;
    }

    /// Where this device gets the time.
    pub fn clock(&self) -> &dyn Clock {
        self.transport.clock.as_ref()
    }

    /// This device's user.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// This device's id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.transport.base
    }

    /// Uploads new keys. The account is persisted before the upload, so the
    /// server never hands out a key whose private half this device could lose.
    pub(crate) async fn publish(
        &self,
        account: &mut OlmAccount,
        upload: KeysUploadRequest,
    ) -> Result<KeyCounts, ClientError> {
        self.local
            .put("account", account.pickle(&self.local.key).as_bytes())
            .await?;
        let record: Vec<(&str, &PublicKey)> = upload
            .one_time_keys
            .iter()
            .map(|k| ("one_time", k))
            .chain(upload.fallback_key.iter().map(|k| ("fallback", k)))
            .collect();
        self.local.record_published(&record).await?;
        let counts: KeyCounts = self
            .transport
            .call(Method::POST, "/keys/upload", "", Some(&upload))
            .await?;
        account.mark_published();
        self.local
            .put("account", account.pickle(&self.local.key).as_bytes())
            .await?;
        Ok(counts)
    }

    /// [`Client::rotate_fallback_key`] with the time it happens (the grace period starts then).
    pub(crate) async fn rotate_fallback_key_at(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<KeyCounts, ClientError> {
        let mut account = self.account.lock().await;
        let fallback_key = account.rotate_fallback_key();
        let counts = self
            .publish(
                &mut account,
                KeysUploadRequest {
                    one_time_keys: vec![],
                    fallback_key,
                },
            )
            .await?;
        let now = now.unix_timestamp().to_string();
        self.local
            .put("fallback_rotated_at", now.as_bytes())
            .await?;
        self.local
            .put("fallback_published_at", now.as_bytes())
            .await?;
        Ok(counts)
    }

    /// Drops the previous fallback key once its grace period is over.
    pub(crate) async fn forget_expired_fallback_key(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<(), ClientError> {
        let Some(rotated_at) = self
            .local
            .get_text("fallback_rotated_at")
            .await?
            .and_then(|t| t.parse::<i64>().ok())
        else {
            return Ok(());
        };
        if now.unix_timestamp() < rotated_at + FALLBACK_GRACE.whole_seconds() {
            return Ok(());
        }
        let mut account = self.account.lock().await;
        account.forget_previous_fallback_key();
        self.local
            .put("account", account.pickle(&self.local.key).as_bytes())
            .await?;
        self.local.delete("fallback_rotated_at").await
    }

    /// Creates a single-use token that lets a new device join this user.
    /// A user's devices, as the server lists them.
    pub async fn devices(&self, user_id: &UserId) -> Result<DeviceListResponse, ClientError> {
        self.transport
            .call::<(), _>(
                Method::GET,
                &format!("/users/{}/devices", path_segment(user_id.as_str())),
                "",
                None,
            )
            .await
    }

    /// Refreshes the locally known devices of a user: those its pinned identity
    /// key certified (the only ones that get copies or are believed as senders).
    pub(crate) async fn refresh_peer_devices(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<String>, ClientError> {
        let listed = self.devices(user_id).await?;
        let judged = self.judge_devices(&listed).await?;
        let mut active = Vec::new();
        for device in judged.trusted {
            let did = device.device_id.as_str();
            if let Some((ed, _)) = self.local.peer(user_id.as_str(), did).await?
                && ed != device.ed25519
            {
                // Same device id, new identity: the old sessions belong to keys that are gone.
                self.local.forget_peer(user_id.as_str(), did).await?;
            }
            self.local
                .save_peer(user_id.as_str(), did, &device.ed25519, &device.curve25519)
                .await?;
            active.push(did.to_owned());
        }
        for known in self.local.peer_devices(user_id.as_str()).await? {
            if !active.contains(&known) {
                self.local.forget_peer(user_id.as_str(), &known).await?;
            }
        }
        Ok(active)
    }

    async fn load_session(
        &self,
        user: &str,
        device: &str,
    ) -> Result<Option<OlmSession>, ClientError> {
        match self.local.sessions(user, device).await?.into_iter().next() {
            Some((_, pickle)) => Ok(Some(OlmSession::from_pickle(&pickle, &self.local.key)?)),
            None => Ok(None),
        }
    }

    /// Sessions for every device of `recipient`, claiming keys for those that
    /// have none (or for all of them when `fresh`).
    async fn outbound_sessions(
        &self,
        account: &OlmAccount,
        recipient: &UserId,
        devices: &[String],
        fresh: bool,
    ) -> Result<Vec<(String, OlmSession)>, ClientError> {
        let mut sessions = Vec::new();
        let mut missing = Vec::new();
        for device in devices {
            let existing = match fresh {
                true => None,
                false => self.load_session(recipient.as_str(), device).await?,
            };
            match existing {
                Some(session) => sessions.push((device.clone(), session)),
                None => missing.push(
                    DeviceId::new(device.as_str())
                        .map_err(|e| ClientError::State(e.to_string()))?,
                ),
            }
        }
        if missing.is_empty() {
            return Ok(sessions);
        }
        let claim = KeysClaimRequest {
            user_id: recipient.clone(),
            device_ids: missing,
        };
        let claimed: KeysClaimResponse = self
            .transport
            .call(Method::POST, "/keys/claim", "", Some(&claim))
            .await?;
        for device in claimed.devices {
            let did = device.keys.device_id.to_string();
            let Some((ed, curve)) = self.local.peer(recipient.as_str(), &did).await? else {
                continue;
            };
            if ed != device.keys.ed25519 || curve != device.keys.curve25519 {
                return Err(ClientError::UntrustedKeys(format!("{recipient}/{did}")));
            }
            let key = device
                .one_time_key
                .ok_or_else(|| ClientError::NoPrekeys(format!("{recipient}/{did}")))?;
            sessions.push((did, account.create_outbound_session(&curve, &key.key)?));
        }
        Ok(sessions)
    }

    /// Encrypts `text` for each of `devices` of `recipient`, persisting every
    /// advanced ratchet before the ciphertext leaves, so a crash cannot reuse a message key.
    pub(crate) async fn seal(
        &self,
        account: &OlmAccount,
        recipient: &UserId,
        devices: &[String],
        fresh: bool,
        text: &str,
    ) -> Result<Vec<OutgoingEnvelope>, ClientError> {
        let mut envelopes = Vec::new();
        for (device, mut session) in self
            .outbound_sessions(account, recipient, devices, fresh)
            .await?
        {
            let payload = Payload {
                kind: "text".into(),
                body: text.into(),
                sender: self.user_id.clone(),
                sender_device: self.device_id.clone(),
                recipient: recipient.clone(),
                recipient_device: DeviceId::new(device.as_str())
                    .map_err(|e| ClientError::State(e.to_string()))?,
            };
            let plaintext =
                serde_json::to_vec(&payload).map_err(|e| ClientError::State(e.to_string()))?;
            let ciphertext = session.encrypt(&plaintext)?;
            self.local
                .save_session(
                    recipient.as_str(),
                    &device,
                    &session.session_id(),
                    &session.pickle(&self.local.key),
                    None,
                )
                .await?;
            envelopes.push(OutgoingEnvelope {
                device_id: payload.recipient_device,
                msg_type: ciphertext.msg_type,
                body: ciphertext.body,
                session_id: Some(session_id(session.session_id())?.url_form()),
            });
        }
        Ok(envelopes)
    }

    async fn sender_curve25519(
        &self,
        sender: &UserId,
        device: &DeviceId,
    ) -> Result<String, ClientError> {
        if let Some((_, curve)) = self.local.peer(sender.as_str(), device.as_str()).await? {
            return Ok(curve);
        }
        self.refresh_peer_devices(sender).await?;
        self.local
            .peer(sender.as_str(), device.as_str())
            .await?
            .map(|(_, curve)| curve)
            .ok_or_else(|| ClientError::UntrustedKeys(format!("{sender}/{device}")))
    }

    /// Decrypts one message; on success the session (and account) are persisted.
    /// Returns the text and whether a new inbound session consumed a one-time key.
    pub(crate) async fn decrypt(
        &self,
        account: &mut OlmAccount,
        message: &InboxMessage,
    ) -> Result<(String, bool), Undecryptable> {
        use Undecryptable::{Failed, Transient};
        let ciphertext = Ciphertext {
            msg_type: message.msg_type,
            body: message.body.clone(),
        };
        let (sender, device) = (
            message.sender_id.as_str(),
            message.sender_device_id.as_str(),
        );
        if let Some(id) = &message.session_id
            && self
                .local
                .is_retired(id.std_form().as_str())
                .await
                .map_err(Transient)?
        {
            return Err(Failed(DecryptFailure::new(
                FailureCode::SessionRetired,
                "sent on a session that was reset",
            )));
        }
        let sessions = self
            .local
            .sessions(sender, device)
            .await
            .map_err(Transient)?;
        let mut last_error =
            DecryptFailure::new(FailureCode::KeyNotFound, "no session with the sender");
        let mut decrypted = None;
        // A pre-key message of a session this device already has is an ordinary
        // message of that session (its one-time key is used up): no new session.
        let starts = ciphertext.prekey_info().map(|p| p.session_id);
        let known_session = sessions.iter().any(|(id, _)| Some(id) == starts.as_ref());
        for (_, pickle) in sessions {
            let mut session = OlmSession::from_pickle(&pickle, &self.local.key).map_err(|_| {
                Failed(DecryptFailure::new(
                    FailureCode::KeyCorrupted,
                    "stored session unreadable",
                ))
            })?;
            match session.decrypt(&ciphertext) {
                Ok(plain) => {
                    decrypted = Some((session, plain, false));
                    break;
                }
                Err(e) => last_error = classify(&e),
            }
        }
        if decrypted.is_none() && ciphertext.is_prekey() && !known_session {
            let curve = self
                .sender_curve25519(&message.sender_id, &message.sender_device_id)
                .await
                .map_err(|e| match e {
                    // The sender's keys could not be fetched now: try again later, do not give up on the message.
                    ClientError::Network(_) | ClientError::Storage(_) => Transient(e),
                    ClientError::Api { status, .. } | ClientError::Protocol { status, .. }
                        if status >= 500 =>
                    {
                        Transient(e)
                    }
                    e => Failed(DecryptFailure::new(FailureCode::KeyNotFound, e.to_string())),
                })?;
            match account.create_inbound_session(&curve, &ciphertext) {
                Ok((session, plain)) => decrypted = Some((session, plain, true)),
                Err(e) => last_error = classify(&e),
            }
            // Queued before a re-key: for the old account. Its one-time key is
            // not marked used, since the old account is dropped after the drain.
            if decrypted.is_none()
                && let Some(mut retired) = self.retired_account().await.map_err(Transient)?
                && let Ok((session, plain)) = retired.create_inbound_session(&curve, &ciphertext)
            {
                decrypted = Some((session, plain, false));
            }
        }
        let (session, plain, inbound) = decrypted.ok_or(Failed(last_error))?;
        let payload: Payload = serde_json::from_slice(&plain).map_err(|_| {
            Failed(DecryptFailure::new(
                FailureCode::Malformed,
                "plaintext is not an Atlas payload",
            ))
        })?;
        check_labels(&payload, message, (&self.user_id, &self.device_id)).map_err(Failed)?;
        let account_pickle = inbound.then(|| account.pickle(&self.local.key));
        self.local
            .save_session(
                sender,
                device,
                &session.session_id(),
                &session.pickle(&self.local.key),
                account_pickle.as_deref(),
            )
            .await
            .map_err(Transient)?;
        Ok((payload.body, inbound))
    }

    /// Asks once per message (remembered across syncs) for a resend.
    pub(crate) async fn ask_for_resend(&self, message_id: &MessageId) {
        let key = format!("resend_asked/{message_id}");
        match self.local.get(&key).await {
            Ok(None) => {}
            _ => return,
        }
        match self.repair().request_resend(message_id).await {
            Ok(_) => {
                if let Err(e) = self.local.put(&key, b"1").await {
                    tracing::warn!(error = %e, "could not remember a resend request");
                }
            }
            Err(e) => {
                tracing::warn!(%message_id, error = %e, "resend request refused")
            }
        }
    }
}

/// A session id as vodozemac writes it; anything else is this device's bug.
fn session_id(raw: String) -> Result<SessionId, ClientError> {
    SessionId::new(raw).map_err(|e| ClientError::State(format!("session id: {e}")))
}
