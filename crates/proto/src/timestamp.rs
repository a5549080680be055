//! The one way Atlas writes and reads times on the wire, in logs and in the
//! runbook's output: RFC 3339 in UTC, e.g. `2026-11-29T20:15:00Z`.
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A time on the wire: RFC 3339 in JSON and when displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(#[serde(with = "time::serde::rfc3339")] pub OffsetDateTime);

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        Self(t)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = time::error::Parse;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_rfc3339(s).map(Self)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&rfc3339(self.0))
    }
}

/// `t` as RFC 3339. A time outside years 0–9999 cannot be written that way
/// and comes out empty; every time Atlas stores is well inside.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Reads an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text, &Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_forms() {
        let t = time::macros::datetime!(2026-11-29 20:15:00 UTC);
        assert_eq!(rfc3339(t), "2026-11-29T20:15:00Z");
        assert_eq!(parse_rfc3339("2026-11-29T20:15:00Z").unwrap(), t);
        assert!(parse_rfc3339("29/11/2026").is_err());
    }

    #[test]
    fn timestamps_travel_as_rfc3339() {
        let t = Timestamp(time::macros::datetime!(2026-11-29 20:15:00 UTC));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-29T20:15:00Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(t.to_string(), "2026-11-29T20:15:00Z");
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
