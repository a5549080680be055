//! Re-keying after an operator revoked this device's identity keys (`atlas
//! emergency revoke-keys identity`): the server answers `rekey_required` until
//! the device publishes a new Olm account and a new user identity key that
//! certifies it. The SDK does it on its next sync or push, by itself:
//!
//! 1. the new account and identity key are made and kept aside, so an attempt
//!    whose answer is lost resumes with the same keys;
//! 2. `POST /devices/rekey` publishes them; from then on the device signs in
//!    with the new key, under a new DPoP key;
//! 3. the queue is drained: messages sent before the revocation still decrypt
//!    on the old sessions (pre-key messages with the old account, kept for it);
//! 4. the old sessions are retired, so a message still sent on one is refused
//!    and asked for again (the server told their peers to reset them);
//! 5. new one-time keys are published; the groups are read with the old MLS
//!    key (the next group sync returns what was read), then a new MLS signature
//!    key and KeyPackages are published and every group is rejoined by
//!    external commit with the new key.
use crate::client::Client;
use crate::error::ClientError;
use crate::inbound::Received;
use atlas_crypto::identity::UserIdentity;
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::mls::MlsDevice;
use atlas_crypto::olm::OlmAccount;
use atlas_proto::ErrorCode;
use atlas_proto::api::{CertificateClaim, RegisterResponse, RekeyRequest};
use reqwest::Method;

/// Local key of the new account while a re-key is under way.
const PENDING_ACCOUNT: &str = "rekey/account";
/// Local key of the new identity key's seed while a re-key is under way.
const PENDING_IDENTITY: &str = "rekey/identity";
/// Local key of the account before the re-key, kept until the queue is drained.
pub(crate) const RETIRED_ACCOUNT: &str = "rekey/retired_account";

/// What a re-key did.
#[derive(Debug, Clone)]
pub struct Rekeyed {
    /// Messages queued before the revocation, read with the old sessions.
    pub drained: Vec<Received>,
    /// Olm sessions retired.
    pub sessions_retired: usize,
    /// Groups rejoined with the new MLS key.
    pub groups_rejoined: Vec<String>,
    /// Groups not rejoined, with the reason.
    pub groups_failed: Vec<(String, String)>,
}

