//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys: the
//! framing the Go checksum database and transparency-log witnesses use, so a
//! checkpoint Atlas signs opens with `golang.org/x/mod/sumdb/note` or any
//! other implementation of the spec.
use atlas_proto::b64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte of Ed25519 in the spec's key id and verifier key.
const ED25519: u8 = 0x01;
/// Largest note we parse; checkpoints are a few hundred bytes.
pub const MAX_NOTE_LEN: usize = 16 * 1024;
/// What starts every signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a note or verifier key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Larger than [`MAX_NOTE_LEN`].
    #[error("note is larger than {MAX_NOTE_LEN} bytes")]
    TooLarge,
    /// Not text, signature block and final newline as the spec lays them out.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A key name with spaces or `+`, or empty.
    #[error("key name must be non-empty, without spaces or '+'")]
    BadName,
    /// A verifier key string that is not `name+hexid+base64(0x01||key)`.
    #[error("malformed verifier key")]
    BadVerifierKey,
    /// No signature line by this verifier's key verifies.
    #[error("the note is not signed by {0}")]
    NotSigned(String),
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '+') {
        return Err(NoteError::BadName);
    }
    Ok(())
}

/// The spec's key id: the first four bytes of SHA-256(name || LF || type || key).
fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hash = Sha256::new();
    hash.update(name.as_bytes());
    hash.update([b'\n', ED25519]);
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Signs notes under one named Ed25519 key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({})", self.name)
    }
}

impl NoteSigner {
    /// A signer named `name` (for a log, its origin) with the 32-byte seed `seed`.
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, &key.verifying_key());
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The note with its signature block: `text` must end in a newline.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            b64::encode_std(blob)
        ))
    }

    /// A raw Ed25519 signature of `message` with the same key (for entry seals).
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The verifier for this key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            id: self.id,
        }
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text does not end in a newline"));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::Malformed("text holds a blank line"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("text holds control characters"));
    }
    Ok(())
}

/// Checks notes signed by one named Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    id: [u8; 4],
}

impl NoteVerifier {
    /// Parses a verifier key in the spec's text form: `name+hexid+base64(0x01||key)`.
    pub fn from_text(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::BadVerifierKey);
        };
        check_name(name)?;
        let id: [u8; 4] = hex::decode(id_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(NoteError::BadVerifierKey)?;
        let raw = b64::decode_std(key_b64).map_err(|_| NoteError::BadVerifierKey)?;
        let (&kind, key) = raw.split_first().ok_or(NoteError::BadVerifierKey)?;
        let key: [u8; 32] = key.try_into().map_err(|_| NoteError::BadVerifierKey)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| NoteError::BadVerifierKey)?;
        if kind != ED25519 || key_id(name, &key) != id {
            return Err(NoteError::BadVerifierKey);
        }
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// The key in the spec's text form, as operators pin it.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            b64::encode_std(raw)
        )
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a raw signature made with [`NoteSigner::sign_raw`].
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }

    /// The text of `note` if one of its signature lines is this key's and verifies.
    /// Lines by other keys are ignored, as the spec asks.
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge);
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no signature block"))?;
        let (text, block) = (&note[..=split], &note[split + 2..]);
        check_text(text)?;
        if !block.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature block does not end in a newline",
            ));
        }
        for line in block.lines() {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or(NoteError::Malformed("signature line without the em dash"))?;
            let (name, sig) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("signature line without a signature"))?;
            let blob = b64::decode_std(sig)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            if name != self.name || blob.len() != 68 || blob[..4] != self.id {
                continue;
            }
            if self.verify_raw(text.as_bytes(), &blob[4..]) {
                return Ok(text);
            }
        }
        Err(NoteError::NotSigned(self.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note's own example (note_test.go): an independent
    // implementation's key and signature, so our framing and key id match the spec's.
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\
        \n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn the_go_reference_note_verifies() {
        let verifier = NoteVerifier::from_text(GO_VKEY).unwrap();
        assert_eq!(verifier.to_text(), GO_VKEY);
        let text = verifier.open(GO_NOTE).unwrap();
        assert!(text.starts_with("If you think"));
        let tampered = GO_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            verifier.open(&tampered),
            Err(NoteError::NotSigned("PeterNeumann".into()))
        );
    }

    #[test]
    fn own_notes_round_trip_and_other_keys_are_refused() {
        let signer = NoteSigner::new("atlas.example/audit", &[7; 32]).unwrap();
        let note = signer.sign("atlas.example/audit\n3\nAAAA\n").unwrap();
        let verifier = NoteVerifier::from_text(&signer.verifier().to_text()).unwrap();
        assert_eq!(
            verifier.open(&note).unwrap(),
            "atlas.example/audit\n3\nAAAA\n"
        );
        let other = NoteSigner::new("atlas.example/audit", &[8; 32]).unwrap();
        assert!(other.verifier().open(&note).is_err());
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("blank\n\nline\n").is_err());
        assert_eq!(
            NoteSigner::new("has space", &[1; 32]).unwrap_err(),
            NoteError::BadName
        );
        assert!(NoteVerifier::from_text("name+00000000+AQ==").is_err());
        assert!(verifier.open(&"x".repeat(MAX_NOTE_LEN + 1)).is_err());
    }
}
