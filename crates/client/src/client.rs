//! The device: registration, sending (sessions created from claimed keys as
//! needed, device list kept exact), and receiving (strictly in sequence order,
//! sessions created from pre-key messages, acknowledged after processing).
use crate::error::ClientError;
use crate::inbound::{Received, check_labels, classify, followup};
use crate::local::LocalState;
use crate::payload::Payload;
use crate::transport::{Transport, http_client, refusal};
use atlas_crypto::identity::{LinkCode, UserIdentity};
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::olm::{Ciphertext, OlmAccount, OlmSession};
use atlas_proto::api::*;
use atlas_proto::clock::{Clock, SystemClock};
use atlas_proto::e2ee::{DecryptFailure, FailureCode};
use atlas_proto::receipt::ReceiptsResponse;
use atlas_proto::repair::{
    ResendRequests, ResendUnavailable, SessionResetResponse, SessionResets, SessionResetsAck,
};
use atlas_proto::{ClientMessageId, DeviceId, ErrorCode, MessageId, SessionId, UserId};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Keep at least this many one-time keys published.
const MIN_ONE_TIME_KEYS: u64 = 10;
/// How many one-time keys to keep published. vodozemac keeps the private halves
/// of at most 50; the other half of that room holds keys claimed by senders
/// whose first message has not arrived yet.
const ONE_TIME_KEY_BATCH: usize = 25;
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
enum Undecryptable {
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
    /// Serialises everything that advances Olm state.
    pub(crate) account: tokio::sync::Mutex<OlmAccount>,
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
                client.top_up_keys(true).await?;
                client.top_up_key_packages().await?;
            }
            (None, Some(link)) => {
                client
                    .local
                    .put(crate::identity::LINK_PENDING, link.encode().as_bytes())
                    .await?;
                // Published now, claimable the moment an existing device certifies this one.
                client.top_up_keys(true).await?;
                client.top_up_key_packages().await?;
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
            user_id: profile.user_id,
            device_id: profile.device_id,
        })
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

    /// Publishes one-time keys when the server's stock runs low (and a fallback key if none).
    pub async fn top_up_keys(&self, force: bool) -> Result<KeyCounts, ClientError> {
        let counts: KeyCounts = self
            .transport
            .call::<(), _>(Method::GET, "/keys/count", "", None)
            .await?;
        self.forget_expired_fallback_key(self.clock().now()).await?;
        if !force && counts.one_time_keys >= MIN_ONE_TIME_KEYS && counts.fallback_key {
            return Ok(counts);
        }
        let mut account = self.account.lock().await;
        let wanted = (ONE_TIME_KEY_BATCH as u64).saturating_sub(counts.one_time_keys) as usize;
        let most = account.max_one_time_keys() / 2;
        let one_time_keys = account.generate_one_time_keys(wanted.min(most));
        let fallback_key = if counts.fallback_key {
            None
        } else {
            account.rotate_fallback_key()
        };
        let new_fallback = fallback_key.is_some();
        let counts = self
            .publish(
                &mut account,
                KeysUploadRequest {
                    one_time_keys,
                    fallback_key,
                },
            )
            .await?;
        if new_fallback {
            let now = self.clock().unix();
            self.local
                .put("fallback_published_at", now.to_string().as_bytes())
                .await?;
        }
        Ok(counts)
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

    /// Publishes a new fallback key. The server marks the previous one `rotated`;
    /// this device keeps its private half for [`FALLBACK_GRACE`].
    pub async fn rotate_fallback_key(&self) -> Result<KeyCounts, ClientError> {
        self.rotate_fallback_key_at(self.clock().now()).await
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
    async fn seal(
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

    /// Encrypts `text` for every device of `recipient` and sends it; returns the server's answer.
    pub async fn send_text(
        &self,
        recipient: &UserId,
        text: &str,
    ) -> Result<SendResponse, ClientError> {
        let account = self.account.lock().await;
        let client_message_id = ClientMessageId::new(atlas_crypto::random_id())
            .map_err(|e| ClientError::State(e.to_string()))?;
        let mut devices = self.local.peer_devices(recipient.as_str()).await?;
        if devices.is_empty() {
            devices = self.refresh_peer_devices(recipient).await?;
        }
        for _attempt in 0..3 {
            let untrusted = self.untrusted_devices(recipient).await?;
            let request = SendRequest {
                recipient_id: recipient.clone(),
                client_message_id: client_message_id.clone(),
                encryption_algorithm: OLM_ALGORITHM.into(),
                envelopes: self
                    .seal(&account, recipient, &devices, false, text)
                    .await?,
                resend_of: None,
                untrusted_devices: untrusted.into_iter().map(|u| u.device_id).collect(),
            };
            match self
                .transport
                .call::<_, SendResponse>(Method::POST, "/messages", "", Some(&request))
                .await
            {
                Ok(sent) => {
                    self.local
                        .remember_sent(&sent.message_id, recipient.as_str(), text)
                        .await?;
                    return Ok(sent);
                }
                Err(e) if e.code() == Some(ErrorCode::DeviceListMismatch) => {
                    devices = self.refresh_peer_devices(recipient).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol {
            status: 409,
            detail: "recipient's device list keeps changing".into(),
        })
    }

    /// Answers the resend requests addressed to this device: re-encrypts each
    /// message from the outbox for the device that asked (on a new session
    /// unless the failure left the session intact), or tells the server the
    /// plaintext is gone. Returns how many messages were resent.
    pub async fn answer_resend_requests(&self) -> Result<usize, ClientError> {
        let asked: ResendRequests = self
            .transport
            .call::<(), _>(Method::GET, "/resend-requests", "", None)
            .await?;
        let mut resent = 0;
        for request in asked.requests {
            let Some((_, text)) = self.local.sent(&request.message_id).await? else {
                let gone = ResendUnavailable {
                    detail: "no longer in the sending device's outbox".into(),
                };
                let path = format!("/resend-requests/{}/unavailable", request.request_id);
                self.transport
                    .call_no_content(Method::POST, &path, Some(&gone))
                    .await?;
                continue;
            };
            let recipient = request.recipient_id.clone();
            let device = request.recipient_device_id.to_string();
            if self
                .local
                .peer(recipient.as_str(), &device)
                .await?
                .is_none()
            {
                self.refresh_peer_devices(&recipient).await?;
            }
            // A lost or skipped message key leaves the session usable; anything else may not.
            let fresh = !matches!(
                request.reason,
                Some(FailureCode::MissingSkippedKey | FailureCode::DuplicateMessage)
            );
            let account = self.account.lock().await;
            let envelopes = self
                .seal(&account, &recipient, &[device], fresh, &text)
                .await?;
            drop(account);
            let resend = SendRequest {
                recipient_id: recipient,
                client_message_id: ClientMessageId::new(format!("resend-{}", request.request_id))
                    .map_err(|e| ClientError::State(e.to_string()))?,
                encryption_algorithm: OLM_ALGORITHM.into(),
                envelopes,
                resend_of: Some(request.message_id.clone()),
                untrusted_devices: Vec::new(),
            };
            let _: SendResponse = self
                .transport
                .call(Method::POST, "/messages", "", Some(&resend))
                .await?;
            tracing::info!(message_id = %request.message_id, fresh_session = fresh, "resent on request");
            resent += 1;
        }
        Ok(resent)
    }

    /// Retires the sessions whose reset this device has not applied yet (the
    /// next message to or from that peer starts a new session); returns how many.
    pub async fn apply_session_resets(&self) -> Result<usize, ClientError> {
        let unseen: SessionResets = self
            .transport
            .call::<(), _>(Method::GET, "/sessions/resets", "", None)
            .await?;
        if unseen.resets.is_empty() {
            return Ok(0);
        }
        let _account = self.account.lock().await;
        let mut session_ids = Vec::new();
        for reset in unseen.resets {
            self.local
                .retire_session(reset.session_id.std_form().as_str())
                .await?;
            tracing::info!(session_id = %reset.session_id, peer = %reset.peer, by = %reset.requested_by, "olm session retired");
            session_ids.push(reset.session_id);
        }
        let count = session_ids.len();
        self.transport
            .call_no_content(
                Method::POST,
                "/sessions/resets/ack",
                Some(&SessionResetsAck { session_ids }),
            )
            .await?;
        Ok(count)
    }

    /// Resets an Olm session of this device (its id in either base64 form).
    pub async fn reset_session(
        &self,
        session_id: &SessionId,
    ) -> Result<SessionResetResponse, ClientError> {
        let id = session_id.url_form();
        let answer = self
            .transport
            .call::<(), _>(Method::POST, &format!("/sessions/{id}/reset"), "", None)
            .await?;
        self.apply_session_resets().await?;
        Ok(answer)
    }

    /// Asks the sender of a message this device could not read to resend it.
    pub async fn request_resend(
        &self,
        message_id: &MessageId,
    ) -> Result<ResendRequests, ClientError> {
        self.transport
            .call::<(), _>(
                Method::POST,
                &format!("/messages/{message_id}/request-resend"),
                "",
                None,
            )
            .await
    }

    /// The latest signed receipts of a message this user sent or received.
    pub async fn receipts(&self, message_id: &MessageId) -> Result<ReceiptsResponse, ClientError> {
        let path = format!("/receipts/{message_id}");
        self.transport
            .call::<(), _>(Method::GET, &path, "", None)
            .await
    }

    /// Has the server sign this user's sent message's receipts again with its current key.
    pub async fn reissue_receipts(
        &self,
        message_id: &MessageId,
    ) -> Result<ReceiptsResponse, ClientError> {
        let path = format!("/receipts/{message_id}/reissue");
        self.transport
            .call::<(), _>(Method::POST, &path, "", None)
            .await
    }

    /// The text of a message this device sent, while it is in the outbox.
    pub async fn sent_text(&self, message_id: &str) -> Result<Option<String>, ClientError> {
        Ok(self.local.sent(message_id).await?.map(|(_, text)| text))
    }

    /// Highest sequence number processed on this device.
    pub async fn last_seq(&self) -> Result<u64, ClientError> {
        Ok(self
            .local
            .get_text("last_seq")
            .await?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
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
    async fn decrypt(
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

    /// Processes messages in sequence order (fetching any gap first), acks them, and returns them.
    pub async fn process(
        &self,
        mut messages: Vec<InboxMessage>,
    ) -> Result<Vec<Received>, ClientError> {
        messages.sort_by_key(|m| m.seq);
        let mut last = self.last_seq().await?;
        if messages.first().is_some_and(|m| m.seq > last + 1) {
            // A gap: the missing messages are still queued at the server, fetch them first.
            return self.sync().await;
        }
        let mut account = self.account.lock().await;
        let mut out = Vec::new();
        let mut created_inbound = false;
        let mut interrupted = None;
        let start = last;
        for message in messages.into_iter().filter(|m| m.seq > start) {
            let result = match self.decrypt(&mut account, &message).await {
                Ok((text, inbound)) => {
                    created_inbound |= inbound;
                    Ok(text)
                }
                Err(Undecryptable::Failed(error)) => {
                    tracing::warn!(message_id = %message.message_id, sender = %message.sender_id, error = %error, "decrypt error");
                    Err(error)
                }
                Err(Undecryptable::Transient(e)) => {
                    // Stop here without acknowledging this message: it is processed again on the next sync.
                    interrupted = Some(e);
                    break;
                }
            };
            last = message.seq;
            out.push(Received {
                seq: message.seq,
                message_id: message.message_id,
                sender_id: message.sender_id,
                sender_device_id: message.sender_device_id,
                created_at: message.created_at,
                text: result.as_ref().ok().cloned(),
                error: result.err(),
                resend_of: message.resend_of,
            });
        }
        drop(account);
        if !out.is_empty() {
            self.local
                .put("last_seq", last.to_string().as_bytes())
                .await?;
            let _: AckResponse = self
                .transport
                .call(
                    Method::POST,
                    "/messages/ack",
                    "",
                    Some(&AckRequest { up_to_seq: last }),
                )
                .await?;
        }
        let plan = followup(&out, self.clock().now());
        self.report(plan.reports).await;
        if plan.check_keys
            && let Err(e) = self.check_keys(true).await
        {
            tracing::warn!(error = %e, "key consistency check failed");
        }
        for message_id in &plan.ask_resend {
            self.ask_for_resend(message_id).await;
        }
        if let Some(e) = interrupted {
            return Err(e);
        }
        if created_inbound {
            self.top_up_keys(false).await?;
        }
        Ok(out)
    }

    /// Asks once per message (remembered across syncs) for a resend.
    async fn ask_for_resend(&self, message_id: &MessageId) {
        let key = format!("resend_asked/{message_id}");
        match self.local.get(&key).await {
            Ok(None) => {}
            _ => return,
        }
        match self.request_resend(message_id).await {
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

    /// The next page of messages waiting for this device, without processing them.
    pub async fn pending(&self) -> Result<Vec<InboxMessage>, ClientError> {
        let after = self.last_seq().await?;
        let page: InboxResponse = self
            .transport
            .call::<(), _>(Method::GET, "/messages", &format!("?after={after}"), None)
            .await?;
        Ok(page.messages)
    }

    /// Applies session resets, then fetches, decrypts and acknowledges
    /// everything waiting for this device, then answers resend requests.
    pub async fn sync(&self) -> Result<Vec<Received>, ClientError> {
        // Devices linked with this device's codes are certified here.
        match self.approve_linked_devices().await {
            Ok(certified) if !certified.is_empty() => {
                tracing::info!(?certified, "certified newly linked devices");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not certify linked devices"),
        }
        self.apply_session_resets().await?;
        self.maintain_keys_if_due().await;
        let mut all = Vec::new();
        loop {
            let after = self.last_seq().await?;
            let page: InboxResponse = self
                .transport
                .call::<(), _>(Method::GET, "/messages", &format!("?after={after}"), None)
                .await?;
            let more = page.more;
            if page.messages.is_empty() {
                break;
            }
            all.extend(Box::pin(self.process(page.messages)).await?);
            if !more {
                break;
            }
        }
        if let Err(e) = self.answer_resend_requests().await {
            tracing::warn!(error = %e, "resend requests not answered yet");
        }
        Ok(all)
    }
}

/// A session id as vodozemac writes it; anything else is this device's bug.
fn session_id(raw: String) -> Result<SessionId, ClientError> {
    SessionId::new(raw).map_err(|e| ClientError::State(format!("session id: {e}")))
}