impl Client {
    /// The new account and identity key of a re-key under way, or new ones
    /// (kept aside before use); true when resumed.
    async fn pending_keys(&self) -> Result<(OlmAccount, UserIdentity, bool), ClientError> {
        let account = self.local.get_text(PENDING_ACCOUNT).await?;
        let seed = self.local.get(PENDING_IDENTITY).await?;
        if let (Some(account), Some(seed)) = (account, seed) {
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| ClientError::State("pending identity key is corrupted".into()))?;
            return Ok((
                OlmAccount::from_pickle(&account, &self.local.key)?,
                UserIdentity::from_seed(&seed),
                true,
            ));
        }
        let (account, identity) = (OlmAccount::new(), UserIdentity::generate());
        self.local.put(PENDING_IDENTITY, &identity.seed()).await?;
        self.local
            .put(PENDING_ACCOUNT, account.pickle(&self.local.key).as_bytes())
            .await?;
        Ok((account, identity, false))
    }

    fn copy_of(&self, account: &OlmAccount) -> Result<OlmAccount, ClientError> {
        Ok(OlmAccount::from_pickle(
            &account.pickle(&self.local.key),
            &self.local.key,
        )?)
    }

    /// Publishes the new keys; `Ok` once the server holds them.
    async fn publish_new_keys(
        &self,
        account: &OlmAccount,
        request: &RekeyRequest,
        resumed: bool,
    ) -> Result<(), ClientError> {
        let sent = self
            .transport
            .call::<_, RegisterResponse>(Method::POST, "/devices/rekey", "", Some(request))
            .await;
        match sent {
            Ok(_) => Ok(()),
            // An earlier attempt's answer was lost: the server may hold the new
            // keys already, in which case only the new key signs in.
            Err(e)
                if resumed
                    && matches!(
                        e.code(),
                        Some(ErrorCode::InvalidGrant | ErrorCode::InvalidRequest)
                    ) =>
            {
                self.transport.replace_device_signer(self.copy_of(account)?);
                self.transport
                    .replace_dpop_key(JwsSigner::generate_ed25519())
                    .await;
                let claim: CertificateClaim = self
                    .transport
                    .call::<(), _>(Method::POST, "/devices/certificate/claim", "", None)
                    .await?;
                match claim.certificate.as_deref() == Some(request.certificate.as_str()) {
                    true => Ok(()),
                    false => Err(e),
                }
            }
            // Asked to re-key, yet there is nothing to re-key: another holder
            // of this device's old keys did it first.
            Err(e) if e.code() == Some(ErrorCode::InvalidRequest) => {
                self.local.delete(PENDING_ACCOUNT).await?;
                self.local.delete(PENDING_IDENTITY).await?;
                Err(ClientError::State(format!(
                    "this device's keys were revoked, but something else holding them re-keyed it first ({e}): \
                     have the operator remove this device (atlas admin device revoke) and register it again"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Re-keys this device after an operator revoked its identity keys (see the
    /// module documentation); returns what it read and did on the way.
    pub async fn rekey(&self) -> Result<Rekeyed, ClientError> {
        let mut account = self.account.lock().await;
        let (new_account, identity, resumed) = self.pending_keys().await?;
        let keys = new_account.device_keys(self.user_id(), self.device_id());
        let request = RekeyRequest {
            identity_key: identity.public_key(),
            certificate: identity.certify(self.user_id(), &keys),
            device: keys,
        };
        self.publish_new_keys(&new_account, &request, resumed)
            .await?;
        tracing::warn!(device = %self.member_id(), "identity keys revoked by the server's operator: re-keyed");
        // The server holds the new keys: switch to them, keeping the old account
        // for pre-key messages still queued.
        self.local
            .put(RETIRED_ACCOUNT, account.pickle(&self.local.key).as_bytes())
            .await?;
        self.local
            .put("account", new_account.pickle(&self.local.key).as_bytes())
            .await?;
        self.store_identity(&identity).await?;
        self.local.forget_published().await?;
        self.local.delete("fallback_rotated_at").await?;
        self.local.delete(PENDING_ACCOUNT).await?;
        self.local.delete(PENDING_IDENTITY).await?;
        self.transport
            .replace_device_signer(self.copy_of(&new_account)?);
        *account = new_account;
        drop(account);
        // The server refuses tokens granted in the second of the re-key (one
        // may have gone to another holder of the old key): sign in after it.
        let into_second = self.clock().now().millisecond();
        tokio::time::sleep(std::time::Duration::from_millis(
            1_010 - u64::from(into_second.min(1_000)),
        ))
        .await;
        self.rotate_dpop_key().await?;

        let drained = self.messages().read_queue().await?;
        // Every session now is of the old keys: the new one-time keys are not published yet.
        let old_sessions = self.local.all_sessions().await?;
        for (session_id, ..) in &old_sessions {
            self.local.retire_session(session_id).await?;
        }
        self.local.delete(RETIRED_ACCOUNT).await?;

        self.keys().top_up(true).await?;
        // What the groups hold for the old MLS key is read before it goes.
        let group_read = self.groups().sync_all().await?;
        self.read_while_rekeying
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(group_read);
        let mls = MlsDevice::new(self.user_id(), self.device_id())?;
        self.local.put("mls", &mls.snapshot()?).await?;
        *self.mls.lock().await = Some(mls);
        self.groups().top_up_key_packages().await?;
        let mut rekeyed = Rekeyed {
            drained,
            sessions_retired: old_sessions.len(),
            groups_rejoined: Vec::new(),
            groups_failed: Vec::new(),
        };
        for group in self.groups().list().await? {
            match self.rejoin(&group).await {
                Ok(_) => rekeyed.groups_rejoined.push(group),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "group not rejoined with the new key");
                    rekeyed.groups_failed.push((group, e.to_string()));
                }
            }
        }
        Ok(rekeyed)
    }

    /// The account before a re-key, while messages queued for it may remain.
    pub(crate) async fn retired_account(&self) -> Result<Option<OlmAccount>, ClientError> {
        match self.local.get_text(RETIRED_ACCOUNT).await? {
            Some(pickle) => Ok(Some(OlmAccount::from_pickle(&pickle, &self.local.key)?)),
            None => Ok(None),
        }
    }
}
