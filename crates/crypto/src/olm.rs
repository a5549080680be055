//! Olm (Double Ratchet) accounts and sessions over vodozemac, with the types
//! the rest of Atlas speaks: base64 strings, message types, signed key bundles.
use atlas_proto::api::{DeviceKeys, PublicKey, TokenRequest, token_signing_payload};
use atlas_proto::{DeviceId, UserId};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};

/// Why an Olm operation failed. The variants name causes a user could be told about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OlmError {
    /// A peer's key is not valid Curve25519 base64.
    #[error("peer key is malformed")]
    BadKey,
    /// The ciphertext or its type could not be decoded.
    #[error("ciphertext is malformed")]
    BadMessage,
    /// A pre-key message names a one-time key this account does not have (used, or never ours).
    #[error("one-time key not found")]
    KeyNotFound,
    /// The message key was already used or discarded: a duplicate or a lost skipped key.
    #[error("message key missing (index {0})")]
    MissingMessageKey(u64),
    /// The message does not authenticate under this session: the ratchets disagree.
    #[error("session state does not match the sender's")]
    RatchetDesync,
    /// Too many messages skipped.
    #[error("message gap too large")]
    GapTooLarge,
    /// A pickle could not be opened: wrong key or corrupted.
    #[error("stored state is corrupted or under another key")]
    CorruptedState,
    /// Session creation failed for another reason.
    #[error("session could not be created: {0}")]
    Session(String),
}

fn decryption_error(e: vodozemac::olm::DecryptionError) -> OlmError {
    use vodozemac::olm::DecryptionError as D;
    match e {
        D::MissingMessageKey(i) => OlmError::MissingMessageKey(i),
        D::TooBigMessageGap(..) => OlmError::GapTooLarge,
        _ => OlmError::RatchetDesync,
    }
}

/// A ciphertext as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    /// 0 pre-key, 1 normal.
    pub msg_type: u8,
    /// Unpadded standard base64.
    pub body: String,
}

impl Ciphertext {
    fn from_olm(message: OlmMessage) -> Self {
        let (msg_type, bytes) = message.to_parts();
        Self {
            msg_type: msg_type as u8,
            body: vodozemac::base64_encode(bytes),
        }
    }

    fn to_olm(&self) -> Result<OlmMessage, OlmError> {
        let bytes = vodozemac::base64_decode(&self.body).map_err(|_| OlmError::BadMessage)?;
        OlmMessage::from_parts(self.msg_type.into(), &bytes).map_err(|_| OlmError::BadMessage)
    }

    /// Whether this is a pre-key message (it can start a session).
    pub fn is_prekey(&self) -> bool {
        self.msg_type == 0
    }

    /// For a well-formed pre-key message: the session it starts and the
    /// one-time (or fallback) key it was encrypted to. Both are public values.
    pub fn prekey_info(&self) -> Option<PrekeyInfo> {
        match self.to_olm().ok()? {
            OlmMessage::PreKey(m) => Some(PrekeyInfo {
                session_id: m.session_id(),
                one_time_key: m.one_time_key().to_base64(),
            }),
            OlmMessage::Normal(_) => None,
        }
    }
}

/// What a pre-key message reveals to anyone: which session and which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrekeyInfo {
    /// The session the message starts.
    pub session_id: String,
    /// The recipient's one-time or fallback key it used, base64.
    pub one_time_key: String,
}

/// A device's long-term Olm account.
pub struct OlmAccount {
    account: Account,
}

impl Default for OlmAccount {
    fn default() -> Self {
        Self::new()
    }
}

impl OlmAccount {
    /// A fresh account with new identity keys.
    pub fn new() -> Self {
        Self {
            account: Account::new(),
        }
    }

    /// Ed25519 identity key, base64.
    pub fn ed25519(&self) -> String {
        self.account.identity_keys().ed25519.to_base64()
    }

    /// Curve25519 identity key, base64.
    pub fn curve25519(&self) -> String {
        self.account.identity_keys().curve25519.to_base64()
    }

    /// Signs `message` with the Ed25519 identity key; base64 signature.
    pub fn sign(&self, message: &str) -> String {
        self.account.sign(message).to_base64()
    }

    /// The `POST /token` grant of this device: its signature over who it is,
    /// the DPoP key the token will be bound to (`jkt`) and the time.
    pub fn token_grant(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        jkt: &str,
        iat: i64,
    ) -> TokenRequest {
        TokenRequest::DeviceSignature {
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            iat,
            signature: self.sign(&token_signing_payload(user_id, device_id, jkt, iat)),
        }
    }

    /// The device's self-signed key bundle.
    pub fn device_keys(&self, user_id: &UserId, device_id: &DeviceId) -> DeviceKeys {
        let mut keys = DeviceKeys {
            device_id: device_id.clone(),
            ed25519: self.ed25519(),
            curve25519: self.curve25519(),
            signature: String::new(),
        };
        keys.signature = self.sign(&keys.signing_payload(user_id));
        keys
    }

