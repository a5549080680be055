//! 1:1 messages: sending to every device of the recipient, receiving in
//! order with automatic session creation, acknowledging, the outbox.
use crate::client::Undecryptable;
use crate::error::ClientError;
use crate::handles::Messages;
use crate::inbound::{Received, followup};
use atlas_proto::api::*;
use atlas_proto::{ClientMessageId, ErrorCode, UserId};
use reqwest::Method;

impl Messages<'_> {
    /// Encrypts `text` for every device of `recipient` and sends it; returns the server's answer.
    pub async fn send_text(
        &self,
        recipient: &UserId,
        text: &str,
    ) -> Result<SendResponse, ClientError> {
        let account = self.account.lock().await;
        let client_message_id = ClientMessageId::new(atlas_crypto::random_id())
            .map_err(|e| ClientError::State(e.to_string()))?;
        let mut devices = self.local.peer_devices(recipient.as_str()).await?;
        if devices.is_empty() {
            devices = self.refresh_peer_devices(recipient).await?;
        }
        for attempt in 0..3 {
            let untrusted = self.untrusted_devices(recipient).await?;
            let envelopes = match self.seal(&account, recipient, &devices, false, text).await {
                // Keys that are not the ones known here: the device re-keyed
                // (or the server lies); the device list says which, and a
                // changed identity key stops the send there.
                Err(ClientError::UntrustedKeys(_)) if attempt == 0 => {
                    devices = self.refresh_peer_devices(recipient).await?;
                    continue;
                }
                // No keys handed out for any device (revoked, say): ask again.
                Ok(sealed) if sealed.is_empty() && attempt == 0 => {
                    devices = self.refresh_peer_devices(recipient).await?;
                    continue;
                }
                sealed => sealed?,
            };
            let request = SendRequest {
                recipient_id: recipient.clone(),
                client_message_id: client_message_id.clone(),
                encryption_algorithm: OLM_ALGORITHM.into(),
                envelopes,
                resend_of: None,
                untrusted_devices: untrusted.into_iter().map(|u| u.device_id).collect(),
            };
            match self
                .transport
                .call::<_, SendResponse>(Method::POST, "/messages", "", Some(&request))
                .await
            {
                Ok(sent) => {
                    self.local
                        .remember_sent(&sent.message_id, recipient.as_str(), text)
                        .await?;
                    return Ok(sent);
                }
                Err(e) if e.code() == Some(ErrorCode::DeviceListMismatch) => {
                    devices = self.refresh_peer_devices(recipient).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol {
            status: 409,
            detail: "recipient's device list keeps changing".into(),
        })
    }

    /// The text of a message this device sent, while it is in the outbox.
    pub async fn sent_text(&self, message_id: &str) -> Result<Option<String>, ClientError> {
        Ok(self.local.sent(message_id).await?.map(|(_, text)| text))
    }

    /// Highest sequence number processed on this device.
    pub async fn last_seq(&self) -> Result<u64, ClientError> {
        Ok(self
            .local
            .get_text("last_seq")
            .await?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// Processes messages in sequence order (fetching any gap first), acks them, and returns them.
    pub async fn process(
        &self,
        mut messages: Vec<InboxMessage>,
    ) -> Result<Vec<Received>, ClientError> {
        messages.sort_by_key(|m| m.seq);
        let mut last = self.messages().last_seq().await?;
        if messages.first().is_some_and(|m| m.seq > last + 1) {
            // A gap: the missing messages are still queued at the server, fetch them first.
            return self.messages().sync().await;
        }
        let mut account = self.account.lock().await;
        let mut out = Vec::new();
        let mut created_inbound = false;
        let mut interrupted = None;
        let start = last;
        for message in messages.into_iter().filter(|m| m.seq > start) {
            let result = match self.decrypt(&mut account, &message).await {
                Ok((text, inbound)) => {
                    created_inbound |= inbound;
                    Ok(text)
                }
                Err(Undecryptable::Failed(error)) => {
                    tracing::warn!(message_id = %message.message_id, sender = %message.sender_id, error = %error, "decrypt error");
                    Err(error)
                }
                Err(Undecryptable::Transient(e)) => {
                    // Stop here without acknowledging this message: it is processed again on the next sync.
                    interrupted = Some(e);
                    break;
                }
            };
            last = message.seq;
            out.push(Received {
                seq: message.seq,
                message_id: message.message_id,
                sender_id: message.sender_id,
                sender_device_id: message.sender_device_id,
                created_at: message.created_at,
                text: result.as_ref().ok().cloned(),
                error: result.err(),
                resend_of: message.resend_of,
            });
        }
        drop(account);
        if !out.is_empty() {
            self.local
                .put("last_seq", last.to_string().as_bytes())
                .await?;
            let _: AckResponse = self
                .transport
                .call(
                    Method::POST,
                    "/messages/ack",
                    "",
                    Some(&AckRequest { up_to_seq: last }),
                )
                .await?;
        }
        let plan = followup(&out, self.clock().now());
        self.report(plan.reports).await;
        if plan.check_keys
            && let Err(e) = self.keys().check(true).await
        {
            tracing::warn!(error = %e, "key consistency check failed");
        }
        for message_id in &plan.ask_resend {
            self.ask_for_resend(message_id).await;
        }
        if let Some(e) = interrupted {
            return Err(e);
        }
        if created_inbound {
            self.keys().top_up(false).await?;
        }
        Ok(out)
    }

    /// The next page of messages waiting for this device, without processing them.
    pub async fn pending(&self) -> Result<Vec<InboxMessage>, ClientError> {
        let after = self.messages().last_seq().await?;
        let page: InboxResponse = self
            .transport
            .call::<(), _>(Method::GET, "/messages", &format!("?after={after}"), None)
            .await?;
        Ok(page.messages)
    }

    /// Applies session resets, then fetches, decrypts and acknowledges
    /// everything waiting for this device, then answers resend requests. A
    /// device whose identity keys an operator revoked re-keys first
    /// ([`crate::Client::rekey`]); what it read doing so is returned too.
    pub async fn sync(&self) -> Result<Vec<Received>, ClientError> {
        match self.sync_once().await {
            Err(e) if e.code() == Some(ErrorCode::RekeyRequired) => {
                let mut read = self.rekey().await?.drained;
                read.extend(self.messages().sync_once().await?);
                Ok(read)
            }
            done => done,
        }
    }

    /// Fetches, decrypts and acknowledges everything queued for this device.
    pub(crate) async fn read_queue(&self) -> Result<Vec<Received>, ClientError> {
        let mut all = Vec::new();
        loop {
            let after = self.messages().last_seq().await?;
            let page: InboxResponse = self
                .transport
                .call::<(), _>(Method::GET, "/messages", &format!("?after={after}"), None)
                .await?;
            if page.messages.is_empty() {
                return Ok(all);
            }
            all.extend(Box::pin(self.messages().process(page.messages)).await?);
            if !page.more {
                return Ok(all);
            }
        }
    }

    async fn sync_once(&self) -> Result<Vec<Received>, ClientError> {
        // Devices linked with this device's codes are certified here.
        match self.approve_linked_devices().await {
            Ok(certified) if !certified.is_empty() => {
                tracing::info!(?certified, "certified newly linked devices");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not certify linked devices"),
        }
        self.repair().apply_session_resets().await?;
        self.maintain_keys_if_due().await;
        let all = self.messages().read_queue().await?;
        if let Err(e) = self.repair().answer_resends().await {
            tracing::warn!(error = %e, "resend requests not answered yet");
        }
        Ok(all)
    }
}
