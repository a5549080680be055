//! MLS (RFC 9420) for one device, over openmls: KeyPackages, groups, commits,
//! Welcomes, external joins and application messages. Sans-I/O: every call
//! takes and returns bytes in the MLS wire format, and the whole state is one
//! snapshot the caller stores (encrypted) after each operation.
//!
//! Handshake messages go out as `PublicMessage`, so the delivery service can
//! validate them; application messages are always `PrivateMessage`. Every
//! GroupInfo carries the ratchet tree, so a Welcome or a GroupInfo alone is
//! enough to join.
use atlas_proto::{DeviceId, MemberRef, UserId};
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// The ciphersuite of every Atlas group.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Largest MLS message we parse (a commit adding many members with its tree).
pub const MAX_MLS_MESSAGE: usize = 4 * 1024 * 1024;

/// Epochs of decryption secrets a member keeps, so late application messages still decrypt.
pub const PAST_EPOCHS: usize = 5;

/// Why an MLS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MlsError {
    /// The bytes are not the MLS message that was expected (the peer sent garbage).
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    /// This device has no such group.
    #[error("no group {0}")]
    UnknownGroup(String),
    /// A named member is not in the group.
    #[error("{0} is not a member of the group")]
    NotAMember(String),
    /// The message is for an epoch this device is not in (too old, or ahead of it).
    #[error("message for epoch {message}, this device is in epoch {own}")]
    WrongEpoch {
        /// The message's epoch.
        message: u64,
        /// This device's epoch of the group.
        own: u64,
    },
    /// openmls refused the operation or the message (bad signature, invalid proposal, …).
    #[error("MLS: {0}")]
    Protocol(String),
    /// The stored state cannot be read back (corruption or our bug).
    #[error("MLS state: {0}")]
    State(String),
}

fn protocol(e: impl std::fmt::Display) -> MlsError {
    MlsError::Protocol(e.to_string())
}

/// The member a credential names (`USER_ID/DEVICE_ID` in a basic credential).
pub fn member_of(credential: &Credential) -> Result<MemberRef, MlsError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| MlsError::Malformed("not a basic credential".into()))?;
    let text = std::str::from_utf8(basic.identity())
        .map_err(|_| MlsError::Malformed("credential identity is not UTF-8".into()))?;
    let member: MemberRef = text
        .parse()
        .map_err(|_| MlsError::Malformed(format!("credential identity {text:?}")))?;
    if member.device_id.is_none() {
        return Err(MlsError::Malformed(format!(
            "credential identity {text:?} names no device"
        )));
    }
    Ok(member)
}

/// Parses an MLS message, refusing oversized and trailing input.
pub fn parse_message(bytes: &[u8]) -> Result<MlsMessageIn, MlsError> {
    if bytes.len() > MAX_MLS_MESSAGE {
        return Err(MlsError::Malformed(format!(
            "{} bytes, at most {MAX_MLS_MESSAGE}",
            bytes.len()
        )));
    }
    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| MlsError::Malformed(e.to_string()))
}

/// A KeyPackage checked for publication: who it is for and whether it is a last resort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKeyPackage {
    /// The device its credential names.
    pub member: MemberRef,
    /// Marked last resort.
    pub last_resort: bool,
    /// Hex SHA-256 of its bytes, its id in storage.
    pub reference: String,
    /// The leaf's MLS signature key (what [`signature_key_statement`] binds).
    pub signature_key: Vec<u8>,
}

/// What a device's certified Ed25519 key signs to vouch for its MLS signature
/// key. The user's identity key certifies the Ed25519 key, so a KeyPackage whose
/// signature key carries no such signature is not the device's: the server
/// cannot publish one of its own making for a certified device.
pub fn signature_key_statement(member: &MemberRef, signature_key: &[u8]) -> String {
    format!(
        "atlas-mls-signature-key.v1 {member} {}",
        atlas_proto::b64::encode_std(signature_key)
    )
}

