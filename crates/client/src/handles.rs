//! Focused views of a [`Client`], one per area of its API:
//! `client.messages().send_text(…)`, `client.groups().create(…)`. A handle
//! borrows the client and derefs to it, so the areas share one device state
//! (account, sessions, transport) without one type carrying every method.
use crate::client::Client;

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $accessor:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name<'a> {
            client: &'a Client,
        }

        impl std::ops::Deref for $name<'_> {
            type Target = Client;
            fn deref(&self) -> &Client {
                self.client
            }
        }

        impl Client {
            $(#[$doc])*
            pub fn $accessor(&self) -> $name<'_> {
                $name { client: self }
            }
        }
    };
}

handle!(
    /// One-time and fallback keys: publishing, rotation, the consistency check, backups.
    Keys,
    keys
);
handle!(
    /// 1:1 messages: send, receive in order, acknowledge, the outbox.
    Messages,
    messages
);
handle!(
    /// Repair of 1:1 messages: resend requests and Olm session resets.
    Repair,
    repair
);
handle!(
    /// Signed delivery receipts of this user's messages.
    Receipts,
    receipts
);
handle!(
    /// MLS groups: KeyPackages, membership, messages, recovery.
    Groups,
    groups
);
