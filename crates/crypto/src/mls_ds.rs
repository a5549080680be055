//! The delivery service's view of an MLS group: openmls's `PublicGroup`,
//! which holds the ratchet tree and group context but no secrets. It validates
//! each commit (right group, current epoch, valid signature, sender a member,
//! valid proposals and path) before the service sequences it. Sans-I/O: the
//! state is a snapshot the caller stores per group and epoch.
use crate::mls::{MAX_MLS_MESSAGE, member_of, parse_message, verifiable_group_info};
use atlas_proto::MemberRef;
use openmls::prelude::*;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};

/// Why the delivery service refused a handshake or application message.
#[derive(Debug, thiserror::Error)]
pub enum DsError {
    /// Not a well-formed MLS message of the expected kind.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The message belongs to another group.
    #[error("message is for group {0}")]
    WrongGroup(String),
    /// The message's epoch is not the group's current one.
    #[error("message is for epoch {message}, the group is in epoch {current}")]
    WrongEpoch {
        /// The message's epoch.
        message: u64,
        /// The group's epoch.
        current: u64,
    },
    /// A handshake message that is not a commit (Atlas uses commits only).
    #[error("only commits are accepted as handshake messages")]
    NotACommit,
    /// The commit does not validate against the group's public state.
    #[error("invalid commit: {0}")]
    Invalid(String),
    /// The stored state cannot be read back (corruption or our bug).
    #[error("stored group state: {0}")]
    State(String),
}

/// What a validated commit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// The committer (for an external commit, the joining device).
    pub sender: MemberRef,
    /// Whether it is an external commit (a join or rejoin from GroupInfo).
    pub external: bool,
    /// The epoch it creates.
    pub epoch: u64,
    /// Devices added by it.
    pub added: Vec<MemberRef>,
    /// Devices removed by it.
    pub removed: Vec<MemberRef>,
}

/// The public state of one group at one epoch.
pub struct DsGroup {
    name: String,
    storage: MemoryStorage,
    group: PublicGroup,
}

fn invalid(e: impl std::fmt::Display) -> DsError {
    DsError::Invalid(e.to_string())
}

fn state(e: impl std::fmt::Display) -> DsError {
    DsError::State(e.to_string())
}

impl DsGroup {
    /// Starts tracking a group from its creator's GroupInfo (with the ratchet
    /// tree), checking the tree and the GroupInfo's signature.
    pub fn from_group_info(name: &str, group_info: &[u8]) -> Result<Self, DsError> {
        let info =
            verifiable_group_info(group_info).map_err(|e| DsError::Malformed(e.to_string()))?;
        if info.group_id().as_slice() != name.as_bytes() {
            return Err(DsError::WrongGroup(
                String::from_utf8_lossy(info.group_id().as_slice()).into_owned(),
            ));
        }
        if info.ciphersuite() != crate::mls::CIPHERSUITE {
            return Err(DsError::Invalid(format!(
                "ciphersuite {:?} is not the Atlas ciphersuite",
                info.ciphersuite()
            )));
        }
        let tree = info
            .extensions()
            .ratchet_tree()
            .map(|ext| ext.ratchet_tree().clone())
            .ok_or_else(|| DsError::Malformed("GroupInfo without ratchet tree".into()))?;
        let storage = MemoryStorage::default();
        let (group, _) = PublicGroup::from_external(
            &RustCrypto::default(),
            &storage,
            tree,
            info,
            ProposalStore::new(),
        )
        .map_err(invalid)?;
        Ok(Self {
            name: name.to_owned(),
            storage,
            group,
        })
    }

    /// The group's name (its MLS group id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// The members (devices) of the current epoch, in leaf order.
    pub fn members(&self) -> Result<Vec<MemberRef>, DsError> {
        self.group
            .members()
            .map(|m| member_of(&m.credential).map_err(invalid))
            .collect()
    }

