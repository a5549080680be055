//! Alertmanager's webhook (payload version 4) read into alert records, and
//! alerts merged into an incident's timeline, so the post-mortem's "first
//! alert" is the one that really fired. Without I/O.
use atlas_proto::incident::{AlertRecord, IncidentEvent, TimelineEntry};
use serde::Deserialize;
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};

/// Alerts in one webhook call at most.
pub const MAX_ALERTS: usize = 1000;
/// Labels or annotations of one alert at most.
const MAX_LABELS: usize = 64;
/// Characters of one label or annotation value at most.
const MAX_VALUE: usize = 1024;
/// An incident's timeline shows alerts that fired up to this long before it was declared.
pub const LOOKBACK: Duration = Duration::hours(1);

/// Why a webhook payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertsError {
    /// Not Alertmanager's JSON.
    #[error("not an Alertmanager webhook payload: {0}")]
    Malformed(String),
    /// Another payload version.
    #[error("payload version {0:?}: Atlas reads version 4")]
    Version(String),
    /// Over a limit.
    #[error("{0}")]
    TooLarge(String),
}

#[derive(Deserialize)]
struct Payload {
    version: String,
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    fingerprint: String,
}

/// Reads a webhook body into alert records.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<AlertRecord>, AlertsError> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| AlertsError::Malformed(e.to_string()))?;
    if payload.version != "4" {
        return Err(AlertsError::Version(clean(&payload.version, 16)));
    }
    if payload.alerts.len() > MAX_ALERTS {
        return Err(AlertsError::TooLarge(format!(
            "{} alerts: at most {MAX_ALERTS} per call",
            payload.alerts.len()
        )));
    }
    payload.alerts.into_iter().map(record).collect()
}

fn record(a: Alert) -> Result<AlertRecord, AlertsError> {
    let malformed = |what: &str| AlertsError::Malformed(what.to_owned());
    if a.labels.len() > MAX_LABELS || a.annotations.len() > MAX_LABELS {
        return Err(AlertsError::TooLarge(format!(
            "an alert has more than {MAX_LABELS} labels or annotations"
        )));
    }
    let too_long = a
        .labels
        .iter()
        .chain(&a.annotations)
        .any(|(k, v)| k.len() > MAX_VALUE || v.len() > MAX_VALUE);
    if too_long {
        return Err(AlertsError::TooLarge(format!(
            "a label or annotation is longer than {MAX_VALUE} bytes"
        )));
    }
    let fingerprint_ok = !a.fingerprint.is_empty()
        && a.fingerprint.len() <= 64
        && a.fingerprint.bytes().all(|b| b.is_ascii_alphanumeric());
    if !fingerprint_ok {
        return Err(malformed("fingerprint must be 1 to 64 letters and digits"));
    }
    if a.status != "firing" && a.status != "resolved" {
        return Err(malformed("status must be firing or resolved"));
    }
    let alertname = a
        .labels
        .get("alertname")
        .ok_or_else(|| malformed("an alert has no alertname label"))?;
    let time = |t: &str| atlas_proto::timestamp::parse_rfc3339(t).ok();
    let starts_at = time(&a.starts_at).ok_or_else(|| malformed("startsAt is not RFC 3339"))?;
    // Alertmanager sends the zero time (year 1) for "not ended".
    let ends_at = a
        .ends_at
        .as_deref()
        .and_then(time)
        .filter(|t| t.year() > 1 && a.status == "resolved");
    Ok(AlertRecord {
        fingerprint: a.fingerprint,
        starts_at: starts_at.into(),
        ends_at: ends_at.map(Into::into),
        status: a.status,
        alertname: clean(alertname, 200),
        severity: clean(a.labels.get("severity").map_or("", String::as_str), 50),
        summary: clean(
            a.annotations.get("summary").map_or("", String::as_str),
            MAX_VALUE,
        ),
        labels: a
            .labels
            .iter()
            .map(|(k, v)| (clean(k, MAX_VALUE), clean(v, MAX_VALUE)))
            .collect(),
    })
}