/// Validates a KeyPackage (signature, lifetime, ciphersuite) before the server publishes it.
pub fn check_key_package(bytes: &[u8]) -> Result<CheckedKeyPackage, MlsError> {
    if bytes.len() > 64 * 1024 {
        return Err(MlsError::Malformed("KeyPackage larger than 64 KiB".into()));
    }
    let package = KeyPackageIn::tls_deserialize_exact(bytes)
        .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))?
        .validate(
            &openmls_rust_crypto::RustCrypto::default(),
            ProtocolVersion::Mls10,
        )
        .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))?;
    if package.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::Malformed(format!(
            "KeyPackage ciphersuite {:?} is not the Atlas ciphersuite",
            package.ciphersuite()
        )));
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    Ok(CheckedKeyPackage {
        member: member_of(package.leaf_node().credential())?,
        last_resort: package.last_resort(),
        reference: digest.iter().map(|b| format!("{b:02x}")).collect(),
        signature_key: package.leaf_node().signature_key().as_slice().to_vec(),
    })
}

/// Parses a GroupInfo message (signature not yet verified).
pub fn verifiable_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, MlsError> {
    match parse_message(bytes)?.extract() {
        MlsMessageBodyIn::GroupInfo(info) => Ok(info),
        _ => Err(MlsError::Malformed("not a GroupInfo".into())),
    }
}

fn out_bytes(message: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    message.to_bytes().map_err(protocol)
}

fn group_id(name: &str) -> GroupId {
    GroupId::from_slice(name.as_bytes())
}

fn group_name(id: &GroupId) -> Result<String, MlsError> {
    String::from_utf8(id.as_slice().to_vec())
        .map_err(|_| MlsError::Malformed("group id is not UTF-8".into()))
}

/// A commit made by this device, pending until the delivery service accepts it.
#[derive(Debug, Clone)]
pub struct CommitOut {
    /// The group.
    pub group: String,
    /// The commit (`PublicMessage`).
    pub commit: Vec<u8>,
    /// The Welcome for added members, if any.
    pub welcome: Option<Vec<u8>>,
    /// The signed GroupInfo of the new epoch, with the ratchet tree.
    pub group_info: Vec<u8>,
    /// The epoch the commit creates.
    pub epoch: u64,
}

/// What an incoming message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An application message, decrypted.
    Application {
        /// The group.
        group: String,
        /// The epoch it was sent in.
        epoch: u64,
        /// Who sent it (authenticated by its signature).
        sender: MemberRef,
        /// The plaintext.
        plaintext: Vec<u8>,
    },
    /// A commit, merged: the group is now in `epoch`.
    Commit {
        /// The group.
        group: String,
        /// The new epoch.
        epoch: u64,
        /// The committer.
        sender: MemberRef,
        /// Whether this device was removed by it.
        removed_self: bool,
    },
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(PAST_EPOCHS)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(PAST_EPOCHS)
        .build()
}

/// One device's MLS identity and groups.
pub struct MlsDevice {
    member: MemberRef,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

/// First bytes of a snapshot, so a wrong file is recognised.
const SNAPSHOT_MAGIC: &[u8] = b"atlas-mls-v1\n";

impl MlsDevice {
    /// A fresh identity for `user`'s device `device`.
    pub fn new(user: &UserId, device: &DeviceId) -> Result<Self, MlsError> {
        let member = MemberRef {
            user_id: user.clone(),
            device_id: Some(device.clone()),
        };
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(protocol)?;
        signer.store(provider.storage()).map_err(protocol)?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(member.to_string().into_bytes()).into(),
            signature_key: signer.to_public_vec().into(),
        };
        Ok(Self {
            member,
            provider,
            signer,
            credential,
        })
    }

    /// This device as a group member.
    pub fn member(&self) -> &MemberRef {
        &self.member
    }

    /// The statement this device's Ed25519 key signs to bind its MLS signature key.
    pub fn signature_key_statement(&self) -> String {
        signature_key_statement(&self.member, &self.signer.to_public_vec())
    }

