//! What travels inside the ciphertext. Sender and recipient are repeated
//! inside, so a server that relabels an envelope is detected on decryption.
use atlas_proto::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// The plaintext of a 1:1 message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// Content type, `text` for now.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub body: String,
    /// Sending user.
    pub sender: UserId,
    /// Sending device.
    pub sender_device: DeviceId,
    /// Recipient user.
    pub recipient: UserId,
    /// Recipient device.
    pub recipient_device: DeviceId,
}
