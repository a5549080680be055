//! Live delivery over `GET /ws`: messages are processed as they arrive, in
//! sequence order (a gap is filled from the server's queue first).
use crate::client::Client;
use crate::error::ClientError;
use crate::groups::GroupReceived;
use crate::inbound::Received;
use atlas_proto::ErrorCode;
use atlas_proto::api::PushEvent;
use futures_util::StreamExt;
use reqwest::Method;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A device's push socket, as `GET /ws` upgrades it.
pub type PushSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Client {
    /// Opens this device's push socket (`GET /ws`), resuming after the last
    /// message it processed; for callers that read the socket themselves.
    pub async fn push_socket(&self) -> Result<PushSocket, ClientError> {
        let after = self.messages().last_seq().await?;
        let token = self.transport.access_token().await?;
        let proof = self.transport.proof(&Method::GET, "/ws", Some(&token));
        let url = format!(
            "{}/ws?after={after}",
            self.server().replacen("http", "ws", 1)
        );
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Push(e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(
            "authorization",
            format!("DPoP {token}")
                .parse()
                .map_err(|_| ClientError::Push("bad token header".into()))?,
        );
        headers.insert(
            "dpop",
            proof
                .parse()
                .map_err(|_| ClientError::Push("bad proof header".into()))?,
        );
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            // A refused upgrade carries the server's error body: keep its code.
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                match response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                {
                    Some(body) => Err(ClientError::Api { status, body }),
                    None => Err(ClientError::Push(format!("upgrade refused ({status})"))),
                }
            }
            Err(e) => Err(ClientError::Push(e.to_string())),
        }
    }

    /// Receives pushed messages until the server closes the socket (e.g. when
    /// the access token expires) or `stop` resolves; calls `on_message` for each.
    pub async fn listen(
        &self,
        on_message: impl FnMut(Received),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        self.listen_all(on_message, None::<fn(GroupReceived)>, stop)
            .await
    }

    /// [`Client::listen`], and with `on_group`, group activity too: each nudge
    /// makes this device sync its groups and report what it read.
    pub async fn listen_all(
        &self,
        mut on_message: impl FnMut(Received),
        mut on_group: Option<impl FnMut(GroupReceived)>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        let mut socket = match self.push_socket().await {
            Err(e) if e.code() == Some(ErrorCode::RekeyRequired) => {
                self.rekey()
                    .await?
                    .drained
                    .into_iter()
                    .for_each(&mut on_message);
                self.push_socket().await?
            }
            socket => socket?,
        };
        tokio::pin!(stop);
        loop {
            let frame = tokio::select! {
                frame = socket.next() => frame,
                () = &mut stop => return Ok(()),
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                // Reconnecting cannot help a removed device: say so rather than fail on the token.
                Some(Ok(Message::Close(Some(close)))) if close.reason == "device_revoked" => {
                    return Err(ClientError::Push(
                        "this device was removed from its account (device_revoked)".into(),
                    ));
                }
                // Re-keyed here; the caller reconnects with the new keys.
                Some(Ok(Message::Close(Some(close)))) if close.reason == "rekey_required" => {
                    self.rekey()
                        .await?
                        .drained
                        .into_iter()
                        .for_each(&mut on_message);
                    return Ok(());
                }
                // An expired or revoked token, a server stopping: the caller reconnects.
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::Push(e.to_string())),
            };
            match serde_json::from_str::<PushEvent>(&text) {
                Ok(PushEvent::Message(message)) => {
                    for received in self.messages().process(vec![message]).await? {
                        on_message(received);
                    }
                }
                Ok(PushEvent::Group(_)) => {
                    if let Some(on_group) = on_group.as_mut() {
                        for received in self.groups().sync_all().await? {
                            on_group(received);
                        }
                    }
                }
                Ok(PushEvent::SessionReset(_)) => {
                    self.repair().apply_session_resets().await?;
                }
                Ok(PushEvent::Resend(_)) => {
                    if let Err(e) = self.repair().answer_resends().await {
                        tracing::warn!(error = %e, "resend requests not answered yet");
                    }
                }
                Err(_) => return Err(ClientError::Push("server pushed an unknown event".into())),
            }
        }
    }
}
