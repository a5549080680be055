//! User identity keys (cross-signing). Each user has one Ed25519 identity key,
//! created on the first device and held only by the user's devices (and the
//! key backup). It certifies every device the user adds and signs every
//! removal, so a server that writes a device row of its own (a "ghost device")
//! cannot make senders encrypt to it: senders pin the identity key on first
//! use and encrypt only to devices it certified.
//!
//! Linking a device: the existing device hands the newcomer a code carrying a
//! single-use link token (for the server) and a 32-byte link secret (never sent
//! to the server). The newcomer proves it holds the code with a MAC under the
//! secret over its keys; the existing device checks that MAC, certifies the
//! keys, and returns the identity key to the newcomer sealed under the secret.
use crate::at_rest::SecretBox;
use crate::device::{DeviceSignatureError, verify};
use atlas_proto::UserId;
use atlas_proto::api::{DeviceKeys, RegisterRequest};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// Why an identity operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A certificate, revocation or key does not verify.
    #[error(transparent)]
    Signature(#[from] DeviceSignatureError),
    /// The link code is not one `atlas device link-code` printed.
    #[error("link code is malformed")]
    BadLinkCode,
    /// The newcomer's proof of holding the link code does not verify.
    #[error("the new device does not hold this link code")]
    BadLinkProof,
    /// The sealed identity key does not open under the link secret.
    #[error("the identity key sent with the certificate does not open")]
    BadKeyTransfer,
}

fn certificate_payload(user_id: &UserId, keys: &DeviceKeys) -> String {
    format!(
        "atlas-device-certificate-v1\n{}\n{}\n{}\n{}",
        user_id, keys.device_id, keys.ed25519, keys.curve25519
    )
}

fn revocation_payload(user_id: &UserId, keys: &DeviceKeys) -> String {
    format!(
        "atlas-device-revocation-v1\n{}\n{}\n{}",
        user_id, keys.device_id, keys.ed25519
    )
}

/// A user's identity key (the private half: only on the user's devices).
pub struct UserIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for UserIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserIdentity({})", self.public_key())
    }
}

impl UserIdentity {
    /// A new identity key.
    pub fn generate() -> Self {
        Self::from_seed(&crate::random_bytes())
    }

    /// The identity key with this 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The seed, for the device's sealed store and the key backup.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key, unpadded standard base64 (as device keys are written).
    pub fn public_key(&self) -> String {
        STANDARD_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    fn sign(&self, message: &str) -> String {
        STANDARD_NO_PAD.encode(self.key.sign(message.as_bytes()).to_bytes())
    }

    /// The registration of a new user `user_id` with this identity key and its
    /// first device `keys`, certified by it.
    pub fn first_device_registration(&self, user_id: &UserId, keys: DeviceKeys) -> RegisterRequest {
        RegisterRequest {
            user_id: user_id.clone(),
            identity_key: Some(self.public_key()),
            certificate: Some(self.certify(user_id, &keys)),
            device: keys,
            link_token: None,
            link_proof: None,
            registration_token: None,
        }
    }

    /// Certifies `keys` as a device of `user_id`.
    pub fn certify(&self, user_id: &UserId, keys: &DeviceKeys) -> String {
        self.sign(&certificate_payload(user_id, keys))
    }

    /// Signs the removal of the device with `keys`.
    pub fn revoke(&self, user_id: &UserId, keys: &DeviceKeys) -> String {
        self.sign(&revocation_payload(user_id, keys))
    }
}

/// Checks that `identity_key` certified `keys` as a device of `user_id`.
pub fn verify_certificate(
    identity_key: &str,
    user_id: &UserId,
    keys: &DeviceKeys,
    certificate: &str,
) -> Result<(), IdentityError> {
    Ok(verify(
        identity_key,
        certificate_payload(user_id, keys).as_bytes(),
        certificate,
    )?)
}

/// Checks that `identity_key` signed the removal of the device with `keys`.
pub fn verify_revocation(
    identity_key: &str,
    user_id: &UserId,
    keys: &DeviceKeys,
    signature: &str,
) -> Result<(), IdentityError> {
    Ok(verify(
        identity_key,
        revocation_payload(user_id, keys).as_bytes(),
        signature,
    )?)
}

/// Checks that `identity_key` is an Ed25519 public key in base64.
pub fn check_identity_key(identity_key: &str) -> Result<(), IdentityError> {
    vodozemac::Ed25519PublicKey::from_base64(identity_key)
        .map(|_| ())
        .map_err(|_| IdentityError::Signature(DeviceSignatureError::BadKey))
}

/// How every link code starts.
const LINK_CODE_PREFIX: &str = "atlas-link.";

/// The code a user carries from an existing device to a new one.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode {
    /// The single-use token the server checks.
    pub token: String,
    /// The secret only the two devices know.
    pub secret: [u8; 32],
}

