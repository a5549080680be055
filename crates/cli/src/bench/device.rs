//! A bench device: a user of its own with one device, registered over the
//! public API like any client, holding a DPoP key and an access token.
use super::servers::Servers;
use anyhow::{Context, bail};
use atlas_crypto::dpop::create_proof;
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::olm::OlmAccount;
use atlas_proto::api::TokenResponse;
use atlas_proto::{DeviceId, UserId};
use std::time::Duration;

/// One registered device.
pub struct BenchDevice {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub dpop: JwsSigner,
    account: OlmAccount,
}

impl BenchDevice {
    /// Registers `user` with a new identity key and one device, waiting out
    /// the server's per-address registration limit (its `Retry-After`).
    pub async fn register(
        http: &reqwest::Client,
        server: &str,
        user: &str,
        waiting: impl Fn(u64),
    ) -> anyhow::Result<Self> {
        let account = OlmAccount::new();
        let user_id = UserId::new(user)?;
        let device_id = DeviceId::new("BENCH")?;
        let identity = atlas_crypto::identity::UserIdentity::generate();
        let keys = account.device_keys(&user_id, &device_id);
        let request = identity.first_device_registration(&user_id, keys);
        loop {
            let answer = http
                .post(format!("{server}/users"))
                .json(&request)
                .send()
                .await
                .with_context(|| format!("cannot reach {server}"))?;
            match answer.status().as_u16() {
                201 => break,
                429 => {
                    let wait = retry_after(&answer).unwrap_or(1);
                    waiting(wait);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                status => bail!("registering {user}: {status} {}", answer.text().await?),
            }
        }
        Ok(Self {
            user_id,
            device_id,
            dpop: JwsSigner::generate_ed25519(),
            account,
        })
    }

    /// A fresh access token, bound to this device's DPoP key, waiting out the
    /// server's per-address token limit.
    pub async fn token(
        &self,
        http: &reqwest::Client,
        servers: &Servers,
        at: usize,
        waiting: impl Fn(u64),
    ) -> anyhow::Result<String> {
        let iat = time::OffsetDateTime::now_utc().unix_timestamp();
        let jkt = self.dpop.public_jwk().thumbprint();
        let grant = self
            .account
            .token_grant(&self.user_id, &self.device_id, &jkt, iat);
        let url = format!("{}/token", servers.url(at));
        let named = servers.proof_url(at, "/token");
        loop {
            let proof = create_proof(&self.dpop, "POST", &named, iat, None, None);
            let answer = http
                .post(&url)
                .header("DPoP", proof)
                .json(&grant)
                .send()
                .await?;
            match answer.status().as_u16() {
                200 => return Ok(answer.json::<TokenResponse>().await?.access_token),
                429 => {
                    let wait = retry_after(&answer).unwrap_or(1);
                    waiting(wait);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                _ => bail!("token for {}: {}", self.user_id, answer.text().await?),
            }
        }
    }
}

/// A device's push socket, as `GET /ws` upgrades it.
pub use atlas_client::PushSocket as Socket;

impl BenchDevice {
    /// Opens the device's push socket (`GET /ws?after=0`) at replica `at`, with a fresh proof.
    pub async fn open_socket(
        &self,
        servers: &Servers,
        at: usize,
        token: &str,
    ) -> anyhow::Result<Socket> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let iat = time::OffsetDateTime::now_utc().unix_timestamp();
        let named = servers.proof_url(at, "/ws");
        let proof = create_proof(&self.dpop, "GET", &named, iat, Some(token), None);
        let server = servers.url(at);
        let mut request =
            format!("{}/ws?after=0", server.replacen("http", "ws", 1)).into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("authorization", format!("DPoP {token}").parse()?);
        headers.insert("dpop", proof.parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("opening the socket of {}", self.user_id))?;
        Ok(socket)
    }
}

/// Seconds from a `Retry-After` header.
fn retry_after(answer: &reqwest::Response) -> Option<u64> {
    answer
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