    /// The whole state (signature key, KeyPackage secrets, groups) as bytes to store.
    pub fn snapshot(&self) -> Result<Vec<u8>, MlsError> {
        let values = self
            .provider
            .storage()
            .values
            .read()
            .map_err(|_| MlsError::State("storage lock poisoned".into()))?;
        let mut out = SNAPSHOT_MAGIC.to_vec();
        let member = self.member.to_string();
        let public = self.signer.to_public_vec();
        for field in [member.as_bytes(), public.as_slice()] {
            put(&mut out, field);
        }
        let mut entries: Vec<_> = values.iter().collect();
        entries.sort();
        out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (key, value) in entries {
            put(&mut out, key);
            put(&mut out, value);
        }
        Ok(out)
    }

    /// Restores a device from [`MlsDevice::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<Self, MlsError> {
        let corrupt = |what: &str| MlsError::State(format!("snapshot: {what}"));
        let mut rest = bytes
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or_else(|| corrupt("not an Atlas MLS snapshot"))?;
        let member = take(&mut rest).ok_or_else(|| corrupt("member"))?;
        let member: MemberRef = std::str::from_utf8(member)
            .ok()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| corrupt("member"))?;
        let public = take(&mut rest)
            .ok_or_else(|| corrupt("signature key"))?
            .to_vec();
        let count = take_u64(&mut rest).ok_or_else(|| corrupt("entry count"))?;
        let provider = OpenMlsRustCrypto::default();
        {
            let mut values = provider
                .storage()
                .values
                .write()
                .map_err(|_| corrupt("storage lock"))?;
            for _ in 0..count {
                let key = take(&mut rest).ok_or_else(|| corrupt("entry"))?.to_vec();
                let value = take(&mut rest).ok_or_else(|| corrupt("entry"))?.to_vec();
                values.insert(key, value);
            }
        }
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let signer = SignatureKeyPair::read(
            provider.storage(),
            &public,
            CIPHERSUITE.signature_algorithm(),
        )
        .ok_or_else(|| corrupt("signature key missing"))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(member.to_string().into_bytes()).into(),
            signature_key: public.into(),
        };
        Ok(Self {
            member,
            provider,
            signer,
            credential,
        })
    }

    /// A new KeyPackage (TLS-serialized) for others to add this device with;
    /// `last_resort` marks the one the server may hand out more than once.
    pub fn key_package(&self, last_resort: bool) -> Result<Vec<u8>, MlsError> {
        // Every leaf declares the last-resort extension, so both kinds validate.
        let capabilities = Capabilities::builder()
            .extensions(vec![ExtensionType::LastResort])
            .build();
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities);
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(protocol)?;
        bundle
            .key_package()
            .tls_serialize_detached()
            .map_err(protocol)
    }

    fn load(&self, name: &str) -> Result<MlsGroup, MlsError> {
        MlsGroup::load(self.provider.storage(), &group_id(name))
            .map_err(|e| MlsError::State(e.to_string()))?
            .ok_or_else(|| MlsError::UnknownGroup(name.to_owned()))
    }

    /// Whether this device is in group `name`.
    pub fn has_group(&self, name: &str) -> Result<bool, MlsError> {
        Ok(MlsGroup::load(self.provider.storage(), &group_id(name))
            .map_err(|e| MlsError::State(e.to_string()))?
            .is_some_and(|g| g.is_active()))
    }

    /// Creates group `name` with this device as its only member (epoch 0); returns its GroupInfo.
    pub fn create_group(&self, name: &str) -> Result<Vec<u8>, MlsError> {
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            group_id(name),
            self.credential.clone(),
        )
        .map_err(protocol)?;
        self.group_info(&group)
    }

    fn group_info(&self, group: &MlsGroup) -> Result<Vec<u8>, MlsError> {
        let info = group
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .map_err(protocol)?;
        out_bytes(&info)
    }

    /// Deletes this device's state of a group (e.g. one the server refused to create).
    pub fn forget_group(&self, name: &str) -> Result<(), MlsError> {
        if let Some(mut group) = MlsGroup::load(self.provider.storage(), &group_id(name))
            .map_err(|e| MlsError::State(e.to_string()))?
        {
            group.delete(self.provider.storage()).map_err(protocol)?;
        }
        Ok(())
    }

    /// The group's current epoch on this device.
    pub fn epoch(&self, name: &str) -> Result<u64, MlsError> {
        Ok(self.load(name)?.epoch().as_u64())
    }

    /// The group's members as this device sees them.
    pub fn members(&self, name: &str) -> Result<Vec<MemberRef>, MlsError> {
        self.load(name)?
            .members()
            .map(|m| member_of(&m.credential))
            .collect()
    }

    fn leaf_of(group: &MlsGroup, who: &MemberRef) -> Result<LeafNodeIndex, MlsError> {
        group
            .members()
            .find(|m| member_of(&m.credential).is_ok_and(|c| c == *who))
            .map(|m| m.index)
            .ok_or_else(|| MlsError::NotAMember(who.to_string()))
    }

    fn commit(
        &self,
        name: &str,
        build: impl FnOnce(&mut MlsGroup) -> Result<CommitMessageBundle, MlsError>,
    ) -> Result<CommitOut, MlsError> {
        let mut group = self.load(name)?;
        if group.pending_commit().is_some() {
            // An earlier attempt the server never confirmed: it is superseded by this one.
            group
                .clear_pending_commit(self.provider.storage())
                .map_err(protocol)?;
        }
        let bundle = build(&mut group)?;
        let epoch = group
            .pending_commit()
            .map(|c| c.epoch().as_u64())
            .ok_or_else(|| MlsError::State("commit was not staged".into()))?;
        let (commit, welcome, info) = bundle.into_messages();
        Ok(CommitOut {
            group: name.to_owned(),
            commit: out_bytes(&commit)?,
            welcome: welcome.as_ref().map(out_bytes).transpose()?,
            group_info: info
                .as_ref()
                .map(out_bytes)
                .transpose()?
                .ok_or_else(|| MlsError::State("commit without GroupInfo".into()))?,
            epoch,
        })
    }

    fn stage(
        &self,
        group: &mut MlsGroup,
        adds: Vec<KeyPackage>,
        removals: Vec<LeafNodeIndex>,
    ) -> Result<CommitMessageBundle, MlsError> {
        group
            .commit_builder()
            .propose_adds(adds)
            .propose_removals(removals)
            .force_self_update(true)
            .load_psks(self.provider.storage())
            .map_err(protocol)?
            .create_group_info(true)
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(protocol)?
            .stage_commit(&self.provider)
            .map_err(protocol)
    }

    /// A commit adding the devices whose KeyPackages are given.
    pub fn add(&self, name: &str, key_packages: &[Vec<u8>]) -> Result<CommitOut, MlsError> {
        let packages = key_packages
            .iter()
            .map(|bytes| {
                KeyPackageIn::tls_deserialize_exact(bytes.as_slice())
                    .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))?
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(name, |group| self.stage(group, packages, Vec::new()))
    }

    /// A commit removing `members`.
    pub fn remove(&self, name: &str, members: &[MemberRef]) -> Result<CommitOut, MlsError> {
        self.commit(name, |group| {
            let leaves = members
                .iter()
                .map(|m| Self::leaf_of(group, m))
                .collect::<Result<Vec<_>, _>>()?;
            self.stage(group, Vec::new(), leaves)
        })
    }

    /// A commit that only refreshes this device's leaf (post-compromise security, catching up).
    pub fn self_update(&self, name: &str) -> Result<CommitOut, MlsError> {
        self.commit(name, |group| self.stage(group, Vec::new(), Vec::new()))
    }

    /// The delivery service accepted this device's pending commit: apply it.
    pub fn confirm_commit(&self, name: &str) -> Result<u64, MlsError> {
        let mut group = self.load(name)?;
        group
            .merge_pending_commit(&self.provider)
            .map_err(protocol)?;
        Ok(group.epoch().as_u64())
    }

    /// The delivery service refused the pending commit (another won the epoch): drop it.
    pub fn discard_commit(&self, name: &str) -> Result<(), MlsError> {
        let mut group = self.load(name)?;
        group
            .clear_pending_commit(self.provider.storage())
            .map_err(protocol)
    }

    /// Joins a group from a Welcome; returns the group's name and epoch. A
    /// device removed earlier and now added again replaces its old state.
    pub fn join(&self, welcome: &[u8]) -> Result<(String, u64), MlsError> {
        let MlsMessageBodyIn::Welcome(welcome) = parse_message(welcome)?.extract() else {
            return Err(MlsError::Malformed("not a Welcome".into()));
        };
        let processed = ProcessedWelcome::new_from_welcome(&self.provider, &join_config(), welcome)
            .map_err(protocol)?;
        let name = group_name(processed.unverified_group_info().group_id())?;
        if self.has_group(&name)? {
            return Err(MlsError::Protocol(format!("already a member of {name}")));
        }
        self.forget_group(&name)?;
        let group = processed
            .into_staged_welcome(&self.provider, None)
            .map_err(protocol)?
            .into_group(&self.provider)
            .map_err(protocol)?;
        Ok((name, group.epoch().as_u64()))
    }

    /// Joins (or rejoins, replacing this device's old state of the group) by an
    /// external commit from the group's latest GroupInfo. Unlike other commits
    /// it is applied at once ([`MlsDevice::confirm_commit`] is then a no-op).
    pub fn join_external(&self, group_info: &[u8]) -> Result<CommitOut, MlsError> {
        let info = verifiable_group_info(group_info)?;
        let name = group_name(info.group_id())?;
        self.forget_group(&name)?;
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .build_group(&self.provider, info, self.credential.clone())
            .map_err(protocol)?
            .load_psks(self.provider.storage())
            .map_err(protocol)?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(protocol)?
            .finalize(&self.provider)
            .map_err(protocol)?;
        // openmls applies an external commit at once; if the service refuses
        // it, the next rejoin replaces this state again.
        let epoch = group.epoch().as_u64();
        let (commit, _, info) = bundle.into_messages();
        let group_info = match info {
            Some(info) => out_bytes(&info)?,
            None => return Err(MlsError::State("external commit without GroupInfo".into())),
        };
        Ok(CommitOut {
            group: name,
            commit: out_bytes(&commit)?,
            welcome: None,
            group_info,
            epoch,
        })
    }

    /// Encrypts an application message for the group's current epoch.
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        let mut group = self.load(name)?;
        let message = group
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(protocol)?;
        out_bytes(&message)
    }

    /// Processes a commit or application message of one of this device's groups.
    pub fn process(&self, bytes: &[u8]) -> Result<Incoming, MlsError> {
        let message = parse_message(bytes)?
            .try_into_protocol_message()
            .map_err(|_| MlsError::Malformed("not a group message".into()))?;
        let name = group_name(message.group_id())?;
        let mut group = self.load(&name)?;
        let own = group.epoch().as_u64();
        let message_epoch = message.epoch().as_u64();
        if message_epoch > own {
            return Err(MlsError::WrongEpoch {
                message: message_epoch,
                own,
            });
        }
        let processed = group
            .process_message(&self.provider, message)
            .map_err(|e| match e {
                ProcessMessageError::ValidationError(ValidationError::WrongEpoch) => {
                    MlsError::WrongEpoch {
                        message: message_epoch,
                        own,
                    }
                }
                e => protocol(e),
            })?;
        let sender = member_of(processed.credential())?;
        let epoch = processed.epoch().as_u64();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Ok(Incoming::Application {
                group: name,
                epoch,
                sender,
                plaintext: app.into_bytes(),
            }),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let removed_self = staged.self_removed();
                group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(protocol)?;
                Ok(Incoming::Commit {
                    group: name,
                    epoch: group.epoch().as_u64(),
                    sender,
                    removed_self,
                })
            }
            _ => Err(MlsError::Malformed(
                "neither an application message nor a commit (Atlas groups use no standalone proposals)"
                    .into(),
            )),
        }
    }
}

pub(crate) fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let (head, tail) = rest.split_first_chunk::<8>()?;
    *rest = tail;
    Some(u64::from_be_bytes(*head))
}

pub(crate) fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(take_u64(rest)?).ok()?;
    if rest.len() < len {
        return None;
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Some(head)
}
