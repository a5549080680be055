//! Decryption outcome reports: after processing, the device tells the server
//! what decrypted and what did not (codes and timings, never content).
use crate::client::Client;
use crate::error::ClientError;
use atlas_proto::e2ee::{
    DecryptionReport, MAX_REPORTS_PER_REQUEST, ReportsRequest, ReportsResponse,
};
use reqwest::Method;

impl Client {
    /// Sends outcome reports. Best effort: a report that cannot be delivered is
    /// logged and dropped, never a reason to fail the sync that produced it.
    pub(crate) async fn report(&self, reports: Vec<DecryptionReport>) {
        for chunk in reports.chunks(MAX_REPORTS_PER_REQUEST) {
            let request = ReportsRequest {
                reports: chunk.to_vec(),
            };
            let sent: Result<ReportsResponse, ClientError> = self
                .transport
                .call(Method::POST, "/reports/decryption", "", Some(&request))
                .await;
            match sent {
                Ok(answer) if !answer.rejected.is_empty() => {
                    tracing::warn!(rejected = ?answer.rejected, "server refused some decryption reports");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "decryption reports not delivered"),
            }
        }
    }
}
