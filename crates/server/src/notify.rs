//! Delivers the notification outbox to Slack and PagerDuty: per destination,
//! the oldest pending notification is leased, sent, and recorded as delivered,
//! retried later (network errors, 5xx, 429 with its `Retry-After`) or failed
//! (other 4xx, or a day old) — `atlas_ops::notify` decides. Notifications are
//! written with the incident change, so a restart loses none, and a receiver
//! that hangs holds up only its own destination, never a request.
use atlas_ops::notify::{Destination, Next, Outcome, next};
use atlas_store::{Attempt, IncidentStore, NotificationRecord};
use std::sync::Arc;
use std::time::Duration;

/// Where notifications go: each destination only when configured.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// A Slack incoming-webhook URL (a secret: never stored or logged).
    pub slack_webhook_url: Option<String>,
    /// A PagerDuty Events API v2 routing key (a secret: added when sending).
    pub pagerduty_routing_key: Option<String>,
    /// The Events API v2 enqueue URL.
    pub pagerduty_events_url: String,
    /// How long a destination may take to answer before the attempt counts as failed.
    pub request_timeout: Duration,
}

/// PagerDuty's Events API v2 enqueue URL.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            slack_webhook_url: None,
            pagerduty_routing_key: None,
            pagerduty_events_url: PAGERDUTY_EVENTS_URL.into(),
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

impl NotifyConfig {
    /// The destinations configured.
    pub fn destinations(&self) -> Vec<Destination> {
        let mut out = Vec::new();
        if self.slack_webhook_url.is_some() {
            out.push(Destination::Slack);
        }
        if self.pagerduty_routing_key.is_some() {
            out.push(Destination::PagerDuty);
        }
        out
    }
}

/// How long a replica holds a notification it is sending.
const LEASE: time::Duration = time::Duration::seconds(30);
/// A request to a destination gives up after this long by default (then it is retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle destination is looked at.
const POLL: Duration = Duration::from_millis(200);

/// Runs one delivery loop per configured destination until `stop` turns true.
pub fn spawn(
    config: NotifyConfig,
    store: Arc<dyn IncidentStore>,
    clock: Arc<dyn crate::Clock>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if config.destinations().is_empty() {
        return;
    }
    // Slack and PagerDuty speak HTTPS (rustls, with ring as the client does).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(http) = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .build()
    else {
        tracing::error!("notifications disabled: no HTTP client");
        return;
    };
    let config = Arc::new(config);
    for destination in config.destinations() {
        let sender = Sender {
            destination,
            config: config.clone(),
            http: http.clone(),
            store: store.clone(),
            clock: clock.clone(),
        };
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let pause = sender.step().await;
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }
}

/// The delivery loop of one destination.
struct Sender {
    destination: Destination,
    config: Arc<NotifyConfig>,
    http: reqwest::Client,
    store: Arc<dyn IncidentStore>,
    clock: Arc<dyn crate::Clock>,
}

impl Sender {
    /// Sends the next due notification, if any; how long to wait before the next step.
    async fn step(&self) -> Duration {
        let now = self.clock.now();
        let claimed = self
            .store
            .claim_notification(self.destination.as_str(), now, LEASE)
            .await;
        let notification = match claimed {
            Ok(Some(n)) => n,
            Ok(None) => return POLL,
            Err(e) => {
                tracing::warn!(error = %e, "notification outbox unreadable");
                return POLL * 5;
            }
        };
        let outcome = self.send(&notification).await;
        let attempt = u32::try_from(notification.attempts).unwrap_or(u32::MAX - 1) + 1;
        let at = self.clock.now();
        let decided = next(&outcome, attempt, notification.created_at, at);
        let (status, retry_at) = match decided {
            Next::Delivered => ("delivered", at),
            Next::RetryAt(t) => ("pending", t),
            Next::GiveUp => ("failed", at),
        };
        let described = outcome.describe();
        let record = Attempt {
            number: attempt,
            at,
            outcome: &described,
            status,
            retry_at,
            others_not_before: at + self.destination.pace(),
        };
        if let Err(e) = self
            .store
            .finish_notification(&notification.notification_id, &record)
            .await
        {
            tracing::warn!(error = %e, "notification attempt not recorded (it will be sent again)");
        }
        match decided {
            Next::Delivered => {
                tracing::info!(incident = %notification.incident_id, destination = self.destination.as_str(), summary = %notification.summary, "notification delivered");
                POLL
            }
            Next::RetryAt(t) => {
                tracing::warn!(incident = %notification.incident_id, destination = self.destination.as_str(), attempt, outcome = %described, retry_at = %atlas_proto::timestamp::rfc3339(t), "notification not delivered: will retry");
                POLL
            }
            Next::GiveUp => {
                tracing::error!(incident = %notification.incident_id, destination = self.destination.as_str(), attempt, outcome = %described, "notification failed: given up");
                POLL
            }
        }
    }

    /// One attempt.
    async fn send(&self, notification: &NotificationRecord) -> Outcome {
        let Ok(mut body) = serde_json::from_str::<serde_json::Value>(&notification.payload) else {
            return Outcome::Status(400, None);
        };
        let url = match self.destination {
            Destination::Slack => self.config.slack_webhook_url.clone(),
            Destination::PagerDuty => {
                body["routing_key"] = self.config.pagerduty_routing_key.clone().into();
                Some(self.config.pagerduty_events_url.clone())
            }
        };
        let Some(url) = url else {
            return Outcome::Network("destination no longer configured".into());
        };
        match self.http.post(url).json(&body).send().await {
            Ok(answer) => {
                let retry_after = answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                Outcome::Status(answer.status().as_u16(), retry_after)
            }
            // Never the URL: a Slack webhook URL is its own secret.
            Err(e) if e.is_timeout() => Outcome::Network("timed out".into()),
            Err(e) if e.is_connect() => {
                Outcome::Network("connection refused or unreachable".into())
            }
            Err(_) => Outcome::Network("request failed".into()),
        }
    }
}