/// Text safe to print and store: control characters replaced, at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `timeline` with `alerts` that fired or resolved in `[from, until]` merged
/// in by time (alert entries have `seq` 0: they are not the incident's own).
pub fn merge(
    timeline: Vec<TimelineEntry>,
    alerts: &[AlertRecord],
    from: OffsetDateTime,
    until: OffsetDateTime,
) -> Vec<TimelineEntry> {
    let mut merged = timeline;
    for alert in alerts {
        let mut add = |at: OffsetDateTime, status: &str| {
            if at >= from && at <= until {
                merged.push(TimelineEntry {
                    seq: 0,
                    at: at.into(),
                    actor: "alertmanager".into(),
                    event: IncidentEvent::Alert {
                        alertname: alert.alertname.clone(),
                        status: status.into(),
                        severity: alert.severity.clone(),
                        summary: alert.summary.clone(),
                    },
                });
            }
        };
        add(alert.starts_at.0, "firing");
        if let Some(end) = alert.ends_at {
            add(end.0, "resolved");
        }
    }
    // Stable: at one instant, an alert comes before what the incident recorded.
    merged.sort_by_key(|e| (e.at, e.seq));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(alerts: &str) -> Vec<u8> {
        format!(r#"{{"version":"4","status":"firing","receiver":"atlas","groupKey":"{{}}:{{}}","truncatedAlerts":0,"groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am","alerts":[{alerts}]}}"#).into_bytes()
    }

    const FIRING: &str = r#"{"status":"firing","labels":{"alertname":"HighDecryptionFailureRate","severity":"critical"},"annotations":{"summary":"Decryption failure rate above 10/min"},"startsAt":"2026-11-30T05:50:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom","fingerprint":"a1b2c3"}"#;

    #[test]
    fn alertmanager_payloads_are_read() {
        let alerts = parse_webhook(&payload(FIRING)).unwrap();
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(
            (a.alertname.as_str(), a.status.as_str(), a.severity.as_str()),
            ("HighDecryptionFailureRate", "firing", "critical")
        );
        assert_eq!(a.summary, "Decryption failure rate above 10/min");
        assert_eq!(a.ends_at, None, "the zero time is no end");
        let resolved = FIRING
            .replace(r#""status":"firing""#, r#""status":"resolved""#)
            .replace("0001-01-01T00:00:00Z", "2026-11-30T06:30:00Z");
        let a = &parse_webhook(&payload(&resolved)).unwrap()[0];
        assert_eq!(a.ends_at.unwrap().0.hour(), 6);
    }

    #[test]
    fn malformed_and_oversized_payloads_are_refused() {
        let cases: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            br#"{"version":"3","alerts":[]}"#.to_vec(),
            payload(&FIRING.replace("a1b2c3", "")),
            payload(&FIRING.replace("a1b2c3", "../x")),
            payload(&FIRING.replace(r#""alertname":"HighDecryptionFailureRate","#, "")),
            payload(&FIRING.replace("2026-11-30T05:50:00Z", "yesterday")),
            payload(&FIRING.replace(r#""status":"firing""#, r#""status":"bored""#)),
            payload(&FIRING.replace("Decryption failure rate above 10/min", &"x".repeat(2000))),
            payload(&vec![FIRING; MAX_ALERTS + 1].join(",")),
        ];
        for body in cases {
            assert!(
                parse_webhook(&body).is_err(),
                "{}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        let escaped = FIRING.replace("Decryption failure", "Decryption\\u001b[31m failure");
        assert!(
            !parse_webhook(&payload(&escaped)).unwrap()[0]
                .summary
                .contains('\u{1b}')
        );
    }

    #[test]
    fn alerts_of_the_window_join_the_timeline_in_time_order() {
        let a = parse_webhook(&payload(FIRING)).unwrap();
        let declared = atlas_proto::timestamp::parse_rfc3339("2026-11-30T06:00:00Z").unwrap();
        let own = TimelineEntry {
            seq: 1,
            at: declared.into(),
            actor: "ops".into(),
            event: IncidentEvent::Note {
                text: "declared".into(),
            },
        };
        let merged = merge(
            vec![own.clone()],
            &a,
            declared - LOOKBACK,
            declared + Duration::hours(1),
        );
        assert_eq!(merged.len(), 2);
        assert!(matches!(merged[0].event, IncidentEvent::Alert { .. }));
        assert_eq!(merged[1], own);
        let none = merge(vec![own], &a, declared, declared + Duration::hours(1));
        assert_eq!(none.len(), 1, "fired before the window");
    }
}
