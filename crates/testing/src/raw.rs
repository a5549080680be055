//! A device that builds its own requests, to send what a real client never would.
use crate::*;
use atlas_crypto::dpop::create_proof;
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::olm::OlmAccount;
use atlas_proto::api::TokenResponse;
use atlas_proto::{DeviceId, UserId};
use atlas_server::Clock;
use std::sync::Arc;
use time::OffsetDateTime;

/// A device that crafts its own requests.
pub struct RawDevice {
    pub base: String,
    pub http: reqwest::Client,
    pub account: OlmAccount,
    pub dpop: JwsSigner,
    /// The user's identity key (this raw device is the user's first).
    pub identity: atlas_crypto::identity::UserIdentity,
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// The server's clock, when the test moves it (proofs and grants must follow).
    pub clock: Option<Arc<TestClock>>,
    /// The public origin proofs name (`htu`) when it is not `base`: replicas
    /// behind one load balancer, reached here at their own addresses.
    pub public: Option<String>,
}

pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl RawDevice {
    pub async fn register(base: &str, user: &str) -> Self {
        let account = OlmAccount::new();
        let user_id = UserId::new(user).unwrap();
        let device_id = DeviceId::new("RAW").unwrap();
        let http = atlas_client::http_client().unwrap();
        let identity = atlas_crypto::identity::UserIdentity::generate();
        let keys = account.device_keys(&user_id, &device_id);
        let request = identity.first_device_registration(&user_id, keys);
        let r = http
            .post(format!("{base}/users"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        Self {
            base: base.to_owned(),
            http,
            account,
            dpop: JwsSigner::generate_ed25519(),
            identity,
            user_id,
            device_id,
            clock: None,
            public: None,
        }
    }

    /// Names `public` in its proofs (replicas behind one origin) while
    /// talking to `base`, which the test may point at any replica.
    pub fn behind(mut self, public: &str) -> Self {
        self.public = Some(public.to_owned());
        self
    }

    fn origin(&self) -> &str {
        self.public.as_deref().unwrap_or(&self.base)
    }

    /// Opens the device's push socket (`GET /ws?after=0`) at `base`.
    pub async fn push_socket(&self, token: &str) -> atlas_client::PushSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/ws?after=0", self.base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        let proof = self.proof("GET", "/ws", Some(token), self.now());
        let headers = request.headers_mut();
        headers.insert("authorization", format!("DPoP {token}").parse().unwrap());
        headers.insert("dpop", proof.parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }

    /// Sends `count` messages to one device that nothing can decrypt (no
    /// session was ever made); their message ids.
    pub async fn send_junk(&self, user: &str, device: &str, count: usize) -> Vec<String> {
        let token = self.token().await;
        let mut ids = Vec::new();
        for i in 0..count {
            let (status, body) = self
                .call(
                    &token,
                    "POST",
                    "/messages",
                    Some(serde_json::json!({
                        "recipient_id": user,
                        "client_message_id": format!("garbage-{user}-{i}"),
                        "envelopes": [{"device_id": device, "msg_type": 1, "body": "R2FyYmFnZSBjaXBoZXJ0ZXh0IGZyb20gbWFsbG9yeQ"}],
                    })),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            ids.push(body["message_id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// Reports every message in `ids` as a `KeyNotFound` failure; how many the server recorded.
    pub async fn report_failures(&self, ids: &[String]) -> u64 {
        let token = self.token().await;
        let reports: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"message_id": id, "outcome": "failure", "code": "KeyNotFound"}))
            .collect();
        let (status, answer) = self
            .call(
                &token,
                "POST",
                "/reports/decryption",
                Some(serde_json::json!({ "reports": reports })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["recorded"].as_u64().unwrap()
    }

    /// Dates proofs and grants by `clock` instead of the system clock.
    pub fn following(mut self, clock: &Arc<TestClock>) -> Self {
        self.clock = Some(clock.clone());
        self
    }

    fn now(&self) -> i64 {
        self.clock.as_ref().map_or_else(now, |c| c.unix())
    }

    pub fn proof(&self, method: &str, path: &str, token: Option<&str>, iat: i64) -> String {
        create_proof(
            &self.dpop,
            method,
            &format!("{}{path}", self.origin()),
            iat,
            token,
            None,
        )
    }

    pub async fn token_with(&self, dpop: &JwsSigner) -> TokenResponse {
        let iat = self.now();
        let jkt = dpop.public_jwk().thumbprint();
        let grant = self
            .account
            .token_grant(&self.user_id, &self.device_id, &jkt, iat);
        let proof = create_proof(
            dpop,
            "POST",
            &format!("{}/token", self.origin()),
            iat,
            None,
            None,
        );
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .header("DPoP", proof)
            .json(&grant)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    pub async fn token(&self) -> String {
        self.token_with(&self.dpop).await.access_token
    }

    /// A request with explicit Authorization and DPoP headers; returns status, headers and JSON body.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<String>,
        proof: Option<String>,
        body: Option<Vec<u8>>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        self.try_send_raw(method, path, authorization, proof, body)
            .await
            .unwrap()
    }

    /// [`RawDevice::send_raw`] that reports a failed connection (a killed
    /// server, say) instead of failing the test.
    pub async fn try_send_raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<String>,
        proof: Option<String>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, reqwest::header::HeaderMap, serde_json::Value), reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        if let Some(p) = proof {
            request = request.header("DPoP", p);
        }
        if let Some(b) = body {
            request = request.header("Content-Type", "application/json").body(b);
        }
        let r = request.send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await?;
        Ok((
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }

    /// `POST /token` with this device's DPoP key and `grant` as the body.
    pub async fn post_token(&self, grant: serde_json::Value) -> (u16, serde_json::Value) {
        let proof = self.proof("POST", "/token", None, self.now());
        let (status, _, json) = self
            .send_raw(
                "POST",
                "/token",
                None,
                Some(proof),
                Some(grant.to_string().into_bytes()),
            )
            .await;
        (status, json)
    }

    /// An unauthenticated JSON POST.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (status, _, json) = self
            .send_raw(
                "POST",
                path,
                None,
                None,
                Some(body.to_string().into_bytes()),
            )
            .await;
        (status, json)
    }

    /// The ids of every message in this device's queue, in order (all pages).
    pub async fn queued_ids(&self, token: &str) -> Vec<String> {
        let (mut listed, mut after) = (Vec::new(), 0);
        loop {
            let path = format!("/messages?after={after}&limit=500");
            let (status, page) = self.call(token, "GET", &path, None).await;
            assert_eq!(status, 200, "{page}");
            for m in page["messages"].as_array().unwrap() {
                listed.push(m["message_id"].as_str().unwrap().to_owned());
            }
            after = page["next_after"].as_u64().unwrap();
            if !page["more"].as_bool().unwrap() {
                return listed;
            }
        }
    }

    /// An authenticated request with a fresh, correct proof.
    pub async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.try_call(token, method, path, body).await.unwrap()
    }

    /// [`RawDevice::call`] that reports a failed connection instead of failing the test.
    pub async fn try_call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), reqwest::Error> {
        let proof = self.proof(
            method,
            path.split('?').next().unwrap(),
            Some(token),
            self.now(),
        );
        let (status, _, json) = self
            .try_send_raw(
                method,
                path,
                Some(format!("DPoP {token}")),
                Some(proof),
                body.map(|b| b.to_string().into_bytes()),
            )
            .await?;
        Ok((status, json))
    }
}

/// The body of a valid first-device registration of `user` (a new identity key certifying `device`).
pub fn registration(user: &str, device: &str) -> serde_json::Value {
    let keys = fresh_keys(user, device);
    let identity = atlas_crypto::identity::UserIdentity::generate();
    let certificate = identity.certify(&UserId::new(user).unwrap(), &keys);
    serde_json::json!({
        "user_id": user,
        "device": keys,
        "identity_key": identity.public_key(),
        "certificate": certificate,
    })
}

/// A new, validly self-signed key bundle for `user`'s device `device`.
pub fn fresh_keys(user: &str, device: &str) -> atlas_proto::api::DeviceKeys {
    OlmAccount::new().device_keys(&UserId::new(user).unwrap(), &DeviceId::new(device).unwrap())
}
