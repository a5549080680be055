//! Opening a client profile (one device's local state) for a command.
use anyhow::Context;
use atlas_client::Client;
use std::path::Path;

/// Opens the profile in `profile_dir`, or says to register it first.
pub(crate) async fn open(profile_dir: &Path) -> anyhow::Result<Client> {
    Client::open(profile_dir).await.with_context(|| {
        format!(
            "opening profile {} (register it first)",
            profile_dir.display()
        )
    })
}
