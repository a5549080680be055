//! Key backup and restore. The device's key state (Olm account and sessions,
//! known peers, MLS state, DPoP key, published-key record, cursors) is
//! encrypted here under keys derived from the recovery passphrase and
//! uploaded as `backup-<user>-<unix-ms>`; a restore fetches the newest backup
//! at or before a date, opens it completely, and only then writes it into the
//! profile — so a wrong passphrase or a corrupted blob leaves the profile as it was.
use crate::client::{Client, Profile};
use crate::error::ClientError;
use crate::handles::Keys;
use crate::local::LocalState;
use crate::transport::{http_client, refusal};
use atlas_crypto::backup::{self, BackupError};
use atlas_crypto::olm::{OlmAccount, OlmSession};
use atlas_proto::api::{PublicKey, PublishedKey};
use atlas_proto::b64;
use atlas_proto::backup::{BackupDownload, BackupInfo, BackupList, BackupUpload};
use atlas_proto::{BackupId, DeviceId, UserId};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::path::Path;
use time::OffsetDateTime;

/// kv entries not carried in a backup: rebuilt on restore, or about this copy only.
const NOT_BACKED_UP: [&str; 3] = ["profile", "account", "keys_maintained_at"];

/// The plaintext of a backup.
#[derive(Serialize, Deserialize)]
struct KeyState {
    format: u32,
    server: String,
    user_id: UserId,
    device_id: DeviceId,
    dpop_alg: String,
    /// Key the pickles below are encrypted with (inside the sealed blob).
    pickle_key: String,
    account: String,
    sessions: Vec<(String, String, String, String)>,
    peers: Vec<(String, String, String, String)>,
    published_keys: Vec<PublishedKey>,
    /// Other local values (DPoP key, MLS state, cursors), base64url.
    values: Vec<(String, String)>,
}

fn corrupt(what: &str) -> ClientError {
    ClientError::Backup(format!("backup content is unreadable: {what}"))
}

fn backup_error(e: BackupError) -> ClientError {
    ClientError::Backup(e.to_string())
}

/// A restore's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The backup used.
    pub backup: BackupInfo,
    /// Olm sessions restored.
    pub sessions: usize,
}

