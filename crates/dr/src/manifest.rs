//! `manifest.json` of a backup and its signature. The manifest names every
//! file with its SHA-256 and size, and what a restore must find again: row
//! counts per table, the schema version, the audit log's checkpoint, a sample
//! of message ids. `manifest.sig` is a signed note by the server's audit key
//! over the manifest's SHA-256, so a backup nobody can forge is one whose
//! signer the operator pinned (`--key`), not merely one that carries a key.
use atlas_crypto::note::{NoteError, NoteSigner, NoteVerifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The format this version writes and reads.
pub const FORMAT: &str = "atlas-dr-v1";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The signature's file name.
pub const SIGNATURE: &str = "manifest.sig";
/// Largest manifest read (a sample of ids and a few dozen tables).
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its name inside the backup.
    pub name: String,
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// The audit log's checkpoint when the backup was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPoint {
    /// Entries.
    pub size: u64,
    /// The signed checkpoint (C2SP signed note: origin, size, root).
    pub checkpoint: String,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The backup's name.
    pub name: String,
    /// RFC 3339 time of the snapshot.
    pub created_at: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Highest migration applied.
    pub schema_version: i64,
    /// The binary that took it.
    pub binary_version: String,
    /// Every other file of the backup.
    pub files: Vec<FileEntry>,
    /// Rows per table in the snapshot.
    pub row_counts: BTreeMap<String, i64>,
    /// The audit log's checkpoint in the snapshot, if it had entries.
    pub audit: Option<AuditPoint>,
    /// Ids of up to 100 messages in the snapshot, to look for after a restore.
    pub message_sample: Vec<String>,
    /// The age recipient the keys archive is sealed to.
    pub recipient: String,
    /// The signer's verifier key (C2SP note form); trust it only if pinned.
    pub signer: String,
}

/// Why a manifest or a file does not check out.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not a manifest of this format.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// The signature does not verify, or is by another key.
    #[error("manifest signature: {0}")]
    Signature(#[from] NoteError),
    /// The signature is over another manifest.
    #[error("the signature is over a different manifest")]
    Mismatch,
    /// The signer is not the pinned key.
    #[error("signed by {found}, not by the pinned key {pinned}")]
    NotPinned {
        /// The key that signed.
        found: String,
        /// The key the operator pinned.
        pinned: String,
    },
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn statement(name: &str, manifest: &[u8]) -> String {
    format!(
        "{FORMAT} manifest\n{name}\nsha256 {}\n",
        sha256_hex(manifest)
    )
}

impl Manifest {
    /// The manifest as written (pretty JSON), and its signature by `signer`.
    pub fn sign(&self, signer: &NoteSigner) -> Result<(Vec<u8>, String), ManifestError> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let note = signer.sign(&statement(&self.name, &bytes))?;
        Ok((bytes, note))
    }

    /// Parses `bytes` and checks `signature` over them, by `pinned` if given
    /// (a C2SP verifier key), else by the key the manifest names.
    pub fn verify(
        bytes: &[u8],
        signature: &str,
        pinned: Option<&str>,
    ) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Malformed("larger than 1 MiB".into()));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(ManifestError::Malformed(format!(
                "format {:?}, this binary reads {FORMAT}",
                manifest.format
            )));
        }
        if let Some(pinned) = pinned
            && pinned.trim() != manifest.signer.trim()
        {
            return Err(ManifestError::NotPinned {
                found: manifest.signer.clone(),
                pinned: pinned.trim().to_owned(),
            });
        }
        let verifier = NoteVerifier::from_text(pinned.unwrap_or(&manifest.signer))?;
        let text = verifier.open(signature)?;
        if text != statement(&manifest.name, bytes) {
            return Err(ManifestError::Mismatch);
        }
        Ok(manifest)
    }

    /// The entry of the file `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(signer: &NoteSigner) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            name: "nightly".into(),
            created_at: "2026-11-30T12:00:00Z".into(),
            backend: "sqlite".into(),
            schema_version: 28,
            binary_version: "0.1.0".into(),
            files: vec![FileEntry {
                name: "atlas_x_data.tar.gz".into(),
                sha256: sha256_hex(b"data"),
                size: 4,
            }],
            row_counts: [("messages".to_owned(), 3)].into(),
            audit: Some(AuditPoint {
                size: 2,
                checkpoint: "atlas.test/audit\n2\ncm9vdA==\n".into(),
            }),
            message_sample: vec!["m1".into()],
            recipient: "age1…".into(),
            signer: signer.verifier().to_text(),
        }
    }

    #[test]
    fn a_signed_manifest_verifies_and_any_change_does_not() {
        let signer = NoteSigner::new("atlas.test/audit", &[7; 32]).unwrap();
        let (bytes, sig) = manifest(&signer).sign(&signer).unwrap();
        let pinned = signer.verifier().to_text();
        assert_eq!(
            Manifest::verify(&bytes, &sig, Some(&pinned)).unwrap(),
            manifest(&signer)
        );
        assert!(Manifest::verify(&bytes, &sig, None).is_ok());

        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"messages\": 3", "\"messages\": 4");
        assert!(matches!(
            Manifest::verify(edited.as_bytes(), &sig, Some(&pinned)),
            Err(ManifestError::Mismatch)
        ));
        // A forger signs with a key of its own and names it: refused when pinned.
        let forger = NoteSigner::new("atlas.test/audit", &[8; 32]).unwrap();
        let (forged, forged_sig) = manifest(&forger).sign(&forger).unwrap();
        assert!(matches!(
            Manifest::verify(&forged, &forged_sig, Some(&pinned)),
            Err(ManifestError::NotPinned { .. })
        ));
        // Naming the right key but signing with another: the signature fails.
        let mut lying = manifest(&signer);
        lying.name = "other".into();
        let (lying_bytes, _) = lying.sign(&signer).unwrap();
        let (_, forger_sig) = manifest(&forger).sign(&forger).unwrap();
        assert!(matches!(
            Manifest::verify(&lying_bytes, &forger_sig, None),
            Err(ManifestError::Signature(_))
        ));
        assert!(matches!(
            Manifest::verify(b"{}", &sig, None),
            Err(ManifestError::Malformed(_))
        ));
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(
            Manifest::verify(&big, &sig, None),
            Err(ManifestError::Malformed(_))
        ));
    }
}
