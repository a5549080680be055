//! MLS groups for a device: its MLS state (sealed in the profile after every
//! change), KeyPackage top-up, commits retried on top of the winner when
//! another commit takes the epoch first, and the group logs processed in order.
use crate::client::Client;
use crate::error::ClientError;
use crate::handles::Groups;
use atlas_crypto::mls::{CommitOut, Incoming, MlsDevice, MlsError};
use atlas_proto::e2ee::{DecryptFailure, FailureCode};
use atlas_proto::mls::*;
use atlas_proto::timestamp::Timestamp;
use atlas_proto::{DeviceId, ErrorCode, GroupId, MemberRef, UserId, b64};
use reqwest::Method;
use serde::Serialize;

/// Keep at least this many KeyPackages published.
const MIN_KEY_PACKAGES: u64 = 5;
/// How many to publish when topping up.
const KEY_PACKAGE_BATCH: usize = 10;
/// Attempts of a commit (or a message) that keeps losing its epoch.
const COMMIT_ATTEMPTS: u32 = 8;
/// The first back-off after a lost epoch is up to this long; it doubles per attempt.
const FIRST_BACK_OFF_MS: u64 = 20;

/// Waits a random while after losing an epoch, longer each time, so members racing for
/// the same epoch stop colliding (without it, equal retries of equal peers collide again).
async fn back_off(attempt: u32) {
    let ceiling = FIRST_BACK_OFF_MS << attempt.min(5);
    let jitter = u64::from(u16::from_le_bytes(atlas_crypto::random_bytes::<2>())) % ceiling;
    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
}

/// One processed entry of a group log.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReceived {
    /// The group.
    pub group: GroupId,
    /// Position in the group's log.
    pub seq: u64,
    /// The sender (`USER_ID/DEVICE_ID`).
    pub sender: String,
    /// The epoch it was sent in.
    pub epoch: u64,
    /// `application` or `commit`.
    pub kind: String,
    /// The text of an application message that decrypted.
    pub text: Option<String>,
    /// What a commit did, e.g. "epoch 3".
    pub event: Option<String>,
    /// Why it could not be processed.
    pub error: Option<DecryptFailure>,
    /// RFC 3339 time the server stored it.
    pub created_at: Timestamp,
}

/// A group operation's answer, and the log entries it read first to act in
/// the group's current epoch: show them as a sync's, or they are never seen.
#[derive(Debug)]
pub struct Caught<T> {
    /// The server's answer.
    pub answer: T,
    /// What catching up read, in log order.
    pub read: Vec<GroupReceived>,
}

fn cursor_key(group: &str) -> String {
    format!("group_seen/{group}")
}

fn welcome_key(group: &str) -> String {
    format!("welcome_seen/{group}")
}

impl Client {
    /// This device as a group member: `USER_ID/DEVICE_ID`.
    pub fn member_id(&self) -> String {
        format!("{}/{}", self.user_id(), self.device_id())
    }

    /// Runs `f` on this device's MLS state (created on first use) and stores the result.
    async fn with_mls<T>(
        &self,
        f: impl FnOnce(&MlsDevice) -> Result<T, MlsError>,
    ) -> Result<T, ClientError> {
        self.on_mls(f, true).await
    }

    /// Runs `f`, which only reads, on this device's MLS state: nothing to store.
    async fn peek_mls<T>(
        &self,
        f: impl FnOnce(&MlsDevice) -> Result<T, MlsError>,
    ) -> Result<T, ClientError> {
        self.on_mls(f, false).await
    }

    async fn on_mls<T>(
        &self,
        f: impl FnOnce(&MlsDevice) -> Result<T, MlsError>,
        changes: bool,
    ) -> Result<T, ClientError> {
        let mut guard = self.mls.lock().await;
        let mut created = false;
        if guard.is_none() {
            *guard = Some(match self.local.get("mls").await? {
                Some(snapshot) => MlsDevice::restore(&snapshot)?,
                None => {
                    created = true;
                    MlsDevice::new(self.user_id(), self.device_id())?
                }
            });
        }
        let device = guard
            .as_ref()
            .ok_or_else(|| ClientError::State("MLS state missing".into()))?;
        let result = f(device);
        // Saved after failures too: openmls may have consumed secrets either way.
        if changes || created {
            self.local.put("mls", &device.snapshot()?).await?;
        }
        Ok(result?)
    }

