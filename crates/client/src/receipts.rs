//! The signed receipts of this user's messages.
use crate::error::ClientError;
use crate::handles::Receipts;
use atlas_proto::MessageId;
use atlas_proto::receipt::ReceiptsResponse;
use reqwest::Method;

impl Receipts<'_> {
    /// The latest signed receipts of a message this user sent or received.
    pub async fn latest(&self, message_id: &MessageId) -> Result<ReceiptsResponse, ClientError> {
        let path = format!("/receipts/{message_id}");
        self.transport
            .call::<(), _>(Method::GET, &path, "", None)
            .await
    }

    /// Has the server sign this user's sent message's receipts again with its current key.
    pub async fn reissue(&self, message_id: &MessageId) -> Result<ReceiptsResponse, ClientError> {
        let path = format!("/receipts/{message_id}/reissue");
        self.transport
            .call::<(), _>(Method::POST, &path, "", None)
            .await
    }
}