impl Drop for LinkCode {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCode(..)")
    }
}

impl LinkCode {
    /// A code for `token` with a fresh secret.
    pub fn new(token: String) -> Self {
        Self {
            token,
            secret: crate::random_bytes(),
        }
    }

    /// `atlas-link.TOKEN.SECRET`, both base64url (the prefix keeps a code that
    /// starts with `-` from reading as a command-line flag).
    pub fn encode(&self) -> String {
        format!(
            "{LINK_CODE_PREFIX}{}.{}",
            self.token,
            atlas_proto::b64::encode(self.secret)
        )
    }

    /// Parses [`LinkCode::encode`]'s form.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let (token, secret) = text
            .trim()
            .strip_prefix(LINK_CODE_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or(IdentityError::BadLinkCode)?;
        let secret = atlas_proto::b64::decode(secret)
            .ok()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or(IdentityError::BadLinkCode)?;
        if token.is_empty() || token.len() > 128 {
            return Err(IdentityError::BadLinkCode);
        }
        Ok(Self {
            token: token.to_owned(),
            secret,
        })
    }

    /// SHA-256 of the token, base64url: how the server and the devices name the link.
    pub fn token_hash(&self) -> String {
        atlas_proto::b64::encode(Sha256::digest(self.token.as_bytes()))
    }

    /// The newcomer's proof that it holds this code, bound to its keys.
    pub fn prove(&self, user_id: &UserId, keys: &DeviceKeys) -> String {
        let mac = crate::hmac_sha256(&self.secret, certificate_payload(user_id, keys).as_bytes());
        atlas_proto::b64::encode(hmac::Mac::finalize(mac).into_bytes())
    }

    /// Checks a newcomer's proof (in constant time).
    pub fn check_proof(
        &self,
        user_id: &UserId,
        keys: &DeviceKeys,
        proof: &str,
    ) -> Result<(), IdentityError> {
        let proof = atlas_proto::b64::decode(proof).map_err(|_| IdentityError::BadLinkProof)?;
        let mac = crate::hmac_sha256(&self.secret, certificate_payload(user_id, keys).as_bytes());
        hmac::Mac::verify_slice(mac, &proof).map_err(|_| IdentityError::BadLinkProof)
    }

    fn context(user_id: &UserId, keys: &DeviceKeys) -> Vec<u8> {
        format!(
            "atlas-identity-transfer-v1\n{}",
            certificate_payload(user_id, keys)
        )
        .into_bytes()
    }

    /// The identity key sealed for the newcomer with `keys`.
    pub fn seal_identity(
        &self,
        identity: &UserIdentity,
        user_id: &UserId,
        keys: &DeviceKeys,
    ) -> String {
        let sealed =
            SecretBox::new(&self.secret).seal(&Self::context(user_id, keys), &identity.seed());
        atlas_proto::b64::encode(sealed)
    }

    /// Opens what [`LinkCode::seal_identity`] sealed.
    pub fn open_identity(
        &self,
        user_id: &UserId,
        keys: &DeviceKeys,
        sealed: &str,
    ) -> Result<UserIdentity, IdentityError> {
        let sealed = atlas_proto::b64::decode(sealed).map_err(|_| IdentityError::BadKeyTransfer)?;
        let seed = SecretBox::new(&self.secret)
            .open(&Self::context(user_id, keys), &sealed)
            .map_err(|_| IdentityError::BadKeyTransfer)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| IdentityError::BadKeyTransfer)?;
        Ok(UserIdentity::from_seed(&seed))
    }
}

