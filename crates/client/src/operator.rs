//! The admin API as an operator calls it: `Authorization: Bearer <operator token>`.
use crate::error::ClientError;
use crate::transport::{http_client, refusal};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An operator's connection to one server.
pub struct OperatorClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl OperatorClient {
    /// A client for `server` with an operator token.
    pub fn new(server: &str, token: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client()?,
            base: server.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
        })
    }

    /// One admin request without a body; the JSON answer, or the server's refusal.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        self.call_with::<(), T>(method, path, None).await
    }

    /// One admin request with an optional JSON body.
    pub async fn call_with<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        Ok(response.json().await?)
    }
}