    /// Creates `count` one-time keys and returns the unpublished ones (call
    /// [`OlmAccount::mark_published`] after the server stored them).
    pub fn generate_one_time_keys(&mut self, count: usize) -> Vec<PublicKey> {
        self.account.generate_one_time_keys(count);
        self.account
            .one_time_keys()
            .into_iter()
            .map(|(id, key)| PublicKey {
                key_id: id.to_base64(),
                key: key.to_base64(),
            })
            .collect()
    }

    /// Most one-time keys the account keeps private halves for at once.
    pub fn max_one_time_keys(&self) -> usize {
        self.account.max_number_of_one_time_keys()
    }

    /// Creates a new fallback key (the previous one stays usable until forgotten).
    pub fn rotate_fallback_key(&mut self) -> Option<PublicKey> {
        self.account.generate_fallback_key();
        self.unpublished_fallback_key()
    }

    /// The fallback key not yet published, if any.
    pub fn unpublished_fallback_key(&self) -> Option<PublicKey> {
        self.account
            .fallback_key()
            .into_iter()
            .next()
            .map(|(id, key)| PublicKey {
                key_id: id.to_base64(),
                key: key.to_base64(),
            })
    }

    /// Forgets the previous fallback key once its grace period is over.
    pub fn forget_previous_fallback_key(&mut self) -> bool {
        self.account.forget_fallback_key()
    }

    /// Records that the server stored the current keys.
    pub fn mark_published(&mut self) {
        self.account.mark_keys_as_published();
    }

    /// Starts a session to a peer device from its identity key and a claimed one-time key.
    pub fn create_outbound_session(
        &self,
        their_curve25519: &str,
        one_time_key: &str,
    ) -> Result<OlmSession, OlmError> {
        let identity =
            Curve25519PublicKey::from_base64(their_curve25519).map_err(|_| OlmError::BadKey)?;
        let otk = Curve25519PublicKey::from_base64(one_time_key).map_err(|_| OlmError::BadKey)?;
        self.account
            .create_outbound_session(SessionConfig::version_1(), identity, otk)
            .map(|session| OlmSession { session })
            .map_err(|e| OlmError::Session(e.to_string()))
    }

    /// Creates a session from a received pre-key message and returns its plaintext.
    /// The used one-time key is removed: persist the account afterwards.
    pub fn create_inbound_session(
        &mut self,
        their_curve25519: &str,
        message: &Ciphertext,
    ) -> Result<(OlmSession, Vec<u8>), OlmError> {
        let identity =
            Curve25519PublicKey::from_base64(their_curve25519).map_err(|_| OlmError::BadKey)?;
        let OlmMessage::PreKey(prekey) = message.to_olm()? else {
            return Err(OlmError::BadMessage);
        };
        use vodozemac::olm::SessionCreationError as E;
        match self
            .account
            .create_inbound_session(SessionConfig::version_1(), identity, &prekey)
        {
            Ok(result) => Ok((
                OlmSession {
                    session: result.session,
                },
                result.plaintext,
            )),
            Err(E::MissingOneTimeKey(_)) => Err(OlmError::KeyNotFound),
            Err(E::Decryption(e)) => Err(decryption_error(e)),
            Err(e) => Err(OlmError::Session(e.to_string())),
        }
    }

    /// Encrypted snapshot of the account.
    pub fn pickle(&self, key: &[u8; 32]) -> String {
        self.account.pickle().encrypt(key)
    }

    /// Restores an account from [`OlmAccount::pickle`].
    pub fn from_pickle(pickle: &str, key: &[u8; 32]) -> Result<Self, OlmError> {
        let pickle =
            AccountPickle::from_encrypted(pickle, key).map_err(|_| OlmError::CorruptedState)?;
        Ok(Self {
            account: Account::from_pickle(pickle),
        })
    }
}

/// One Double Ratchet session with one peer device.
pub struct OlmSession {
    session: Session,
}

impl OlmSession {
    /// Stable id of the session (same on both sides).
    pub fn session_id(&self) -> String {
        self.session.session_id()
    }