    /// The state as bytes to store.
    pub fn snapshot(&self) -> Result<Vec<u8>, DsError> {
        let values = self
            .storage
            .values
            .read()
            .map_err(|_| DsError::State("lock poisoned".into()))?;
        let entries: std::collections::BTreeMap<_, _> = values.iter().collect();
        let mut out = Vec::new();
        crate::mls::put(&mut out, self.name.as_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (key, value) in entries {
            crate::mls::put(&mut out, key);
            crate::mls::put(&mut out, value);
        }
        Ok(out)
    }

    /// Restores [`DsGroup::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<Self, DsError> {
        let corrupt = |what: &str| DsError::State(format!("snapshot: {what}"));
        let mut rest = bytes;
        let name = crate::mls::take(&mut rest)
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| corrupt("name"))?
            .to_owned();
        let count = crate::mls::take_u64(&mut rest).ok_or_else(|| corrupt("count"))?;
        let storage = MemoryStorage::default();
        {
            let mut values = storage.values.write().map_err(|_| corrupt("lock"))?;
            for _ in 0..count {
                let key = crate::mls::take(&mut rest).ok_or_else(|| corrupt("entry"))?;
                let value = crate::mls::take(&mut rest).ok_or_else(|| corrupt("entry"))?;
                values.insert(key.to_vec(), value.to_vec());
            }
        }
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        // openmls's memory storage unwraps its JSON values while loading, so a
        // corrupted stored snapshot would panic; it is an error here instead.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            PublicGroup::load(&storage, &GroupId::from_slice(name.as_bytes()))
        }))
        .map_err(|_| corrupt("unreadable group state"))?;
        let group = loaded
            .map_err(state)?
            .ok_or_else(|| corrupt("no group in snapshot"))?;
        Ok(Self {
            name,
            storage,
            group,
        })
    }

    fn check_group_and_epoch(&self, group_id: &GroupId, epoch: u64) -> Result<(), DsError> {
        if group_id.as_slice() != self.name.as_bytes() {
            return Err(DsError::WrongGroup(
                String::from_utf8_lossy(group_id.as_slice()).into_owned(),
            ));
        }
        if epoch != self.epoch() {
            return Err(DsError::WrongEpoch {
                message: epoch,
                current: self.epoch(),
            });
        }
        Ok(())
    }

    /// Validates a commit against the current epoch and, if valid, applies it
    /// to this in-memory state (the caller stores the result only if the commit
    /// wins its epoch). On error nothing changes.
    pub fn apply_commit(&mut self, bytes: &[u8]) -> Result<CommitSummary, DsError> {
        let message = parse_message(bytes)
            .map_err(|e| DsError::Malformed(e.to_string()))?
            .try_into_protocol_message()
            .map_err(|_| DsError::Malformed("not a group message".into()))?;
        let ProtocolMessage::PublicMessage(public) = &message else {
            return Err(DsError::Malformed(
                "handshake messages must be PublicMessage".into(),
            ));
        };
        self.check_group_and_epoch(message.group_id(), message.epoch().as_u64())?;
        if public.content_type() != ContentType::Commit {
            return Err(DsError::NotACommit);
        }
        let crypto = RustCrypto::default();
        let processed = self
            .group
            .process_message(&crypto, message)
            .map_err(invalid)?;
        let sender = member_of(processed.credential()).map_err(invalid)?;
        let external = matches!(processed.sender(), Sender::NewMemberCommit);
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(DsError::NotACommit);
        };
        let added = staged
            .add_proposals()
            .map(|p| member_of(p.add_proposal().key_package().leaf_node().credential()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let removed = staged
            .remove_proposals()
            .map(|p| {
                let leaf = self
                    .group
                    .leaf(p.remove_proposal().removed())
                    .ok_or_else(|| DsError::Invalid("removes an empty leaf".into()))?;
                member_of(leaf.credential()).map_err(invalid)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.group
            .merge_commit(&self.storage, *staged)
            .map_err(state)?;
        Ok(CommitSummary {
            sender,
            external,
            epoch: self.epoch(),
            added,
            removed,
        })
    }

    /// Checks that a GroupInfo describes this group at its current epoch (as
    /// uploaded with a commit, for later external joins).
    pub fn check_group_info(&self, bytes: &[u8]) -> Result<(), DsError> {
        let info = verifiable_group_info(bytes).map_err(|e| DsError::Malformed(e.to_string()))?;
        self.check_group_and_epoch(info.group_id(), info.epoch().as_u64())?;
        if info.group_context() != self.group.group_context() {
            return Err(DsError::Invalid(
                "GroupInfo's group context differs from the group's".into(),
            ));
        }
        if info.extensions().ratchet_tree().is_none() {
            return Err(DsError::Malformed("GroupInfo without ratchet tree".into()));
        }
        Ok(())
    }

    /// Checks an application message's public framing: a `PrivateMessage` of
    /// this group; returns its epoch (which may be a recent past one).
    pub fn check_application(&self, bytes: &[u8]) -> Result<u64, DsError> {
        if bytes.len() > MAX_MLS_MESSAGE {
            return Err(DsError::Malformed("too large".into()));
        }
        let message = parse_message(bytes)
            .map_err(|e| DsError::Malformed(e.to_string()))?
            .try_into_protocol_message()
            .map_err(|_| DsError::Malformed("not a group message".into()))?;
        let ProtocolMessage::PrivateMessage(private) = &message else {
            return Err(DsError::Malformed(
                "application messages must be PrivateMessage".into(),
            ));
        };
        let epoch = private.epoch().as_u64();
        if private.group_id().as_slice() != self.name.as_bytes() {
            return Err(DsError::WrongGroup(
                String::from_utf8_lossy(private.group_id().as_slice()).into_owned(),
            ));
        }
        if epoch > self.epoch() {
            return Err(DsError::WrongEpoch {
                message: epoch,
                current: self.epoch(),
            });
        }
        Ok(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mls::{Incoming, MlsDevice};
    use atlas_proto::{DeviceId, UserId};

    /// Found by `cargo fuzz run mls`: a snapshot whose stored tree is not the
    /// JSON openmls expects made `restore` panic inside openmls's storage.
    #[test]
    fn a_corrupted_snapshot_is_an_error_not_a_panic() {
        let crash = include_bytes!("../test-vectors/fuzz/ds_restore-1");
        assert!(matches!(DsGroup::restore(crash), Err(DsError::State(_))));
    }

    fn device(user: &str) -> MlsDevice {
        MlsDevice::new(&UserId::new(user).unwrap(), &DeviceId::new("D1").unwrap()).unwrap()
    }

    fn member(user: &str) -> MemberRef {
        format!("{user}/D1").parse().unwrap()
    }

    /// alice creates "team", the service tracks it, alice adds bob and carol.
    fn team() -> (DsGroup, MlsDevice, MlsDevice, MlsDevice) {
        let (alice, bob, carol) = (device("alice"), device("bob"), device("carol"));
        let info = alice.create_group("team").unwrap();
        let mut ds = DsGroup::from_group_info("team", &info).unwrap();
        assert_eq!(
            (ds.epoch(), ds.members().unwrap()),
            (0, vec![member("alice")])
        );
        let packages = vec![
            bob.key_package(false).unwrap(),
            carol.key_package(false).unwrap(),
        ];
        let add = alice.add("team", &packages).unwrap();
        let summary = ds.apply_commit(&add.commit).unwrap();
        assert_eq!(
            summary,
            CommitSummary {
                sender: member("alice"),
                external: false,
                epoch: 1,
                added: vec![member("bob"), member("carol")],
                removed: vec![],
            }
        );
        ds.check_group_info(&add.group_info).unwrap();
        assert_eq!(alice.confirm_commit("team").unwrap(), 1);
        let welcome = add.welcome.unwrap();
        assert_eq!(bob.join(&welcome).unwrap(), ("team".to_owned(), 1));
        assert_eq!(carol.join(&welcome).unwrap(), ("team".to_owned(), 1));
        (ds, alice, bob, carol)
    }

    #[test]
    fn members_add_message_update_remove_through_the_service() {
        let (mut ds, alice, bob, carol) = team();
        let hello = alice.encrypt("team", b"hello team").unwrap();
        assert_eq!(ds.check_application(&hello).unwrap(), 1);
        for reader in [&bob, &carol] {
            assert_eq!(
                reader.process(&hello).unwrap(),
                Incoming::Application {
                    group: "team".into(),
                    epoch: 1,
                    sender: member("alice"),
                    plaintext: b"hello team".to_vec(),
                }
            );
        }
        // bob updates; everyone follows.
        let update = bob.self_update("team").unwrap();
        assert_eq!(ds.apply_commit(&update.commit).unwrap().epoch, 2);
        bob.confirm_commit("team").unwrap();
        for other in [&alice, &carol] {
            assert!(matches!(
                other.process(&update.commit).unwrap(),
                Incoming::Commit { epoch: 2, .. }
            ));
        }
        // carol removes bob; bob learns he is out.
        let remove = carol.remove("team", &[member("bob")]).unwrap();
        let summary = ds.apply_commit(&remove.commit).unwrap();
        assert_eq!(summary.removed, vec![member("bob")]);
        carol.confirm_commit("team").unwrap();
        alice.process(&remove.commit).unwrap();
        assert!(matches!(
            bob.process(&remove.commit).unwrap(),
            Incoming::Commit {
                removed_self: true,
                ..
            }
        ));
        assert_eq!(
            ds.members().unwrap(),
            vec![member("alice"), member("carol")]
        );
        assert_eq!(alice.members("team").unwrap(), ds.members().unwrap());
    }

    #[test]
    fn the_second_commit_for_an_epoch_and_bad_messages_leave_the_state_alone() {
        let (mut ds, alice, bob, carol) = team();
        let first = alice.self_update("team").unwrap();
        let second = bob.self_update("team").unwrap();
        ds.apply_commit(&first.commit).unwrap();
        let before = ds.snapshot().unwrap();
        assert!(matches!(
            ds.apply_commit(&second.commit),
            Err(DsError::WrongEpoch {
                message: 1,
                current: 2
            })
        ));
        // Garbage, an application message as a commit, a replay, a commit for another group.
        assert!(matches!(
            ds.apply_commit(b"garbage"),
            Err(DsError::Malformed(_))
        ));
        let app = carol.encrypt("team", b"x").unwrap();
        assert!(matches!(ds.apply_commit(&app), Err(DsError::Malformed(_))));
        assert!(matches!(
            ds.apply_commit(&first.commit),
            Err(DsError::WrongEpoch { .. })
        ));
        let other = device("dave");
        other.create_group("other").unwrap();
        let foreign = other.self_update("other").unwrap();
        assert!(matches!(
            ds.apply_commit(&foreign.commit),
            Err(DsError::WrongGroup(_))
        ));
        // A tampered commit (a flipped byte inside the signed content) is refused. The
        // membership tag at the very end is a MAC only members can check, not the service.
        alice.confirm_commit("team").unwrap();
        bob.discard_commit("team").unwrap();
        bob.process(&first.commit).unwrap();
        let mut tampered = bob.self_update("team").unwrap().commit;
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x01;
        assert!(matches!(
            ds.apply_commit(&tampered),
            Err(DsError::Invalid(_) | DsError::Malformed(_))
        ));
        assert_eq!(
            ds.snapshot().unwrap(),
            before,
            "refused messages changed nothing"
        );
        // bob rebases: his retry for epoch 2 wins.
        let retry = bob.self_update("team").unwrap();
        assert_eq!(ds.apply_commit(&retry.commit).unwrap().epoch, 3);
    }

    #[test]
    fn late_messages_of_recent_epochs_still_decrypt() {
        let (mut ds, alice, bob, carol) = team();
        let late = alice.encrypt("team", b"sent in epoch 1").unwrap();
        for _ in 0..3 {
            let update = bob.self_update("team").unwrap();
            ds.apply_commit(&update.commit).unwrap();
            bob.confirm_commit("team").unwrap();
            alice.process(&update.commit).unwrap();
            carol.process(&update.commit).unwrap();
        }
        assert_eq!(
            ds.check_application(&late).unwrap(),
            1,
            "the service accepts it late"
        );
        match carol.process(&late).unwrap() {
            Incoming::Application {
                epoch, plaintext, ..
            } => {
                assert_eq!((epoch, plaintext.as_slice()), (1, &b"sent in epoch 1"[..]));
            }
            other => panic!("{other:?}"),
        }
        // A message from an epoch ahead of the device is reported, not guessed at.
        let ahead = bob.self_update("team").unwrap();
        bob.confirm_commit("team").unwrap();
        let future = bob.encrypt("team", b"from epoch 5").unwrap();
        assert!(matches!(
            carol.process(&future),
            Err(crate::mls::MlsError::WrongEpoch { message: 5, own: 4 })
        ));
        carol.process(&ahead.commit).unwrap();
        assert!(matches!(
            carol.process(&future).unwrap(),
            Incoming::Application { .. }
        ));
    }

    #[test]
    fn snapshots_round_trip_on_both_sides() {
        let (mut ds, alice, bob, _carol) = team();
        let ds_bytes = ds.snapshot().unwrap();
        let mut restored = DsGroup::restore(&ds_bytes).unwrap();
        assert_eq!((restored.name(), restored.epoch()), ("team", 1));
        let bob = MlsDevice::restore(&bob.snapshot().unwrap()).unwrap();
        let update = bob.self_update("team").unwrap();
        assert_eq!(restored.apply_commit(&update.commit).unwrap().epoch, 2);
        assert_eq!(ds.apply_commit(&update.commit).unwrap().epoch, 2);
        bob.confirm_commit("team").unwrap();
        alice.process(&update.commit).unwrap();
        let msg = bob.encrypt("team", b"after restore").unwrap();
        assert!(matches!(
            alice.process(&msg).unwrap(),
            Incoming::Application { .. }
        ));
        assert!(DsGroup::restore(b"nonsense").is_err());
        assert!(MlsDevice::restore(b"nonsense").is_err());
    }

    #[test]
    fn a_stuck_member_rejoins_by_external_commit() {
        let (mut ds, alice, bob, carol) = team();
        // Two epochs pass without carol seeing them.
        for _ in 0..2 {
            let update = alice.self_update("team").unwrap();
            ds.apply_commit(&update.commit).unwrap();
            alice.confirm_commit("team").unwrap();
            bob.process(&update.commit).unwrap();
        }
        let latest = alice.self_update("team").unwrap();
        ds.apply_commit(&latest.commit).unwrap();
        alice.confirm_commit("team").unwrap();
        bob.process(&latest.commit).unwrap();
        ds.check_group_info(&latest.group_info).unwrap();
        let old = bob.encrypt("team", b"you missed this").unwrap();
        assert!(matches!(
            carol.process(&old),
            Err(crate::mls::MlsError::WrongEpoch { message: 4, own: 1 })
        ));
        // carol resyncs from the stored GroupInfo.
        let rejoin = carol.join_external(&latest.group_info).unwrap();
        let summary = ds.apply_commit(&rejoin.commit).unwrap();
        assert!(summary.external);
        assert_eq!(summary.sender, member("carol"));
        assert_eq!(summary.removed, vec![member("carol")], "her old leaf goes");
        carol.confirm_commit("team").unwrap();
        alice.process(&rejoin.commit).unwrap();
        bob.process(&rejoin.commit).unwrap();
        let hello = alice.encrypt("team", b"welcome back").unwrap();
        assert!(matches!(
            carol.process(&hello).unwrap(),
            Incoming::Application { .. }
        ));
        assert_eq!(ds.members().unwrap().len(), 3);
    }
}
