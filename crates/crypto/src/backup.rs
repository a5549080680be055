//! Key backups, encrypted on the device: Argon2id turns the recovery
//! passphrase into 64 bytes, the first half seals the key state with
//! XChaCha20-Poly1305 (bound to the backup's id), the second half is a
//! download key whose SHA-256 the server keeps, so it can hand the blob only
//! to someone who knows the passphrase without ever being able to open it.
use crate::at_rest::SecretBox;
use argon2::{Algorithm, Argon2, Params, Version};
use atlas_proto::b64;
use atlas_proto::backup::BackupKdf;
use sha2::{Digest, Sha256};

/// Shortest passphrase accepted for a new backup, in bytes.
pub const MIN_PASSPHRASE_BYTES: usize = 10;
/// Largest Argon2 memory a backup may ask for (1 GiB): a tampered blob must
/// not make a restoring device allocate without bound.
const MAX_M_KIB: u32 = 1024 * 1024;
const MAX_T: u32 = 10;
const MAX_P: u32 = 4;

/// Why a backup could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// The passphrase is too short for a new backup.
    #[error("the passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes")]
    WeakPassphrase,
    /// Authentication failed: the passphrase is wrong or the backup was altered.
    #[error("wrong passphrase, or the backup is corrupted")]
    WrongPassphraseOrCorrupted,
    /// The blob or its parameters are not a backup this version reads.
    #[error("not a readable backup: {0}")]
    Malformed(&'static str),
}

/// RustCrypto's (and OWASP's) Argon2id defaults with a fresh salt: 19 MiB, 2 passes, 1 lane.
pub fn new_kdf() -> BackupKdf {
    BackupKdf {
        alg: "argon2id".into(),
        m_kib: Params::DEFAULT_M_COST,
        t: Params::DEFAULT_T_COST,
        p: Params::DEFAULT_P_COST,
        salt: b64::encode(crate::random_bytes::<16>()),
    }
}

/// The two keys a passphrase gives under a backup's parameters.
pub fn derive_keys(kdf: &BackupKdf, passphrase: &[u8]) -> Result<BackupKeys, BackupError> {
    if kdf.alg != "argon2id" {
        return Err(BackupError::Malformed("unknown key derivation"));
    }
    if kdf.m_kib > MAX_M_KIB || kdf.t > MAX_T || kdf.p > MAX_P {
        return Err(BackupError::Malformed("key derivation cost out of range"));
    }
    let salt = b64::decode(&kdf.salt).map_err(|_| BackupError::Malformed("salt"))?;
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(64))
        .map_err(|_| BackupError::Malformed("key derivation parameters"))?;
    let mut out = [0u8; 64];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, &salt, &mut out)
        .map_err(|_| BackupError::Malformed("salt too short"))?;
    let (seal, download) = out.split_at(32);
    Ok(BackupKeys {
        seal: seal.try_into().map_err(|_| BackupError::Malformed("key"))?,
        download: download
            .try_into()
            .map_err(|_| BackupError::Malformed("key"))?,
    })
}

/// What a passphrase yields for one backup.
pub struct BackupKeys {
    seal: [u8; 32],
    download: [u8; 32],
}

impl Drop for BackupKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seal);
        zeroize::Zeroize::zeroize(&mut self.download);
    }
}

impl BackupKeys {
    /// The key that proves to the server the holder may download the blob, base64url.
    pub fn download_key(&self) -> String {
        b64::encode(self.download)
    }

    /// What the server stores to check [`BackupKeys::download_key`]: hex SHA-256.
    pub fn download_verifier(&self) -> String {
        download_verifier(&self.download_key())
    }

    /// Encrypts `plaintext`, bound to `backup_id`; base64url of nonce and ciphertext.
    pub fn seal(&self, backup_id: &str, plaintext: &[u8]) -> String {
        b64::encode(SecretBox::new(&self.seal).seal(&context(backup_id), plaintext))
    }

    /// Opens what [`BackupKeys::seal`] made for the same backup id.
    pub fn open(&self, backup_id: &str, sealed: &str) -> Result<Vec<u8>, BackupError> {
        let bytes = b64::decode(sealed).map_err(|_| BackupError::Malformed("ciphertext"))?;
        SecretBox::new(&self.seal)
            .open(&context(backup_id), &bytes)
            .map_err(|_| BackupError::WrongPassphraseOrCorrupted)
    }
}

/// The verifier of a download key as presented (hex SHA-256 of its text).
pub fn download_verifier(download_key: &str) -> String {
    hex::encode(Sha256::digest(download_key.as_bytes()))
}

fn context(backup_id: &str) -> Vec<u8> {
    format!("atlas-key-backup/v1/{backup_id}").into_bytes()
}

/// Refuses passphrases too short to protect a backup.
pub fn check_new_passphrase(passphrase: &[u8]) -> Result<(), BackupError> {
    if passphrase.len() < MIN_PASSPHRASE_BYTES {
        return Err(BackupError::WeakPassphrase);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> BackupKdf {
        BackupKdf {
            m_kib: 64,
            t: 1,
            ..new_kdf()
        }
    }

    #[test]
    fn seals_and_opens_only_with_the_passphrase_and_id() {
        let params = cheap();
        let keys = derive_keys(&params, b"correct horse battery").unwrap();
        let sealed = keys.seal("backup-alice-1", b"key state");
        let again = derive_keys(&params, b"correct horse battery").unwrap();
        assert_eq!(again.open("backup-alice-1", &sealed).unwrap(), b"key state");
        assert_eq!(again.download_verifier(), keys.download_verifier());
        let wrong = derive_keys(&params, b"correct horse staple").unwrap();
        assert_eq!(
            wrong.open("backup-alice-1", &sealed),
            Err(BackupError::WrongPassphraseOrCorrupted)
        );
        assert_ne!(wrong.download_verifier(), keys.download_verifier());
        // Renamed by the server: it no longer opens.
        assert_eq!(
            again.open("backup-alice-2", &sealed),
            Err(BackupError::WrongPassphraseOrCorrupted)
        );
        let mut flipped = b64::decode(&sealed).unwrap();
        flipped[30] ^= 1;
        assert_eq!(
            again.open("backup-alice-1", &b64::encode(flipped)),
            Err(BackupError::WrongPassphraseOrCorrupted)
        );
        assert!(matches!(
            again.open("backup-alice-1", "%%"),
            Err(BackupError::Malformed(_))
        ));
    }

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        let huge = BackupKdf {
            m_kib: u32::MAX,
            ..cheap()
        };
        assert!(matches!(
            derive_keys(&huge, b"x"),
            Err(BackupError::Malformed(_))
        ));
        let other = BackupKdf {
            alg: "scrypt".into(),
            ..cheap()
        };
        assert!(matches!(
            derive_keys(&other, b"x"),
            Err(BackupError::Malformed(_))
        ));
        assert_eq!(
            check_new_passphrase(b"short"),
            Err(BackupError::WeakPassphrase)
        );
        assert!(check_new_passphrase(b"long enough phrase").is_ok());
    }
}
