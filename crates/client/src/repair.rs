//! Repair of 1:1 messages: answering resend requests from the outbox,
//! asking for resends, and Olm session resets.
use crate::error::ClientError;
use crate::handles::Repair;
use atlas_proto::api::*;
use atlas_proto::e2ee::FailureCode;
use atlas_proto::repair::{
    ResendRequests, ResendUnavailable, SessionResetResponse, SessionResets, SessionResetsAck,
};
use atlas_proto::{ClientMessageId, MessageId, SessionId};
use reqwest::Method;

impl Repair<'_> {
    /// Answers the resend requests addressed to this device: re-encrypts each
    /// message from the outbox for the device that asked (on a new session
    /// unless the failure left the session intact), or tells the server the
    /// plaintext is gone. Returns how many messages were resent.
    pub async fn answer_resends(&self) -> Result<usize, ClientError> {
        let asked: ResendRequests = self
            .transport
            .call::<(), _>(Method::GET, "/resend-requests", "", None)
            .await?;
        let mut resent = 0;
        for request in asked.requests {
            let Some((_, text)) = self.local.sent(&request.message_id).await? else {
                let gone = ResendUnavailable {
                    detail: "no longer in the sending device's outbox".into(),
                };
                let path = format!("/resend-requests/{}/unavailable", request.request_id);
                self.transport
                    .call_no_content(Method::POST, &path, Some(&gone))
                    .await?;
                continue;
            };
            let recipient = request.recipient_id.clone();
            let device = request.recipient_device_id.to_string();
            if self
                .local
                .peer(recipient.as_str(), &device)
                .await?
                .is_none()
            {
                self.refresh_peer_devices(&recipient).await?;
            }
            // A lost or skipped message key leaves the session usable; anything else may not.
            let fresh = !matches!(
                request.reason,
                Some(FailureCode::MissingSkippedKey | FailureCode::DuplicateMessage)
            );
            let account = self.account.lock().await;
            let envelopes = self
                .seal(&account, &recipient, &[device], fresh, &text)
                .await?;
            drop(account);
            let resend = SendRequest {
                recipient_id: recipient,
                client_message_id: ClientMessageId::new(format!("resend-{}", request.request_id))
                    .map_err(|e| ClientError::State(e.to_string()))?,
                encryption_algorithm: OLM_ALGORITHM.into(),
                envelopes,
                resend_of: Some(request.message_id.clone()),
                untrusted_devices: Vec::new(),
            };
            let _: SendResponse = self
                .transport
                .call(Method::POST, "/messages", "", Some(&resend))
                .await?;
            tracing::info!(message_id = %request.message_id, fresh_session = fresh, "resent on request");
            resent += 1;
        }
        Ok(resent)
    }

    /// Retires the sessions whose reset this device has not applied yet (the
    /// next message to or from that peer starts a new session); returns how many.
    pub async fn apply_session_resets(&self) -> Result<usize, ClientError> {
        let unseen: SessionResets = self
            .transport
            .call::<(), _>(Method::GET, "/sessions/resets", "", None)
            .await?;
        if unseen.resets.is_empty() {
            return Ok(0);
        }
        let _account = self.account.lock().await;
        let mut session_ids = Vec::new();
        for reset in unseen.resets {
            self.local
                .retire_session(reset.session_id.std_form().as_str())
                .await?;
            tracing::info!(session_id = %reset.session_id, peer = %reset.peer, by = %reset.requested_by, "olm session retired");
            session_ids.push(reset.session_id);
        }
        let count = session_ids.len();
        self.transport
            .call_no_content(
                Method::POST,
                "/sessions/resets/ack",
                Some(&SessionResetsAck { session_ids }),
            )
            .await?;
        Ok(count)
    }

    /// Resets an Olm session of this device (its id in either base64 form).
    pub async fn reset_session(
        &self,
        session_id: &SessionId,
    ) -> Result<SessionResetResponse, ClientError> {
        let id = session_id.url_form();
        let answer = self
            .transport
            .call::<(), _>(Method::POST, &format!("/sessions/{id}/reset"), "", None)
            .await?;
        self.repair().apply_session_resets().await?;
        Ok(answer)
    }

    /// Asks the sender of a message this device could not read to resend it.
    pub async fn request_resend(
        &self,
        message_id: &MessageId,
    ) -> Result<ResendRequests, ClientError> {
        self.transport
            .call::<(), _>(
                Method::POST,
                &format!("/messages/{message_id}/request-resend"),
                "",
                None,
            )
            .await
    }
}
