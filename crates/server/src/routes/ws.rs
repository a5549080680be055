//! `GET /ws?after=N`: the device's backlog after `N`, then every new message as
//! it is stored. The socket closes when the access token expires; the client
//! reconnects with a fresh token and its last processed sequence number.
use crate::auth::DeviceAuth;
use crate::disconnects::CLOSE_CODE;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::fanout::Live;
use crate::limits::Limits;
use crate::state::AppState;
use atlas_proto::api::InboxMessage;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

/// Bytes read from a socket at once (tungstenite's default is 128 KiB).
const READ_BUFFER: usize = 4096;
/// Largest frame or message a client may send (64 MiB by default).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Query of `GET /ws`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    /// Last sequence number the device has processed.
    #[serde(default)]
    pub after: u64,
}

/// Upgrades an authenticated request to a push socket.
pub async fn connect(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiQuery(q): ApiQuery<WsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let slot = Limits::open_socket(&state, &auth.user_id, &auth.device_id)?;
    // A client only sends pongs and a close here: small buffers and frames keep
    // an idle socket cheap (10,000 of them) and refuse a flood.
    let ws = ws
        .read_buffer_size(READ_BUFFER)
        .max_frame_size(MAX_CLIENT_FRAME)
        .max_message_size(MAX_CLIENT_FRAME);
    Ok(ws.on_upgrade(move |socket| async move {
        push(state, auth, q.after, socket).await;
        drop(slot);
    }))
}

/// [`atlas_proto::api::PushEvent::Message`] serialised from a shared message, without copying it.
#[derive(serde::Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    message: &'a InboxMessage,
}

async fn send(socket: &mut WebSocket, message: &InboxMessage) -> bool {
    match serde_json::to_string(&MessageFrame {
        kind: "message",
        message,
    }) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// Sends stored messages after `last`; returns the new `last`, or `None` if the socket failed.
async fn catch_up(
    state: &AppState,
    auth: &DeviceAuth,
    socket: &mut WebSocket,
    mut last: u64,
) -> Option<u64> {
    loop {
        let page = state
            .stores
            .messages
            .inbox(&auth.user_id, &auth.device_id, last, 100)
            .await
            .ok()?;
        let done = page.len() < 100;
        for message in page {
            last = message.seq;
            if !send(socket, &message).await {
                return None;
            }
        }
        if done {
            return Some(last);
        }
    }
}

/// Tells the fan-out when a connection's receivers are gone.
struct Subscribed<'a>(&'a AppState, &'a DeviceAuth);

impl Drop for Subscribed<'_> {
    fn drop(&mut self) {
        self.0
            .fanout
            .unsubscribe(&self.1.user_id, &self.1.device_id);
    }
}

async fn push(state: AppState, auth: DeviceAuth, after: u64, mut socket: WebSocket) {
    // Subscribe before reading the backlog so nothing stored in between is missed.
    let mut live = state.fanout.subscribe(&auth.user_id, &auth.device_id).await;
    let _subscribed = Subscribed(&state, &auth);
    let mut notices = state
        .fanout
        .subscribe_notices(&auth.user_id, &auth.device_id);
    // Before the backlog too: a revocation while it is read still closes the socket.
    let mut disconnect = state.disconnects.watch(&auth.user_id, &auth.device_id);
    let Some(mut last) = catch_up(&state, &auth, &mut socket, after).await else {
        return;
    };
    let expires_in = (auth.expires_at - state.clock.unix()).max(0) as u64;
    let expiry = tokio::time::sleep(std::time::Duration::from_secs(expires_in));
    tokio::pin!(expiry);
    let mut shutdown = state.shutdown.clone();
    // Pings at a third of the idle limit: a live client answers well within it,
    // a vanished one (no FIN, e.g. a phone that lost its network) is dropped.
    let idle_limit = state.config.websocket_idle;
    let mut ping = tokio::time::interval(idle_limit / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(Live::Message(message)) if message.seq <= last => {}
                Ok(Live::Message(message)) if message.seq == last + 1 => {
                    last = message.seq;
                    if !send(&mut socket, &message).await { return }
                }
                // A gap, a lagging channel, or stored elsewhere: the store has everything in order.
                Ok(Live::Message(_) | Live::Wake) | Err(RecvError::Lagged(_)) => {
                    let Some(l) = catch_up(&state, &auth, &mut socket, last).await else { return };
                    last = l;
                }
                Err(RecvError::Closed) => return,
            },
            notice = notices.recv() => match notice {
                Ok(notice) => {
                    let Ok(text) = serde_json::to_string(notice.as_ref()) else { return };
                    if socket.send(Message::Text(text.into())).await.is_err() { return }
                }
                // Missed nudges only delay a fetch the client makes anyway on reconnect.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => heard = tokio::time::Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() >= idle_limit {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() { return }
            },
            // Revoked: the device, or every token. The client cannot resume with what it holds.
            reason = disconnect.closed() => {
                let frame = CloseFrame { code: CLOSE_CODE, reason: reason.code().into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            // The token expired or the server stops: the client reconnects and resumes from its last sequence number.
            () = &mut expiry => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            _ = async { shutdown.wait_for(|stopping| *stopping).await.is_ok() } => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(connect))
}
