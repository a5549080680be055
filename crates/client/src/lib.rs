//! The Atlas client SDK: a device's Olm account and sessions, DPoP-authenticated
//! transport, local state encrypted at rest, and the send/receive logic
//! (automatic session creation, in-order processing, an outbox for resends).
#![forbid(unsafe_code)]

mod backup;
mod client;
mod error;
mod groups;
mod handles;
mod hygiene;
mod identity;
mod inbound;
mod local;
mod messages;
pub mod operator;
mod payload;
mod push;
mod receipts;
mod rekey;
mod repair;
mod reports;
mod transport;

pub use backup::Restored;
pub use client::{Client, FALLBACK_GRACE};
pub use error::ClientError;
pub use groups::{Caught, GroupReceived};
pub use handles::{Groups, Keys, Messages, Receipts, Repair};
pub use hygiene::{FALLBACK_ROTATION, KeyMaintenance};
pub use identity::{IdentityPin, SafetyNumber, UntrustedDevice};
pub use inbound::Received;
pub use payload::Payload;
pub use push::PushSocket;
pub use rekey::Rekeyed;
pub use transport::http_client;
