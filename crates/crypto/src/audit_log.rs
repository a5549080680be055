//! The audit log's integrity, sans-I/O. Every entry's digest is a leaf of an
//! RFC 6962 Merkle tree (`ct-merkle`); the server signs checkpoints of the
//! tree (C2SP `tlog-checkpoint` as a signed note: origin, size, root), and
//! seals each entry to its index with the same key when it appends it.
//!
//! The checkpoints prove the log only grew; the seals say *which* entry
//! changed: an edited entry's seal fails, a deleted or moved one's seal holds
//! for another index, an inserted one's holds for none.
use crate::note::{NoteError, NoteSigner, NoteVerifier};
pub use atlas_proto::audit::{CheckpointProblem, Tamper};
use ct_merkle::RootHash;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The digest of one entry: SHA-256 over its fields, each length-prefixed so
/// no two different entries share an encoding.
pub fn entry_digest(fields: &[&[u8]]) -> Hash {
    let mut hash = Sha256::new();
    hash.update(b"atlas audit entry v1\0");
    for field in fields {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field);
    }
    hash.finalize().into()
}

/// Milliseconds since the Unix epoch: entries are stored and hashed at this precision.
pub fn unix_ms(at: &atlas_proto::timestamp::Timestamp) -> i64 {
    i64::try_from(at.0.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The digest of a stored audit entry (every field, times in milliseconds).
pub fn digest_of(entry: &atlas_proto::audit::NewAuditEntry) -> Hash {
    entry_digest(&[
        &unix_ms(&entry.at).to_be_bytes(),
        entry.actor.as_bytes(),
        entry.actor_label.as_bytes(),
        entry.source.as_bytes(),
        entry.action.as_bytes(),
        entry.target.as_bytes(),
        entry.outcome.as_str().as_bytes(),
        entry.detail.as_bytes(),
    ])
}

fn seal_message(origin: &str, index: u64, digest: &Hash) -> Vec<u8> {
    let mut message = format!("atlas audit seal v1\n{origin}\n").into_bytes();
    message.extend_from_slice(&index.to_be_bytes());
    message.extend_from_slice(digest);
    message
}

/// The seal binding entry `digest` to position `index` of the log `signer` names.
pub fn seal_entry(signer: &NoteSigner, index: u64, digest: &Hash) -> [u8; 64] {
    signer.sign_raw(&seal_message(signer.name(), index, digest))
}

/// Whether `seal` binds `digest` to `index`.
pub fn entry_sealed(verifier: &NoteVerifier, index: u64, digest: &Hash, seal: &[u8]) -> bool {
    verifier.verify_raw(&seal_message(verifier.name(), index, digest), seal)
}

/// The Merkle tree over entry digests, in memory.
#[derive(Default)]
pub struct Tree(MemoryBackedTree<Sha256, Hash>);

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one entry's digest.
    pub fn push(&mut self, digest: Hash) {
        self.0.push(digest);
    }

    /// How many entries it holds.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// RFC 6962 Merkle Tree Hash of all entries.
    pub fn root(&self) -> Hash {
        (*self.0.root().as_bytes()).into()
    }

    /// Whether `older` (a checkpoint of a prefix) and the whole tree as `newer`
    /// are consistent, by an RFC 6962 consistency proof built from this tree.
    fn consistent(&self, older: &Checkpoint, newer: &Checkpoint) -> bool {
        if older.size == 0 || older.size >= self.len() || newer.size != self.len() {
            return older.size <= newer.size;
        }
        let additions = usize::try_from(self.len() - older.size).unwrap_or(usize::MAX);
        let proof = self.0.prove_consistency(additions);
        let new_root = RootHash::<Sha256>::new(newer.root.into(), newer.size);
        let old_root = RootHash::<Sha256>::new(older.root.into(), older.size);
        new_root.verify_consistency(&old_root, &proof).is_ok()
    }
}

/// A checkpoint: the log `origin` held `size` entries whose tree hash is `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name (the key name too).
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Merkle Tree Hash of those entries.
    pub root: Hash,
}