    /// Encrypts one message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Ciphertext, OlmError> {
        self.session
            .encrypt(plaintext)
            .map(Ciphertext::from_olm)
            .map_err(|e| OlmError::Session(e.to_string()))
    }

    /// Decrypts one message of this session.
    pub fn decrypt(&mut self, message: &Ciphertext) -> Result<Vec<u8>, OlmError> {
        self.session
            .decrypt(&message.to_olm()?)
            .map_err(decryption_error)
    }

    /// Encrypted snapshot of the session.
    pub fn pickle(&self, key: &[u8; 32]) -> String {
        self.session.pickle().encrypt(key)
    }

    /// Restores a session from [`OlmSession::pickle`].
    pub fn from_pickle(pickle: &str, key: &[u8; 32]) -> Result<Self, OlmError> {
        let pickle =
            SessionPickle::from_encrypted(pickle, key).map_err(|_| OlmError::CorruptedState)?;
        Ok(Self {
            session: Session::from_pickle(pickle),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_contact_reply_and_out_of_order() {
        let alice = OlmAccount::new();
        let mut bob = OlmAccount::new();
        let otk = bob.generate_one_time_keys(1).pop().unwrap();
        bob.mark_published();

        let mut a = alice
            .create_outbound_session(&bob.curve25519(), &otk.key)
            .unwrap();
        let m1 = a.encrypt(b"hi bob").unwrap();
        assert!(m1.is_prekey());
        let (mut b, plain) = bob
            .create_inbound_session(&alice.curve25519(), &m1)
            .unwrap();
        assert_eq!(plain, b"hi bob");
        assert_eq!(a.session_id(), b.session_id());
        let info = m1.prekey_info().unwrap();
        assert_eq!(
            (info.session_id, info.one_time_key),
            (a.session_id(), otk.key.clone())
        );
        // The one-time key is gone: a second pre-key message with it fails.
        assert_eq!(
            bob.create_inbound_session(&alice.curve25519(), &m1).err(),
            Some(OlmError::KeyNotFound)
        );

        let r1 = b.encrypt(b"hi alice").unwrap();
        assert_eq!(a.decrypt(&r1).unwrap(), b"hi alice");
        let x = a.encrypt(b"one").unwrap();
        let y = a.encrypt(b"two").unwrap();
        assert_eq!(b.decrypt(&y).unwrap(), b"two");
        assert_eq!(b.decrypt(&x).unwrap(), b"one");
        assert!(matches!(b.decrypt(&x), Err(OlmError::MissingMessageKey(_))));
    }

    #[test]
    fn pickles_round_trip_and_refuse_wrong_key() {
        let mut account = OlmAccount::new();
        account.generate_one_time_keys(3);
        let pickle = account.pickle(&[9; 32]);
        let back = OlmAccount::from_pickle(&pickle, &[9; 32]).unwrap();
        assert_eq!(back.curve25519(), account.curve25519());
        assert_eq!(
            OlmAccount::from_pickle(&pickle, &[8; 32]).err(),
            Some(OlmError::CorruptedState)
        );
    }

    #[test]
    fn device_keys_verify_and_garbage_is_refused() {
        let account = OlmAccount::new();
        let user = UserId::new("alice").unwrap();
        let keys = account.device_keys(&user, &DeviceId::new("PHONE").unwrap());
        crate::device::verify_device_keys(&user, &keys).unwrap();
        let other = UserId::new("mallory").unwrap();
        assert!(crate::device::verify_device_keys(&other, &keys).is_err());
        let bad = Ciphertext {
            msg_type: 1,
            body: "%%%".into(),
        };
        let mut s = account
            .create_outbound_session(
                &OlmAccount::new().curve25519(),
                &OlmAccount::new().curve25519(),
            )
            .unwrap();
        assert_eq!(s.decrypt(&bad), Err(OlmError::BadMessage));
        assert_eq!(
            account.create_outbound_session("nope", "nope").err(),
            Some(OlmError::BadKey)
        );
    }
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    #[test]
    fn fallback_key_is_published_once_and_rotates() {
        let mut account = OlmAccount::new();
        let first = account.rotate_fallback_key().expect("a new fallback key");
        assert_eq!(account.unpublished_fallback_key(), Some(first.clone()));
        account.mark_published();
        assert_eq!(account.unpublished_fallback_key(), None);
        let second = account
            .rotate_fallback_key()
            .expect("a rotated fallback key");
        assert_ne!(first, second);
    }

    #[test]
    fn previous_fallback_key_works_until_forgotten() {
        let mut bob = OlmAccount::new();
        let old = bob.rotate_fallback_key().unwrap();
        bob.mark_published();
        let alice = OlmAccount::new();
        // Alice encrypts to the old fallback key; bob rotates before the message arrives.
        let mut a = alice
            .create_outbound_session(&bob.curve25519(), &old.key)
            .unwrap();
        let first = a.encrypt(b"sent before the rotation").unwrap();
        bob.rotate_fallback_key().unwrap();
        bob.mark_published();
        let (_, plain) = bob
            .create_inbound_session(&alice.curve25519(), &first)
            .unwrap();
        assert_eq!(plain, b"sent before the rotation");
        // After the grace period the old key is forgotten: a new session on it fails.
        let mut late = alice
            .create_outbound_session(&bob.curve25519(), &old.key)
            .unwrap();
        let second = late.encrypt(b"too late").unwrap();
        assert!(bob.forget_previous_fallback_key());
        assert_eq!(
            bob.create_inbound_session(&alice.curve25519(), &second)
                .err(),
            Some(OlmError::KeyNotFound)
        );
    }
}
