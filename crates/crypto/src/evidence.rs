//! The manifest of an emergency evidence bundle (seed 004 §3.1 step 1): the
//! SHA-256 of every file, as a signed note by the server's audit key. Its
//! lines are `sha256sum`'s (`<hex>  <name>`), so `sha256sum -c MANIFEST`
//! checks the files by hand too; the signature says the server made them.
use crate::note::{NoteError, NoteSigner, NoteVerifier};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// First line of every manifest.
const HEADER: &str = "atlas emergency evidence v1";

/// Why a bundle does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The manifest's signature.
    #[error("manifest: {0}")]
    Note(#[from] NoteError),
    /// The manifest is not ours.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// A file's content is not what the manifest says.
    #[error("{0} does not match the manifest")]
    Changed(String),
    /// A file the manifest lists is missing.
    #[error("{0} is listed in the manifest but missing")]
    Missing(String),
    /// A file the manifest does not list.
    #[error("{0} is not listed in the manifest")]
    Unlisted(String),
}

/// Whether `name` can be a file of a bundle: one plain path component.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The signed manifest of `files`, made at `created` (RFC 3339).
pub fn manifest(
    signer: &NoteSigner,
    created: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<String, EvidenceError> {
    let mut text = format!("{HEADER}\n{}\ncreated {created}\n", signer.name());
    for (name, content) in files {
        if !valid_name(name) {
            return Err(EvidenceError::Malformed(format!("file name {name:?}")));
        }
        text.push_str(&format!(
            "{}  {name}\n",
            hex::encode(Sha256::digest(content))
        ));
    }
    Ok(signer.sign(&text)?)
}

/// Checks `files` against the signed `manifest`; the names it covers.
pub fn verify(
    manifest: &str,
    files: &BTreeMap<String, Vec<u8>>,
    verifier: &NoteVerifier,
) -> Result<Vec<String>, EvidenceError> {
    let text = verifier.open(manifest)?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) || lines.next() != Some(verifier.name()) {
        return Err(EvidenceError::Malformed("header".into()));
    }
    if !lines.next().is_some_and(|l| l.starts_with("created ")) {
        return Err(EvidenceError::Malformed("creation time".into()));
    }
    let mut listed = Vec::new();
    for line in lines {
        let (hash, name) = line
            .split_once("  ")
            .ok_or_else(|| EvidenceError::Malformed(line.to_owned()))?;
        let content = files
            .get(name)
            .ok_or_else(|| EvidenceError::Missing(name.to_owned()))?;
        if hex::encode(Sha256::digest(content)) != hash {
            return Err(EvidenceError::Changed(name.to_owned()));
        }
        listed.push(name.to_owned());
    }
    if let Some(extra) = files.keys().find(|n| !listed.contains(n)) {
        return Err(EvidenceError::Unlisted(extra.clone()));
    }
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_verifies_and_any_change_is_named() {
        let signer = NoteSigner::new("atlas.test/audit/1", &[5; 32]).unwrap();
        let mut files = BTreeMap::new();
        files.insert("logs.jsonl".to_owned(), b"{\"msg\":\"x\"}\n".to_vec());
        files.insert("state.json".to_owned(), b"{}".to_vec());
        let note = manifest(&signer, "2026-11-30T10:00:00Z", &files).unwrap();
        let verifier = signer.verifier();
        assert_eq!(verify(&note, &files, &verifier).unwrap().len(), 2);

        let mut changed = files.clone();
        changed.insert("state.json".into(), b"{\"edited\":1}".to_vec());
        assert_eq!(
            verify(&note, &changed, &verifier),
            Err(EvidenceError::Changed("state.json".into()))
        );
        let mut missing = files.clone();
        missing.remove("logs.jsonl");
        assert_eq!(
            verify(&note, &missing, &verifier),
            Err(EvidenceError::Missing("logs.jsonl".into()))
        );
        let mut extra = files.clone();
        extra.insert("planted.txt".into(), vec![]);
        assert_eq!(
            verify(&note, &extra, &verifier),
            Err(EvidenceError::Unlisted("planted.txt".into()))
        );
        let forger = NoteSigner::new("atlas.test/audit/1", &[6; 32]).unwrap();
        let forged = manifest(&forger, "2026-11-30T10:00:00Z", &files).unwrap();
        assert!(matches!(
            verify(&forged, &files, &verifier),
            Err(EvidenceError::Note(_))
        ));
        let mut bad = BTreeMap::new();
        bad.insert("../escape".to_owned(), vec![]);
        assert!(manifest(&signer, "t", &bad).is_err());
    }
}