/// The safety number two users compare out of band: 60 digits in groups of
/// five, the same on both sides, changing when either identity key changes.
pub fn safety_number(a: (&UserId, &str), b: (&UserId, &str)) -> String {
    let (first, second) = if a.0.as_str() <= b.0.as_str() {
        (a, b)
    } else {
        (b, a)
    };
    let mut digest = Sha256::new();
    digest.update(b"atlas-safety-number-v1");
    for (user, key) in [first, second] {
        digest.update((user.as_str().len() as u64).to_be_bytes());
        digest.update(user.as_str().as_bytes());
        digest.update((key.len() as u64).to_be_bytes());
        digest.update(key.as_bytes());
    }
    let hash = digest.finalize();
    let mut wide = Sha256::new();
    wide.update(hash);
    wide.update(b"more");
    let bytes: Vec<u8> = hash.iter().chain(wide.finalize().iter()).copied().collect();
    bytes
        .chunks(5)
        .take(12)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::olm::OlmAccount;
    use atlas_proto::DeviceId;

    fn keys(user: &UserId, device: &str) -> DeviceKeys {
        OlmAccount::new().device_keys(user, &DeviceId::new(device).unwrap())
    }

    #[test]
    fn certificates_bind_user_device_and_keys() {
        let bob = UserId::new("bob").unwrap();
        let identity = UserIdentity::generate();
        let phone = keys(&bob, "PHONE");
        let cert = identity.certify(&bob, &phone);
        verify_certificate(&identity.public_key(), &bob, &phone, &cert).unwrap();
        // Another device, user or identity: refused.
        let ghost = keys(&bob, "GHOST");
        assert!(verify_certificate(&identity.public_key(), &bob, &ghost, &cert).is_err());
        let mallory = UserId::new("mallory").unwrap();
        assert!(verify_certificate(&identity.public_key(), &mallory, &phone, &cert).is_err());
        let other = UserIdentity::generate();
        assert!(verify_certificate(&other.public_key(), &bob, &phone, &cert).is_err());
        // A certificate is no revocation, and the other way round.
        assert!(verify_revocation(&identity.public_key(), &bob, &phone, &cert).is_err());
        let revoked = identity.revoke(&bob, &phone);
        verify_revocation(&identity.public_key(), &bob, &phone, &revoked).unwrap();
        assert!(verify_certificate(&identity.public_key(), &bob, &phone, &revoked).is_err());
        assert!(verify_certificate("garbage", &bob, &phone, &cert).is_err());
        assert!(verify_certificate(&identity.public_key(), &bob, &phone, "garbage").is_err());
        let seed = identity.seed();
        assert_eq!(
            UserIdentity::from_seed(&seed).public_key(),
            identity.public_key()
        );
    }

    #[test]
    fn link_codes_prove_possession_and_carry_the_identity() {
        let alice = UserId::new("alice").unwrap();
        let code = LinkCode::new("tok".into());
        let parsed = LinkCode::parse(&code.encode()).unwrap();
        assert_eq!(parsed, code);
        assert!(code.encode().starts_with("atlas-link."));
        assert!(LinkCode::parse("no-dot").is_err());
        assert!(LinkCode::parse("atlas-link.no-dot").is_err());
        assert!(LinkCode::parse("tok.short").is_err());

        let laptop = keys(&alice, "LAPTOP");
        let proof = code.prove(&alice, &laptop);
        code.check_proof(&alice, &laptop, &proof).unwrap();
        // The server swapping in its own keys cannot reuse the proof.
        let ghost = keys(&alice, "LAPTOP");
        assert_eq!(
            code.check_proof(&alice, &ghost, &proof),
            Err(IdentityError::BadLinkProof)
        );
        let other = LinkCode::new("tok".into());
        assert!(other.check_proof(&alice, &laptop, &proof).is_err());

        let identity = UserIdentity::generate();
        let sealed = code.seal_identity(&identity, &alice, &laptop);
        let opened = code.open_identity(&alice, &laptop, &sealed).unwrap();
        assert_eq!(opened.public_key(), identity.public_key());
        assert!(other.open_identity(&alice, &laptop, &sealed).is_err());
        assert!(code.open_identity(&alice, &ghost, &sealed).is_err());
    }

    #[test]
    fn safety_numbers_are_symmetric_and_change_with_either_key() {
        let (a, b) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let (ka, kb) = (
            UserIdentity::generate().public_key(),
            UserIdentity::generate().public_key(),
        );
        let n = safety_number((&a, &ka), (&b, &kb));
        assert_eq!(n, safety_number((&b, &kb), (&a, &ka)));
        assert_eq!(n.len(), 12 * 5 + 11);
        assert!(n.chars().all(|c| c.is_ascii_digit() || c == ' '));
        let kc = UserIdentity::generate().public_key();
        assert_ne!(n, safety_number((&a, &ka), (&b, &kc)));
    }
}
