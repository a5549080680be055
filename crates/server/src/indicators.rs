//! Watches the indicators of compromise (seed `004`, §5.2) and writes what
//! goes over a threshold into every open incident's timeline, as `atlas`. The
//! counters are this replica's (the token count is the database's).
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
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
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
