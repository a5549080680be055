//! What an operator token may do. Each admin route needs one scope; `all`
//! grants every one. The same list serves the server's checks and the CLI's
//! `atlas admin token create --scope`.
use serde::{Deserialize, Serialize};

/// One scope of an operator token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OperatorScope {
    /// Every admin route.
    All,
    /// Posting alerts (Alertmanager's webhook).
    Alerts,
    /// Reading and verifying the audit log.
    Audit,
    /// Removing users' devices.
    Devices,
    /// The diagnosis flow.
    Diagnose,
    /// The DPoP replay cache.
    Dpop,
    /// Emergency actions: lockdown and lift, evidence, key revocation.
    Emergency,
    /// Incidents: declare, update, close.
    Incidents,
    /// Receipt-signing and access-token keys.
    Keys,
    /// Resend requests and session resets.
    Messages,
    /// MLS recovery: show, send-update, rejoin, rollback.
    Mls,
    /// Receipt reissue.
    Receipts,
    /// The facts `atlas verify-recovery` checks a restored server against.
    Recovery,
}

impl OperatorScope {
    /// Every scope, in wire order.
    pub const ALL: [Self; 13] = [
        Self::All,
        Self::Alerts,
        Self::Audit,
        Self::Devices,
        Self::Diagnose,
        Self::Dpop,
        Self::Emergency,
        Self::Incidents,
        Self::Keys,
        Self::Messages,
        Self::Mls,
        Self::Receipts,
        Self::Recovery,
    ];

    /// The scope as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Alerts => "alerts",
            Self::Audit => "audit",
            Self::Devices => "devices",
            Self::Diagnose => "diagnose",
            Self::Dpop => "dpop",
            Self::Emergency => "emergency",
            Self::Incidents => "incidents",
            Self::Keys => "keys",
            Self::Messages => "messages",
            Self::Mls => "mls",
            Self::Receipts => "receipts",
            Self::Recovery => "recovery",
        }
    }

    /// Parses a stored or typed scope.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a token with this scope may use a route that needs `needed`.
    pub fn grants(self, needed: Self) -> bool {
        self == Self::All || self == needed
    }
}

impl std::fmt::Display for OperatorScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_all_grants_everything() {
        for scope in OperatorScope::ALL {
            assert_eq!(OperatorScope::parse(scope.as_str()), Some(scope));
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{scope}\""));
            assert!(OperatorScope::All.grants(scope));
        }
        assert!(!OperatorScope::Dpop.grants(OperatorScope::Keys));
        assert_eq!(OperatorScope::parse("root"), None);
    }
}