impl Client {
    /// Restores the newest backup of `user_id` made at or before `at` into the
    /// profile in `profile_dir` (new or existing), then opens it.
    pub async fn restore_keys(
        profile_dir: &Path,
        server: &str,
        user_id: &UserId,
        at: OffsetDateTime,
        passphrase: &[u8],
    ) -> Result<(Self, Restored), ClientError> {
        let server = server.trim_end_matches('/');
        let http = http_client()?;
        // In UTC the time has no '+', so it goes into the query string as is.
        let at_text = atlas_proto::timestamp::rfc3339(at.to_offset(time::UtcOffset::UTC));
        let listed = http
            .get(format!("{server}/backups/{user_id}?at={at_text}"))
            .send()
            .await?;
        if !listed.status().is_success() {
            return Err(refusal(listed).await);
        }
        let listed: BackupList = listed.json().await?;
        let info = listed.backups.into_iter().next().ok_or_else(|| {
            ClientError::Backup(format!(
                "no backup of {user_id} made at or before {at_text}"
            ))
        })?;
        let keys = backup::derive_keys(&info.kdf, passphrase).map_err(backup_error)?;
        let fetched = http
            .get(format!("{server}/backups/{user_id}/{}", info.backup_id))
            .header("Authorization", format!("Backup {}", keys.download_key()))
            .send()
            .await?;
        if fetched.status() == reqwest::StatusCode::FORBIDDEN {
            return Err(backup_error(BackupError::WrongPassphraseOrCorrupted));
        }
        if !fetched.status().is_success() {
            return Err(refusal(fetched).await);
        }
        let fetched: BackupDownload = fetched.json().await?;
        let plaintext = keys
            .open(&info.backup_id, &fetched.blob)
            .map_err(backup_error)?;
        let state: KeyState =
            serde_json::from_slice(&plaintext).map_err(|_| corrupt("not a key state"))?;
        if &state.user_id != user_id {
            return Err(corrupt("made for another user"));
        }
        // Everything is read and checked before the profile is touched.
        let pickle_key: [u8; 32] = b64::decode(&state.pickle_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| corrupt("pickle key"))?;
        let account = OlmAccount::from_pickle(&state.account, &pickle_key)?;
        let mut sessions = Vec::new();
        for (id, user, device, pickle) in &state.sessions {
            sessions.push((
                id,
                user,
                device,
                OlmSession::from_pickle(pickle, &pickle_key)?,
            ));
        }
        let mut values = Vec::new();
        for (k, v) in &state.values {
            values.push((k, b64::decode(v).map_err(|_| corrupt("a stored value"))?));
        }

        let local = LocalState::open(profile_dir).await?;
        if let Some(existing) = local.get("profile").await?
            && let Ok(existing) = serde_json::from_slice::<Profile>(&existing)
            && &existing.user_id != user_id
        {
            return Err(ClientError::State(format!(
                "profile in {} belongs to {}, not {user_id}",
                profile_dir.display(),
                existing.user_id
            )));
        }
        for (k, v) in &values {
            local.put(k, v).await?;
        }
        for (id, user, device, session) in &sessions {
            local
                .save_session(user, device, id, &session.pickle(&local.key), None)
                .await?;
        }
        for (user, device, ed, curve) in &state.peers {
            local.save_peer(user, device, ed, curve).await?;
        }
        let published: Vec<(&str, PublicKey)> = state
            .published_keys
            .iter()
            .map(|k| {
                let key = PublicKey {
                    key_id: k.key_id.clone(),
                    key: k.key.clone(),
                };
                (k.key_type.as_str(), key)
            })
            .collect();
        let published: Vec<(&str, &PublicKey)> = published.iter().map(|(t, k)| (*t, k)).collect();
        local.record_published(&published).await?;
        local
            .put("account", account.pickle(&local.key).as_bytes())
            .await?;
        local.delete("keys_maintained_at").await?;
        let profile = Profile {
            server: server.to_owned(),
            user_id: state.user_id.clone(),
            device_id: state.device_id.clone(),
            dpop_alg: state.dpop_alg.clone(),
        };
        local
            .put(
                "profile",
                &serde_json::to_vec(&profile).map_err(|e| ClientError::State(e.to_string()))?,
            )
            .await?;
        drop(local);
        let client = Client::open(profile_dir).await?;
        tracing::info!(backup_id = %info.backup_id, sessions = sessions.len(), "key backup restored");
        Ok((
            client,
            Restored {
                backup: info,
                sessions: sessions.len(),
            },
        ))
    }
}

impl Keys<'_> {
    /// Encrypts this device's key state under `passphrase` and uploads it.
    pub async fn backup(&self, passphrase: &[u8]) -> Result<BackupInfo, ClientError> {
        backup::check_new_passphrase(passphrase).map_err(backup_error)?;
        let pickle_key: [u8; 32] = atlas_crypto::random_bytes();
        let state = {
            let account = self.account.lock().await;
            let mut sessions = Vec::new();
            for (id, user, device, pickle) in self.local.all_sessions().await? {
                let session = OlmSession::from_pickle(&pickle, &self.local.key)?;
                sessions.push((id, user, device, session.pickle(&pickle_key)));
            }
            let mut values = Vec::new();
            for k in self.local.keys_with_prefix("").await? {
                if NOT_BACKED_UP.contains(&k.as_str()) {
                    continue;
                }
                if let Some(v) = self.local.get(&k).await? {
                    values.push((k, b64::encode(v)));
                }
            }
            KeyState {
                format: 1,
                server: self.server().to_owned(),
                user_id: self.user_id().clone(),
                device_id: self.device_id().clone(),
                dpop_alg: self.transport.dpop_alg().to_owned(),
                pickle_key: b64::encode(pickle_key),
                account: account.pickle(&pickle_key),
                sessions,
                peers: self.local.all_peers().await?,
                published_keys: self.local.published_keys().await?,
                values,
            }
        };
        let plaintext =
            serde_json::to_vec(&state).map_err(|e| ClientError::State(e.to_string()))?;
        let now = self.clock().now();
        let backup_id = BackupId::for_user(self.user_id(), now.unix_timestamp_nanos() / 1_000_000);
        let kdf = backup::new_kdf();
        let keys = backup::derive_keys(&kdf, passphrase).map_err(backup_error)?;
        let upload = BackupUpload {
            blob: keys.seal(&backup_id, &plaintext),
            backup_id,
            kdf,
            download_verifier: keys.download_verifier(),
        };
        self.transport
            .call(Method::POST, "/backups", "", Some(&upload))
            .await
    }
}
