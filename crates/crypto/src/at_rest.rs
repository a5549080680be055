//! Encryption of local secrets at rest (XChaCha20-Poly1305, random 192-bit nonces).
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};

/// Why an at-rest blob could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Too short, tampered with, or sealed under another key or context.
    #[error("cannot open sealed data: wrong key or corrupted")]
    Corrupted,
}

/// A 256-bit key that seals and opens blobs, each bound to a context label.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

const NONCE_LEN: usize = 24;

impl SecretBox {
    /// A box under `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Encrypts `plaintext`; `context` (e.g. a table and row id) must match on open.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = crate::random_bytes();
        let mut out = nonce.to_vec();
        let sealed = self
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .unwrap_or_else(|_| {
                #[expect(clippy::unreachable, reason = "encryption into a Vec cannot fail")]
                {
                    unreachable!("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers")
                }
            });
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a blob made by [`SecretBox::seal`] with the same key and context.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SealError::Corrupted);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Corrupted)?;
        self.cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .map_err(|_| SealError::Corrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refuse_tampering() {
        let sb = SecretBox::new(&[1; 32]);
        let sealed = sb.seal(b"outbox/1", b"hello");
        assert_eq!(sb.open(b"outbox/1", &sealed).unwrap(), b"hello");
        assert_eq!(sb.open(b"outbox/2", &sealed), Err(SealError::Corrupted));
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert_eq!(sb.open(b"outbox/1", &bad), Err(SealError::Corrupted));
        assert_eq!(
            SecretBox::new(&[2; 32]).open(b"outbox/1", &sealed),
            Err(SealError::Corrupted)
        );
        assert_eq!(sb.open(b"x", b"short"), Err(SealError::Corrupted));
    }
}
