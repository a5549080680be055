//! Watches the indicators of compromise (seed `004`, §5.2) and writes what
//! goes over a threshold into every open incident's timeline, as `atlas`. The
//! counters are this replica's (the token count is the database's). On the
//! same tick it adds this replica's requests by status class to the minute's
//! totals in the database, the error rates of post-mortems.
use crate::state::AppState;
use atlas_ops::incident::Change;
use atlas_ops::indicators::{Snapshot, findings};
use std::time::Duration;

/// The counters now.
async fn snapshot(state: &AppState) -> Snapshot {
    let m = &state.metrics;
    let (tokens_created, newest) = state
        .stores
        .operator_tokens
        .operator_tokens_created()
        .await
        .unwrap_or_default();
    Snapshot {
        auth_failures: m
            .auth_failures()
            .into_iter()
            .map(|(r, n)| (r.to_owned(), n))
            .collect(),
        replays: m.replays(),
        refused_addresses: m.admin_refusals(),
        admin_reads: m
            .admin_requests()
            .into_iter()
            .filter(|((_, kind), _)| *kind == "read")
            .map(|((token, _), n)| (token, n))
            .collect(),
        tokens_created,
        newest_token: newest.map(|(id, label, _)| (id, label)),
    }
}

/// Looks every `every` until the server stops.
pub fn spawn(state: AppState, every: Duration) {
    tokio::spawn(async move {
        let mut stop = state.shutdown.clone();
        let mut before = snapshot(&state).await;
        let mut requests_before = state.metrics.status_classes();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let requests = state.metrics.status_classes();
            record_requests(&state, &requests_before, &requests).await;
            requests_before = requests;
            let now = snapshot(&state).await;
            let found = findings(&before, &now, every.as_secs());
            before = now;
            for text in found {
                tracing::warn!(indicator = %text, "indicator of compromise");
                record(&state, &text).await;
            }
        }
    });
}

/// Adds the requests answered since the last tick to this minute's totals.
async fn record_requests(
    state: &AppState,
    before: &std::collections::BTreeMap<String, u64>,
    now: &std::collections::BTreeMap<String, u64>,
) {
    let deltas: Vec<(String, u64)> = now
        .iter()
        .map(|(class, n)| {
            (
                class.clone(),
                n.saturating_sub(before.get(class).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    if deltas.is_empty() {
        return;
    }
    let ms = (state.clock.now().unix_timestamp_nanos() / 1_000_000) as i64;
    if let Err(e) = state
        .stores
        .incidents
        .add_request_counts(ms / 60_000 * 60_000, &deltas)
        .await
    {
        tracing::warn!(error = %e, "request counts not recorded");
    }
}

/// Adds `text` to the timeline of every open incident.
async fn record(state: &AppState, text: &str) {
    let open = match state
        .stores
        .incidents
        .incidents(true, crate::routes::incidents::MAX_OPEN)
        .await
    {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(error = %e, "indicator not recorded: incidents unreadable");
            return;
        }
    };
    for incident in open {
        // Another replica may have seen the same (a token created: one database).
        let timeline = state.stores.incidents.incident_timeline(&incident.id).await;
        let seen = timeline.is_ok_and(|t| {
            t.iter().any(|e| {
                matches!(&e.event, atlas_proto::incident::IncidentEvent::Indicator { text: seen } if seen == text)
            })
        });
        if seen {
            continue;
        }
        let change = Change::Indicator(text);
        if let Err(e) = crate::routes::incidents::change(state, &incident.id, "atlas", change).await
        {
            tracing::warn!(incident = %incident.id, error = ?e, "indicator not recorded");
        }
    }
}
