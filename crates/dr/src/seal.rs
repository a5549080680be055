//! The backup identity: an age X25519 key pair. The host that takes backups
//! holds only the public recipient (`age1…`), so it can write the keys
//! archive but never read one; the identity (`AGE-SECRET-KEY-1…`) is kept
//! offline and given to `atlas dr verify` and `atlas dr restore`.
use age::secrecy::ExposeSecret;

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The recipient is not an age X25519 public key.
    #[error("not an age recipient (age1…): {0}")]
    BadRecipient(String),
    /// The identity is not an age X25519 secret key.
    #[error("not an age identity (AGE-SECRET-KEY-1…): {0}")]
    BadIdentity(String),
    /// Encryption failed (our bug, or the system's randomness).
    #[error("encrypting the keys archive: {0}")]
    Encrypt(String),
    /// The archive is not for this identity, or it was altered.
    #[error("the keys archive does not open with this identity (wrong identity, or altered): {0}")]
    Decrypt(String),
}

/// A new backup identity: `(identity, recipient)` as text.
pub fn generate() -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_owned(), recipient)
}

/// The recipient of an identity, to check a pair belongs together.
pub fn recipient_of(identity: &str) -> Result<String, SealError> {
    Ok(parse_identity(identity)?.to_public().to_string())
}

fn parse_identity(text: &str) -> Result<age::x25519::Identity, SealError> {
    // An identity file may hold comments (`# created: …`) around the key.
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    key.parse()
        .map_err(|e: &str| SealError::BadIdentity(e.to_owned()))
}

/// Checks a recipient's form.
pub fn check_recipient(recipient: &str) -> Result<(), SealError> {
    recipient
        .trim()
        .parse::<age::x25519::Recipient>()
        .map(drop)
        .map_err(|e| SealError::BadRecipient(e.to_string()))
}

/// Encrypts `plaintext` to `recipient` (the age format).
pub fn seal(recipient: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let recipient: age::x25519::Recipient = recipient
        .trim()
        .parse()
        .map_err(|e: &str| SealError::BadRecipient(e.to_owned()))?;
    age::encrypt(&recipient, plaintext).map_err(|e| SealError::Encrypt(e.to_string()))
}

/// Decrypts what [`seal`] made, with the identity (file content) it was sealed for.
pub fn open(identity: &str, ciphertext: &[u8]) -> Result<Vec<u8>, SealError> {
    let identity = parse_identity(identity)?;
    age::decrypt(&identity, ciphertext).map_err(|e| SealError::Decrypt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_for_one_identity_opens_with_it_only() {
        let (identity, recipient) = generate();
        assert!(recipient.starts_with("age1"));
        assert!(identity.starts_with("AGE-SECRET-KEY-1"));
        assert_eq!(recipient_of(&identity).unwrap(), recipient);
        let sealed = seal(&recipient, b"the KEK").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"the KEK"));
        let file = format!("# created: now\n# public key: {recipient}\n{identity}\n");
        assert_eq!(open(&file, &sealed).unwrap(), b"the KEK");
        let (other, _) = generate();
        assert!(matches!(open(&other, &sealed), Err(SealError::Decrypt(_))));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            open(&identity, &flipped),
            Err(SealError::Decrypt(_))
        ));
        assert!(matches!(
            seal("age1nope", b"x"),
            Err(SealError::BadRecipient(_))
        ));
        assert!(matches!(
            open("AGE-SECRET-KEY-1NOPE", &sealed),
            Err(SealError::BadIdentity(_))
        ));
        assert!(check_recipient(&recipient).is_ok());
    }

    /// age's own format: a file made by the reference tool's spec layout opens.
    #[test]
    fn the_output_is_the_age_v1_format() {
        let (_, recipient) = generate();
        let sealed = seal(&recipient, b"x").unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    }
}
