//! HTTP to the server with DPoP: every request carries a fresh proof bound to
//! the access token; tokens are obtained with the device's signature and
//! renewed with the refresh token; server nonces are picked up and retried.
use crate::error::ClientError;
use atlas_crypto::dpop::create_proof;
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::olm::OlmAccount;
use atlas_proto::api::{TokenRequest, TokenResponse};
use atlas_proto::clock::Clock;
use atlas_proto::{DeviceId, ErrorBody, ErrorCode, UserId};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Renew the access token this many seconds before it expires.
const RENEW_MARGIN: i64 = 30;

#[derive(Default)]
struct Tokens {
    access: Option<(String, i64)>,
    refresh: Option<String>,
}

/// Authenticated HTTP transport of one device.
pub(crate) struct Transport {
    http: reqwest::Client,
    pub(crate) base: String,
    /// The DPoP key; replaced when rotated or after a re-key.
    dpop: std::sync::RwLock<Arc<JwsSigner>>,
    /// A copy of the account used only to sign token requests (replaced after a re-key).
    device_signer: std::sync::Mutex<OlmAccount>,
    user_id: UserId,
    device_id: DeviceId,
    tokens: tokio::sync::Mutex<Tokens>,
    /// Proof and token times come from here.
    pub(crate) clock: Arc<dyn Clock>,
    nonce: std::sync::Mutex<Option<String>>,
}

/// An HTTP client; installs the ring TLS provider once.
pub fn http_client() -> Result<reqwest::Client, ClientError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

/// Turns a non-success response into a `ClientError`.
pub(crate) async fn refusal(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api { status, body },
        Err(_) => ClientError::Protocol {
            status,
            detail: text.chars().take(200).collect(),
        },
    }
}

impl Transport {
    /// The DPoP key's algorithm.
    pub(crate) fn dpop_alg(&self) -> &'static str {
        self.dpop_key().alg()
    }

    pub(crate) fn new(
        base: String,
        dpop: JwsSigner,
        device_signer: OlmAccount,
        user_id: UserId,
        device_id: DeviceId,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            clock,
            http: http_client()?,
            base: base.trim_end_matches('/').to_owned(),
            dpop: std::sync::RwLock::new(Arc::new(dpop)),
            device_signer: std::sync::Mutex::new(device_signer),
            user_id,
            device_id,
            tokens: Default::default(),
            nonce: Default::default(),
        })
    }

    fn remember_nonce(&self, response: &reqwest::Response) {
        if let Some(nonce) = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
        {
            *self.nonce.lock().unwrap_or_else(|p| p.into_inner()) = Some(nonce.to_owned());
        }
    }

    /// A DPoP proof for a request (with `ath` when a token is given).
    pub(crate) fn proof(&self, method: &Method, path: &str, token: Option<&str>) -> String {
        self.proof_for_url(method, &format!("{}{path}", self.base), token)
    }

    /// A DPoP proof naming the whole `url` as its `htu`.
    pub(crate) fn proof_for_url(&self, method: &Method, url: &str, token: Option<&str>) -> String {
        let nonce = self.nonce.lock().unwrap_or_else(|p| p.into_inner()).clone();
        create_proof(
            &self.dpop_key(),
            method.as_str(),
            url,
            self.clock.unix(),
            token,
            nonce.as_deref(),
        )
    }

    /// The DPoP key's RFC 7638 thumbprint (`cnf.jkt` of the tokens bound to it).
    pub(crate) fn dpop_thumbprint(&self) -> String {
        self.dpop_key().public_jwk().thumbprint()
    }

    fn dpop_key(&self) -> Arc<JwsSigner> {
        self.dpop.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs token requests with `account` from now on (after a re-key).
    pub(crate) fn replace_device_signer(&self, account: OlmAccount) {
        *self.device_signer.lock().unwrap_or_else(|p| p.into_inner()) = account;
    }

    /// Binds from now on to `dpop`: tokens bound to the old key are dropped
    /// (its refresh token too: a refresh keeps the old binding).
    pub(crate) async fn replace_dpop_key(&self, dpop: JwsSigner) {
        *self.dpop.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(dpop);
        let mut tokens = self.tokens.lock().await;
        tokens.access = None;
        tokens.refresh = None;
    }

    async fn request_token(&self, grant: TokenRequest) -> Result<TokenResponse, ClientError> {
        for _ in 0..2 {
            let proof = self.proof(&Method::POST, "/token", None);
            let response = self
                .http
                .post(format!("{}/token", self.base))
                .header("DPoP", proof)
                .json(&grant)
                .send()
                .await?;
            self.remember_nonce(&response);
            if response.status().is_success() {
                return Ok(response.json().await?);
            }
            let error = refusal(response).await;
            if error.code() != Some(ErrorCode::UseDpopNonce) {
                return Err(error);
            }
        }
        Err(ClientError::Protocol {
            status: 401,
            detail: "server keeps refusing the DPoP nonce".into(),
        })
    }

    /// A valid access token, obtained or renewed as needed.
    pub(crate) async fn access_token(&self) -> Result<String, ClientError> {
        let mut tokens = self.tokens.lock().await;
        if let Some((token, exp)) = &tokens.access
            && *exp > self.clock.unix() + RENEW_MARGIN
        {
            return Ok(token.clone());
        }
        let renewed = match tokens.refresh.take() {
            Some(refresh_token) => self
                .request_token(TokenRequest::RefreshToken { refresh_token })
                .await
                .ok(),
            None => None,
        };
        let response = match renewed {
            Some(r) => r,
            None => {
                let iat = self.clock.unix();
                let jkt = self.dpop_thumbprint();
                let grant = self
                    .device_signer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .token_grant(&self.user_id, &self.device_id, &jkt, iat);
                self.request_token(grant).await?
            }
        };
        tokens.access = Some((
            response.access_token.clone(),
            self.clock.unix() + response.expires_in as i64,
        ));
        tokens.refresh = Some(response.refresh_token);
        Ok(response.access_token)
    }

    async fn forget_access_token(&self) {
        self.tokens.lock().await.access = None;
    }

    /// An authenticated request answered with JSON.
    pub(crate) async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, query, body).await?;
        response.json().await.map_err(ClientError::from)
    }

    /// An authenticated request whose answer has no body (204).
    pub(crate) async fn call_no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.send(method, path, "", body).await.map(drop)
    }

    /// An authenticated request; retries once for a nonce challenge or a rejected token.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut last_error = None;
        for _ in 0..3 {
            let token = self.access_token().await?;
            let proof = self.proof(&method, path, Some(&token));
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}{query}", self.base))
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", proof);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await?;
            self.remember_nonce(&response);
            if response.status().is_success() {
                return Ok(response);
            }
            let retryable = response.status() == StatusCode::UNAUTHORIZED;
            let error = refusal(response).await;
            match error.code() {
                Some(ErrorCode::UseDpopNonce) if retryable => {}
                Some(ErrorCode::InvalidToken) if retryable => self.forget_access_token().await,
                _ => return Err(error),
            }
            last_error = Some(error);
        }
        Err(last_error.unwrap_or(ClientError::Protocol {
            status: 401,
            detail: "authentication keeps failing".into(),
        }))
    }
}
