//! The key-encryption key (KEK): every secret in `server_keys` is sealed under
//! it, and it lives in a `0600` file outside the database. Whoever reads the
//! database alone (a backup, a replica, the file) gets no usable server key, so
//! cannot mint access tokens or sign receipts. Replicas sharing a database
//! share one KEK file (`--kek-file`, e.g. a mounted secret).
use atlas_crypto::at_rest::SecretBox;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Prefix of a sealed secret (version 1), so sealed and legacy plain rows are told apart.
const SEALED_V1: &[u8] = b"AKEK\x01";

/// Why the KEK could not be loaded or a secret opened.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// The file could not be read or created.
    #[error("key-encryption key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("key-encryption key {0} is not 32 bytes of base64url")]
    Malformed(PathBuf),
    /// A stored secret does not open under this KEK.
    #[error(
        "server key '{0}' does not open under this key-encryption key \
         (every server sharing the database needs the same --kek-file)"
    )]
    WrongKek(String),
}

/// A loaded KEK.
pub struct Kek {
    sealer: SecretBox,
    fingerprint: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

/// What a stored secret turned out to be.
pub enum Opened {
    /// It was sealed; here is the plaintext.
    Sealed(Vec<u8>),
    /// It predates sealing (stored plain): seal it.
    Legacy(Vec<u8>),
}

fn context(purpose: &str, kid: &str) -> Vec<u8> {
    // The row's identity is bound in, so a sealed secret cannot be moved to another key's row.
    format!("atlas server_keys\0{purpose}\0{kid}").into_bytes()
}

impl Kek {
    /// Reads the KEK at `path`, which must exist (commands on the server host:
    /// a new KEK there would not open the server's keys, and would stop it starting).
    pub fn load(path: &Path) -> Result<Self, KekError> {
        if !path.exists() {
            return Err(KekError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not found (start the server once, or pass --kek-file)",
                ),
            });
        }
        Self::load_or_create(path)
    }

    /// Reads the KEK at `path`, creating it (mode `0600`) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KekError> {
        let io = |source| KekError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = atlas_proto::b64::decode(text.trim())
                    .map_err(|_| KekError::Malformed(path.to_owned()))?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| KekError::Malformed(path.to_owned()))?;
                atlas_store::set_mode(path, 0o600).map_err(io)?;
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kek = Self::create_new(path)?;
                tracing::warn!(path = %path.display(), "created a new key-encryption key: back it up apart from the database");
                Ok(kek)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Writes a new random KEK to `path`, which must not exist (mode `0600`, synced).
    pub fn create_new(path: &Path) -> Result<Self, KekError> {
        let io = |source| KekError::Io {
            path: path.to_owned(),
            source,
        };
        let key: [u8; 32] = atlas_crypto::random_bytes();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        writeln!(file, "{}", atlas_proto::b64::encode(key)).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self::from_key(&key))
    }

    /// Where a KEK rotation puts the next KEK until the database is re-sealed under it.
    pub fn next_path(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".next");
        path.with_file_name(name)
    }

    /// Makes the KEK at [`Kek::next_path`] the one at `path`: the old file is
    /// overwritten with zeros and synced first (the old KEK is destroyed, not
    /// archived), then replaced by a rename, and the directory synced. A crash
    /// between the two leaves the next KEK in place for [`crate::open_server_keys`].
    pub fn promote_next(path: &Path) -> Result<(), KekError> {
        let io = |source| KekError::Io {
            path: path.to_owned(),
            source,
        };
        if let Ok(len) = std::fs::metadata(path).map(|m| m.len()) {
            let mut old = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io)?;
            old.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])
                .map_err(io)?;
            old.sync_all().map_err(io)?;
        }
        std::fs::rename(Self::next_path(path), path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    /// A fingerprint that names this KEK in records without revealing it.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// A KEK from raw key bytes.
    pub fn from_key(key: &[u8; 32]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(b"atlas kek fingerprint\0")
            .chain_update(key)
            .finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            sealer: SecretBox::new(key),
            fingerprint: format!("kek-{hex}"),
        }
    }

    /// Seals the secret of key `kid` of `purpose` for storage.
    pub fn seal(&self, purpose: &str, kid: &str, secret: &[u8]) -> Vec<u8> {
        let mut out = SEALED_V1.to_vec();
        out.extend(self.sealer.seal(&context(purpose, kid), secret));
        out
    }

    /// Opens a stored secret; a row without the sealed prefix is a legacy plain secret.
    pub fn open(&self, purpose: &str, kid: &str, stored: &[u8]) -> Result<Opened, KekError> {
        match stored.strip_prefix(SEALED_V1) {
            Some(sealed) => self
                .sealer
                .open(&context(purpose, kid), sealed)
                .map(Opened::Sealed)
                .map_err(|_| KekError::WrongKek(kid.to_owned())),
            None => Ok(Opened::Legacy(stored.to_vec())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_their_kek_and_row() {
        let kek = Kek::from_key(&[7; 32]);
        let sealed = kek.seal("access-token", "k1", b"secret");
        assert!(
            matches!(kek.open("access-token", "k1", &sealed), Ok(Opened::Sealed(s)) if s == b"secret")
        );
        assert!(matches!(
            kek.open("access-token", "k2", &sealed),
            Err(KekError::WrongKek(_))
        ));
        assert!(matches!(
            kek.open("dpop-nonce", "k1", &sealed),
            Err(KekError::WrongKek(_))
        ));
        assert!(matches!(
            Kek::from_key(&[8; 32]).open("access-token", "k1", &sealed),
            Err(KekError::WrongKek(_))
        ));
        assert!(
            matches!(kek.open("access-token", "k1", b"plain"), Ok(Opened::Legacy(s)) if s == b"plain")
        );
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn the_file_is_created_owner_only_and_read_back() {
        let dir = std::env::temp_dir().join(format!("atlas-kek-{}", atlas_crypto::random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.kek");
        let sealed = Kek::load_or_create(&path).unwrap().seal("p", "k", b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Kek::load_or_create(&path).unwrap();
        assert!(matches!(
            again.open("p", "k", &sealed),
            Ok(Opened::Sealed(_))
        ));
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            Kek::load_or_create(&path),
            Err(KekError::Malformed(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