    /// Refuses a KeyPackage unless it names the claimed device and its MLS
    /// signature key carries that device's signature by its certified Ed25519
    /// key: otherwise the server could add a member of its own making.
    async fn check_bound(
        &self,
        user: &UserId,
        claimed: &ClaimedKeyPackage,
        bytes: &[u8],
    ) -> Result<(), ClientError> {
        let device = claimed.device_id.as_str();
        let refuse = || ClientError::UntrustedKeys(format!("{user}/{device} (its MLS KeyPackage)"));
        let checked = atlas_crypto::mls::check_key_package(bytes).map_err(|_| refuse())?;
        let expected = MemberRef {
            user_id: user.clone(),
            device_id: Some(claimed.device_id.clone()),
        };
        let Some((ed25519, _)) = self.local.peer(user.as_str(), device).await? else {
            return Err(refuse());
        };
        let binding = claimed
            .signature_key_binding
            .as_deref()
            .ok_or_else(refuse)?;
        let statement =
            atlas_crypto::mls::signature_key_statement(&expected, &checked.signature_key);
        if checked.member != expected
            || atlas_crypto::device::verify(&ed25519, statement.as_bytes(), binding).is_err()
        {
            return Err(refuse());
        }
        Ok(())
    }

    /// Posts a commit; when another commit won the epoch, processes the log and rebuilds it.
    async fn commit_with_retry(
        &self,
        name: &str,
        build: impl Fn(&MlsDevice) -> Result<CommitOut, MlsError>,
    ) -> Result<Caught<CommitResponse>, ClientError> {
        let mut read = self.groups().sync(name).await?;
        let mut last_error = None;
        for attempt in 0..COMMIT_ATTEMPTS {
            let out = self.with_mls(&build).await?;
            let request = CommitRequest {
                commit: b64::encode_std(&out.commit),
                group_info: b64::encode_std(&out.group_info),
                welcome: out.welcome.as_ref().map(b64::encode_std),
            };
            let path = format!("/groups/{name}/commits");
            match self
                .transport
                .call::<_, CommitResponse>(Method::POST, &path, "", Some(&request))
                .await
            {
                Ok(accepted) => {
                    let epoch = self.with_mls(|mls| mls.confirm_commit(name)).await?;
                    self.acknowledge(name, epoch).await?;
                    return Ok(Caught {
                        answer: accepted,
                        read,
                    });
                }
                Err(e) if e.code() == Some(ErrorCode::EpochConflict) => {
                    self.with_mls(|mls| mls.discard_commit(name)).await?;
                    back_off(attempt).await;
                    read.extend(self.groups().sync(name).await?);
                    last_error = Some(e);
                }
                Err(e) => {
                    self.with_mls(|mls| mls.discard_commit(name)).await?;
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::Protocol {
            status: 409,
            detail: "the group's epoch keeps moving".into(),
        }))
    }

    async fn acknowledge(&self, name: &str, epoch: u64) -> Result<(), ClientError> {
        let _: GroupView = self
            .transport
            .call(
                Method::POST,
                &format!("/groups/{name}/ack"),
                "",
                Some(&EpochAck { epoch }),
            )
            .await?;
        if let Ok(mut acknowledged) = self.acknowledged.lock() {
            acknowledged.insert(name.to_owned(), epoch);
        }
        Ok(())
    }

    /// [`Client::group_sync`], first going back to the commit that created
    /// `from_epoch` (a device whose cursor ran ahead of its MLS state).
    async fn group_sync_from(
        &self,
        name: &str,
        mut from_epoch: Option<u64>,
    ) -> Result<Vec<GroupReceived>, ClientError> {
        // A message of an epoch ahead of this device means its state is behind its
        // cursor: replay the stored commits from its own epoch once, then re-read.
        let may_catch_up = from_epoch.is_none();
        let mut out = Vec::new();
        loop {
            let seen: u64 = self
                .local
                .get_text(&cursor_key(name))
                .await?
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let query = match from_epoch.take() {
                Some(epoch) => format!("?after={seen}&from_epoch={epoch}"),
                None => format!("?after={seen}"),
            };
            let page: GroupLogResponse = self
                .transport
                .call::<(), _>(
                    Method::GET,
                    &format!("/groups/{name}/messages"),
                    &query,
                    None,
                )
                .await?;
            if page.entries.is_empty() {
                break;
            }
            for e in page.entries {
                if let Some(received) = self.process_entry(&e).await? {
                    out.push(received);
                }
                self.local
                    .put(&cursor_key(name), e.seq.to_string().as_bytes())
                    .await?;
            }
        }
        let ahead = out.iter().any(|r| {
            r.error
                .as_ref()
                .is_some_and(|e| e.code == FailureCode::EpochInFuture)
        });
        if may_catch_up && ahead && self.peek_mls(|mls| mls.has_group(name)).await? {
            let own = self.peek_mls(|mls| mls.epoch(name)).await?;
            tracing::info!(
                group = name,
                epoch = own,
                "behind the group log: replaying stored commits"
            );
            let again = Box::pin(self.group_sync_from(name, Some(own + 1))).await?;
            let failed: std::collections::HashSet<u64> = out
                .iter()
                .filter(|r| r.error.is_some())
                .map(|r| r.seq)
                .collect();
            let known: std::collections::HashSet<u64> = out.iter().map(|r| r.seq).collect();
            let repaired: std::collections::HashSet<u64> = again
                .iter()
                .filter(|r| r.error.is_none())
                .map(|r| r.seq)
                .collect();
            out.retain(|r| !(r.error.is_some() && repaired.contains(&r.seq)));
            out.extend(again.into_iter().filter(|r| {
                repaired.contains(&r.seq) && (failed.contains(&r.seq) || !known.contains(&r.seq))
            }));
            out.sort_by_key(|r| r.seq);
            return Ok(out);
        }
        if self.peek_mls(|mls| mls.has_group(name)).await? {
            let epoch = self.peek_mls(|mls| mls.epoch(name)).await?;
            // The server keeps the highest epoch acknowledged: once is enough.
            let acknowledged = self
                .acknowledged
                .lock()
                .is_ok_and(|a| a.get(name) == Some(&epoch));
            if !acknowledged {
                self.acknowledge_once(name, epoch).await?;
            }
        }
        Ok(out)
    }

    /// Acknowledges `epoch` after a sync; a device the server no longer counts
    /// in is not an error here.
    async fn acknowledge_once(&self, name: &str, epoch: u64) -> Result<(), ClientError> {
        match self.acknowledge(name, epoch).await {
            // The server no longer counts this device in (removed, or rolled back past its add).
            Err(e) if e.code() == Some(ErrorCode::NotAMember) => {
                tracing::warn!(
                    group = name,
                    "this device is not a member of the group on the server"
                );
                Ok(())
            }
            other => other,
        }
    }

    async fn process_entry(&self, e: &GroupLogEntry) -> Result<Option<GroupReceived>, ClientError> {
        let mine = e.sender_id == self.member_id();
        let body = b64::decode_std_lenient(&e.body).map_err(|_| {
            ClientError::State("server sent a group message that is not base64".into())
        })?;
        let name = e.group_id.clone();
        let outcome = self
            .with_mls(|mls| {
                if mine {
                    // Our own commit that we never heard back about: it won, apply it.
                    if e.kind == "commit" && mls.epoch(&name)? + 1 == e.epoch {
                        return mls.confirm_commit(&name).map(|_| None);
                    }
                    return Ok(None);
                }
                mls.process(&body).map(Some)
            })
            .await;
        let mut received = GroupReceived {
            group: e.group_id.clone(),
            seq: e.seq,
            sender: e.sender_id.clone(),
            epoch: e.epoch,
            kind: e.kind.clone(),
            text: None,
            event: None,
            error: None,
            created_at: e.created_at,
        };
        match outcome {
            Ok(None) => return Ok(None),
            Ok(Some(Incoming::Application { plaintext, .. })) => {
                received.text = Some(String::from_utf8_lossy(&plaintext).into_owned());
            }
            Ok(Some(Incoming::Commit {
                epoch,
                removed_self,
                ..
            })) => {
                received.event = Some(if removed_self {
                    format!("removed this device (epoch {epoch})")
                } else {
                    format!("epoch {epoch}")
                });
            }
            Err(ClientError::Mls(MlsError::WrongEpoch { message, own })) => {
                let code = if message < own {
                    FailureCode::EpochTooOld
                } else {
                    FailureCode::EpochInFuture
                };
                received.error = Some(DecryptFailure::new(
                    code,
                    format!("message of epoch {message}, device in epoch {own}"),
                ));
            }
            // The group's key schedule and this device's disagree.
            Err(ClientError::Mls(e)) => {
                received.error = Some(DecryptFailure::new(
                    FailureCode::RatchetDesync,
                    e.to_string(),
                ));
            }
            Err(e) => return Err(e),
        }
        if let Some(error) = &received.error {
            tracing::warn!(group = %received.group, seq = received.seq, %error, "group decrypt error");
        }
        Ok(Some(received))
    }

    /// Replays the stored commits from this device's own epoch on, then self-updates.
    async fn catch_up_and_update(
        &self,
        name: &str,
    ) -> Result<(String, Vec<GroupReceived>), ClientError> {
        let from = self.peek_mls(|mls| mls.epoch(name)).await?;
        let mut readable = self.group_sync_from(name, Some(from + 1)).await?;
        let caught_up = self.peek_mls(|mls| mls.epoch(name)).await?;
        let updated = self.groups().update(name).await?;
        let outcome = format!(
            "caught up from epoch {from} to {caught_up}, self-update created epoch {}",
            updated.answer.epoch
        );
        readable.extend(updated.read);
        Ok((outcome, readable))
    }

    /// Rejoins by external commit from the latest GroupInfo, replacing this device's state of the group.
    pub(crate) async fn rejoin(&self, name: &str) -> Result<String, ClientError> {
        let mut last_error = None;
        for attempt in 0..COMMIT_ATTEMPTS {
            let info: GroupInfoResponse = self
                .transport
                .call::<(), _>(Method::GET, &format!("/groups/{name}/group-info"), "", None)
                .await?;
            let info = b64::decode_std_lenient(&info.group_info).map_err(|_| {
                ClientError::State("server sent a GroupInfo that is not base64".into())
            })?;
            let out = self.with_mls(|mls| mls.join_external(&info)).await?;
            let request = CommitRequest {
                commit: b64::encode_std(&out.commit),
                group_info: b64::encode_std(&out.group_info),
                welcome: None,
            };
            match self
                .transport
                .call::<_, CommitResponse>(
                    Method::POST,
                    &format!("/groups/{name}/commits"),
                    "",
                    Some(&request),
                )
                .await
            {
                Ok(accepted) => {
                    self.local
                        .put(&cursor_key(name), accepted.seq.to_string().as_bytes())
                        .await?;
                    self.acknowledge(name, accepted.epoch).await?;
                    return Ok(format!(
                        "rejoined by external commit at epoch {}",
                        accepted.epoch
                    ));
                }
                Err(e) if e.code() == Some(ErrorCode::EpochConflict) => {
                    back_off(attempt).await;
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(ClientError::Protocol {
            status: 409,
            detail: "the group's epoch keeps moving".into(),
        }))
    }
}

impl Groups<'_> {
    /// Publishes KeyPackages when the server's stock runs low (and a last-resort one if none).
    pub async fn top_up_key_packages(&self) -> Result<KeyPackageStock, ClientError> {
        let stock: KeyPackageStock = self
            .transport
            .call::<(), _>(Method::GET, "/mls/key-packages/count", "", None)
            .await?;
        if stock.available >= MIN_KEY_PACKAGES && stock.last_resort {
            return Ok(stock);
        }
        let wanted = KEY_PACKAGE_BATCH.saturating_sub(stock.available as usize);
        let need_last_resort = !stock.last_resort;
        let (packages, last_resort) = self
            .with_mls(|mls| {
                let packages = (0..wanted)
                    .map(|_| mls.key_package(false).map(b64::encode_std))
                    .collect::<Result<Vec<_>, _>>()?;
                let last_resort = need_last_resort
                    .then(|| mls.key_package(true).map(b64::encode_std))
                    .transpose()?;
                Ok((packages, last_resort))
            })
            .await?;
        let statement = self
            .with_mls(|mls| Ok(mls.signature_key_statement()))
            .await?;
        let binding = self.account.lock().await.sign(&statement);
        let upload = KeyPackageUpload {
            key_packages: packages,
            last_resort,
            signature_key_binding: Some(binding),
        };
        self.transport
            .call(Method::POST, "/mls/key-packages", "", Some(&upload))
            .await
    }

    /// Creates a group with this device as its only member.
    pub async fn create(&self, name: &str) -> Result<GroupView, ClientError> {
        let info = self.with_mls(|mls| mls.create_group(name)).await?;
        let request = CreateGroupRequest {
            group_id: GroupId::new(name)
                .map_err(|e| ClientError::Input(format!("group name: {e}")))?,
            group_info: b64::encode_std(info),
        };
        let created = self
            .transport
            .call(Method::POST, "/groups", "", Some(&request))
            .await;
        match created {
            Ok(view) => {
                self.local.put(&cursor_key(name), b"0").await?;
                Ok(view)
            }
            Err(e) => {
                self.with_mls(|mls| mls.forget_group(name)).await?;
                Err(e)
            }
        }
    }

    /// Adds every device of `user` to the group.
    pub async fn add(
        &self,
        name: &str,
        user: &UserId,
    ) -> Result<Caught<CommitResponse>, ClientError> {
        // Only devices the user's identity key certified are added.
        let trusted = self.refresh_peer_devices(user).await?;
        let devices = trusted
            .iter()
            .map(|d| DeviceId::new(d.as_str()).map_err(|e| ClientError::State(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if devices.is_empty() {
            return Err(ClientError::NoPrekeys(format!(
                "{user} (no certified device)"
            )));
        }
        let claim = KeyPackageClaim {
            user_id: user.clone(),
            devices,
        };
        let claimed: KeyPackageClaimResponse = self
            .transport
            .call(Method::POST, "/mls/key-packages/claim", "", Some(&claim))
            .await?;
        let mut packages = Vec::new();
        for c in claimed.key_packages {
            let text = c.key_package.as_deref().ok_or_else(|| {
                ClientError::NoPrekeys(format!("{user}/{} (no KeyPackage)", c.device_id))
            })?;
            let bytes = b64::decode_std_lenient(text).map_err(|_| {
                ClientError::State("server sent a KeyPackage that is not base64".into())
            })?;
            self.check_bound(user, &c, &bytes).await?;
            packages.push(bytes);
        }
        if packages.is_empty() {
            return Err(ClientError::NoPrekeys(format!("{user} (no active device)")));
        }
        self.commit_with_retry(name, |mls| mls.add(name, &packages))
            .await
    }

    /// Removes every device of `user` from the group.
    pub async fn remove(
        &self,
        name: &str,
        user: &UserId,
    ) -> Result<Caught<CommitResponse>, ClientError> {
        self.commit_with_retry(name, |mls| {
            let devices: Vec<_> = mls
                .members(name)?
                .into_iter()
                .filter(|m| m.user_id == *user)
                .collect();
            if devices.is_empty() {
                return Err(MlsError::NotAMember(user.to_string()));
            }
            mls.remove(name, &devices)
        })
        .await
    }

    /// Refreshes this device's leaf: a new epoch that everyone must process.
    pub async fn update(&self, name: &str) -> Result<Caught<CommitResponse>, ClientError> {
        self.commit_with_retry(name, |mls| mls.self_update(name))
            .await
    }

    /// Encrypts and posts a text to the group (after catching up, so it goes
    /// out in the current epoch; again when a commit overtook it).
    pub async fn send(&self, name: &str, text: &str) -> Result<Caught<GroupLogEntry>, ClientError> {
        let mut read = Vec::new();
        let mut last_error = None;
        for attempt in 0..COMMIT_ATTEMPTS {
            if attempt > 0 {
                back_off(attempt - 1).await;
            }
            read.extend(self.groups().sync(name).await?);
            let message = self
                .with_mls(|mls| mls.encrypt(name, text.as_bytes()))
                .await?;
            let request = GroupMessageRequest {
                message: b64::encode_std(message),
            };
            let path = format!("/groups/{name}/messages");
            match self
                .transport
                .call(Method::POST, &path, "", Some(&request))
                .await
            {
                Ok(answer) => return Ok(Caught { answer, read }),
                Err(e) if e.code() == Some(ErrorCode::EpochConflict) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(ClientError::Protocol {
            status: 409,
            detail: "the group's epoch keeps moving".into(),
        }))
    }

    /// The group as the server sees it: epoch and members with their acknowledged epochs.
    pub async fn view(&self, name: &str) -> Result<GroupView, ClientError> {
        self.transport
            .call::<(), _>(Method::GET, &format!("/groups/{name}"), "", None)
            .await
    }

    /// Joins the groups this device was welcomed to; returns their names.
    pub async fn accept_welcomes(&self) -> Result<Vec<String>, ClientError> {
        let welcomes: GroupLogResponse = self
            .transport
            .call::<(), _>(Method::GET, "/groups/welcomes", "", None)
            .await?;
        let mut joined = Vec::new();
        for w in welcomes.entries {
            // Each Welcome once; a device removed and added again gets a new one.
            let accepted: u64 = self
                .local
                .get_text(&welcome_key(&w.group_id))
                .await?
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if w.seq <= accepted || self.peek_mls(|mls| mls.has_group(&w.group_id)).await? {
                continue;
            }
            let body = b64::decode_std_lenient(&w.body).map_err(|_| {
                ClientError::State("server sent a Welcome that is not base64".into())
            })?;
            let (group, epoch) = self.with_mls(|mls| mls.join(&body)).await?;
            for key in [cursor_key(&group), welcome_key(&group)] {
                self.local.put(&key, w.seq.to_string().as_bytes()).await?;
            }
            self.acknowledge(&group, epoch).await?;
            joined.push(group);
        }
        if !joined.is_empty() {
            self.groups().top_up_key_packages().await?;
        }
        Ok(joined)
    }

    /// The groups this device follows.
    pub async fn list(&self) -> Result<Vec<String>, ClientError> {
        self.local.keys_with_prefix("group_seen/").await
    }

    /// Processes a group's new log entries in order and acknowledges the epoch reached.
    pub async fn sync(&self, name: &str) -> Result<Vec<GroupReceived>, ClientError> {
        let out = self.group_sync_from(name, None).await?;
        let reports = out
            .iter()
            .filter(|r| r.kind == "application")
            .map(|r| {
                crate::inbound::outcome(
                    r.seq.to_string(),
                    Some(r.group.clone()),
                    r.created_at,
                    r.error.as_ref(),
                    self.clock().now(),
                )
            })
            .collect();
        self.report(reports).await;
        Ok(out)
    }

    /// Carries out the recovery steps operators asked of this device
    /// (`atlas mls send-update`, `atlas mls rejoin-member`) and reports each back;
    /// returns the steps and the messages that catching up made readable.
    pub async fn recovery(
        &self,
    ) -> Result<(Vec<MemberActionView>, Vec<GroupReceived>), ClientError> {
        let pending: MemberActionsResponse = self
            .transport
            .call::<(), _>(Method::GET, "/groups/actions", "", None)
            .await?;
        let mut done = Vec::new();
        let mut received = Vec::new();
        for mut action in pending.actions {
            let result =
                match action.action.as_str() {
                    "update" => self.catch_up_and_update(&action.group_id).await.map(
                        |(outcome, readable)| {
                            received.extend(readable);
                            outcome
                        },
                    ),
                    "rejoin" => self.rejoin(&action.group_id).await,
                    other => Ok(format!("unknown action {other}, ignored")),
                };
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(e) => format!("failed: {e}"),
            };
            tracing::info!(group = %action.group_id, action = %action.action, %outcome, "recovery step");
            let report = ActionDone {
                outcome: outcome.clone(),
            };
            let path = format!("/groups/actions/{}/done", action.action_id);
            self.transport
                .call_no_content(Method::POST, &path, Some(&report))
                .await?;
            action.outcome = Some(outcome);
            done.push(action);
        }
        Ok((done, received))
    }

    /// Carries out recovery steps, accepts Welcomes, then processes every followed group's log.
    pub async fn sync_all(&self) -> Result<Vec<GroupReceived>, ClientError> {
        let mut all = std::mem::take(
            &mut *self
                .read_while_rekeying
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        all.extend(self.groups().recovery().await?.1);
        self.groups().accept_welcomes().await?;
        for group in self.groups().list().await? {
            all.extend(self.groups().sync(&group).await?);
        }
        Ok(all)
    }
}