/// Why a checkpoint note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note's signature.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The body is not origin, size and root.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// Another log's checkpoint.
    #[error("checkpoint of another log")]
    WrongOrigin,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, one per line.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            atlas_proto::b64::encode_std(self.root)
        )
    }

    /// The signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.text())
    }

    /// The checkpoint in `note` if `verifier` signed it for its own log.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        let text = verifier.open(note)?;
        let mut lines = text.lines();
        let origin = lines.next().ok_or(CheckpointError::Malformed("origin"))?;
        let size = lines
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(CheckpointError::Malformed("size"))?;
        let root: Hash = lines
            .next()
            .and_then(|r| atlas_proto::b64::decode_std(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed("root"))?;
        if origin != verifier.name() {
            return Err(CheckpointError::WrongOrigin);
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// One stored entry as the verifier sees it.
#[derive(Debug, Clone)]
pub struct SealedEntry {
    /// Digest recomputed from the stored fields.
    pub digest: Hash,
    /// The stored seal.
    pub seal: Vec<u8>,
}

/// What verifying a stored log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogReport {
    /// Entries stored.
    pub entries: u64,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// The largest checkpoint that verified against the entries, if any.
    pub verified: Option<Checkpoint>,
    /// The first tampered entry.
    pub tamper: Option<Tamper>,
    /// Every checkpoint that failed.
    pub checkpoint_problems: Vec<CheckpointProblem>,
}

impl LogReport {
    /// Whether the log is intact.
    pub fn ok(&self) -> bool {
        self.tamper.is_none() && self.checkpoint_problems.is_empty()
    }
}

/// Verifies stored `entries` (in stored order) and checkpoint `notes` (in
/// size order) against the log's key.
pub fn verify_log(entries: &[SealedEntry], notes: &[String], verifier: &NoteVerifier) -> LogReport {
    let mut report = LogReport {
        entries: entries.len() as u64,
        checkpoints: notes.len() as u64,
        ..LogReport::default()
    };
    let mut tree = Tree::new();
    let mut signed_size = 0;
    for (position, note) in notes.iter().enumerate() {
        let Ok(checkpoint) = Checkpoint::open(note, verifier) else {
            report
                .checkpoint_problems
                .push(CheckpointProblem::BadSignature {
                    position: position as u64,
                });
            continue;
        };
        signed_size = signed_size.max(checkpoint.size);
        if checkpoint.size > report.entries {
            report
                .checkpoint_problems
                .push(CheckpointProblem::BeyondLog {
                    size: checkpoint.size,
                });
            continue;
        }
        while tree.len() < checkpoint.size {
            let next = entries[usize::try_from(tree.len()).unwrap_or(usize::MAX)].digest;
            tree.push(next);
        }
        if tree.len() != checkpoint.size || tree.root() != checkpoint.root {
            report
                .checkpoint_problems
                .push(CheckpointProblem::RootMismatch {
                    size: checkpoint.size,
                });
            continue;
        }
        if let Some(older) = &report.verified
            && !tree.consistent(older, &checkpoint)
        {
            report
                .checkpoint_problems
                .push(CheckpointProblem::Inconsistent {
                    from: older.size,
                    to: checkpoint.size,
                });
            continue;
        }
        report.verified = Some(checkpoint);
    }
    report.tamper = first_tamper(entries, verifier, signed_size);
    report
}

/// Whether the checkpoint `note` (say, one a backup recorded) is signed by
/// `verifier` and describes a prefix of `entries`: its size within the log,
/// and the tree over that many entries has its root.
pub fn checkpoint_holds(entries: &[SealedEntry], note: &str, verifier: &NoteVerifier) -> bool {
    let Ok(checkpoint) = Checkpoint::open(note, verifier) else {
        return false;
    };
    let Ok(size) = usize::try_from(checkpoint.size) else {
        return false;
    };
    let Some(prefix) = entries.get(..size) else {
        return false;
    };
    let mut tree = Tree::new();
    for entry in prefix {
        tree.push(entry.digest);
    }
    tree.root() == checkpoint.root
}

/// The first entry whose seal does not hold for its position, classified.
/// `signed_size` is the largest size a signed checkpoint vouches for.
fn first_tamper(
    entries: &[SealedEntry],
    verifier: &NoteVerifier,
    signed_size: u64,
) -> Option<Tamper> {
    let sealed_at = |position: usize, index: u64| {
        entries
            .get(position)
            .is_some_and(|e| entry_sealed(verifier, index, &e.digest, &e.seal))
    };
    let len = entries.len() as u64;
    for position in 0..entries.len() {
        let at = position as u64;
        if sealed_at(position, at) {
            continue;
        }
        // The row is a later entry: the ones before it were deleted, or moved.
        if let Some(later) = (at + 1..=len.max(signed_size)).find(|&i| sealed_at(position, i)) {
            return Some(
                match (0..entries.len()).find(|&p| p != position && sealed_at(p, at)) {
                    Some(found) => Tamper::Reordered {
                        index: at,
                        found_at: found as u64,
                    },
                    None => Tamper::Deleted {
                        index: at,
                        count: later - at,
                    },
                },
            );
        }
        // The row is an earlier entry, moved here.
        if let Some(earlier) = (0..at).find(|&i| sealed_at(position, i)) {
            return Some(Tamper::Reordered {
                index: earlier,
                found_at: at,
            });
        }
        // The row was never sealed anywhere: inserted, if entry `at` follows it
        // or no checkpoint ever counted an entry here; edited otherwise.
        return Some(
            if sealed_at(position + 1, at)
                || at >= signed_size.max(1) && position + 1 == entries.len()
            {
                Tamper::Inserted { position: at }
            } else {
                Tamper::Edited { index: at }
            },
        );
    }
    (signed_size > len).then(|| Tamper::Deleted {
        index: len,
        count: signed_size - len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6962's reference inputs and roots, as in Certificate Transparency's
    // own test suites (merkle_tree_test.cc): our leaves hash the same way.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn ct_merkle_computes_the_rfc_6962_reference_roots() {
        let mut tree = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        for (leaf, root) in LEAVES.iter().zip(ROOTS) {
            tree.push(hex::decode(leaf).unwrap());
            assert_eq!(hex::encode(tree.root().as_bytes()), root);
        }
    }

    fn log(n: u64) -> (NoteSigner, Vec<SealedEntry>, Vec<String>) {
        let signer = NoteSigner::new("atlas.test/audit", &[3; 32]).unwrap();
        let mut tree = Tree::new();
        let mut entries = Vec::new();
        let mut notes = Vec::new();
        for i in 0..n {
            let digest = entry_digest(&[b"action", &i.to_be_bytes()]);
            entries.push(SealedEntry {
                digest,
                seal: seal_entry(&signer, i, &digest).to_vec(),
            });
            tree.push(digest);
            if i % 3 == 2 {
                let checkpoint = Checkpoint {
                    origin: signer.name().into(),
                    size: tree.len(),
                    root: tree.root(),
                };
                notes.push(checkpoint.sign(&signer).unwrap());
            }
        }
        (signer, entries, notes)
    }

    #[test]
    fn an_intact_log_verifies_up_to_its_last_checkpoint() {
        let (signer, entries, notes) = log(10);
        let report = verify_log(&entries, &notes, &signer.verifier());
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.verified.unwrap().size, 9);
    }

    #[test]
    fn a_recorded_checkpoint_holds_only_for_the_log_it_describes() {
        let (signer, entries, notes) = log(10);
        let verifier = signer.verifier();
        assert!(checkpoint_holds(&entries, &notes[1], &verifier));
        // A log cut below the checkpoint's size, or edited within it.
        assert!(!checkpoint_holds(&entries[..5], &notes[1], &verifier));
        let mut edited = entries.clone();
        edited[2].digest = entry_digest(&[b"forged"]);
        assert!(!checkpoint_holds(&edited, &notes[1], &verifier));
        // Another key's note, and a note that is not one.
        let other = NoteSigner::new("atlas.test/audit", &[4; 32]).unwrap();
        assert!(!checkpoint_holds(&entries, &notes[1], &other.verifier()));
        assert!(!checkpoint_holds(&entries, "garbage", &verifier));
    }

    #[test]
    fn each_kind_of_tampering_is_named_with_its_entry() {
        let (signer, entries, notes) = log(12);
        let verifier = signer.verifier();
        let check = |entries: &[SealedEntry]| verify_log(entries, &notes, &verifier);

        let mut edited = entries.clone();
        edited[4].digest = entry_digest(&[b"forged"]);
        let report = check(&edited);
        assert_eq!(report.tamper, Some(Tamper::Edited { index: 4 }));
        assert!(
            report
                .checkpoint_problems
                .contains(&CheckpointProblem::RootMismatch { size: 6 })
        );

        let mut deleted = entries.clone();
        deleted.remove(5);
        assert_eq!(
            check(&deleted).tamper,
            Some(Tamper::Deleted { index: 5, count: 1 })
        );

        let mut reordered = entries.clone();
        reordered.swap(6, 7);
        assert_eq!(
            check(&reordered).tamper,
            Some(Tamper::Reordered {
                index: 6,
                found_at: 7
            })
        );

        let mut inserted = entries.clone();
        inserted.insert(
            2,
            SealedEntry {
                digest: entry_digest(&[b"planted"]),
                seal: vec![0; 64],
            },
        );
        assert_eq!(
            check(&inserted).tamper,
            Some(Tamper::Inserted { position: 2 })
        );

        let truncated = &entries[..7];
        let report = check(truncated);
        assert_eq!(report.tamper, Some(Tamper::Deleted { index: 7, count: 5 }));
        assert!(
            report
                .checkpoint_problems
                .contains(&CheckpointProblem::BeyondLog { size: 9 })
        );
    }

    #[test]
    fn forged_and_inconsistent_checkpoints_are_refused() {
        let (signer, entries, mut notes) = log(9);
        let verifier = signer.verifier();
        let forger = NoteSigner::new("atlas.test/audit", &[4; 32]).unwrap();
        let forged = Checkpoint {
            origin: "atlas.test/audit".into(),
            size: 3,
            root: [0; 32],
        };
        notes[0] = forged.sign(&forger).unwrap();
        let report = verify_log(&entries, &notes, &verifier);
        assert_eq!(
            report.checkpoint_problems,
            vec![CheckpointProblem::BadSignature { position: 0 }]
        );
        // Signed by the right key but over other entries: the root does not match.
        notes[0] = forged.sign(&signer).unwrap();
        let report = verify_log(&entries, &notes, &verifier);
        assert_eq!(
            report.checkpoint_problems,
            vec![CheckpointProblem::RootMismatch { size: 3 }]
        );
    }
}
