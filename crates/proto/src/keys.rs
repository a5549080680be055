//! The vocabulary of `user_keys`, the table the runbook queries: what kind
//! of key a row holds and where it is in its life.
use serde::{Deserialize, Serialize};

/// A name outside one of the fixed vocabularies below.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    /// Which vocabulary.
    pub what: &'static str,
    /// The name given.
    pub name: String,
}

/// Declares a string enum: its wire (and column) names, `as_str`, `Display`,
/// `FromStr` and `TryFrom<String>` (for `#[sqlx(try_from = "String")]`).
macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name as stored and sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName { what: $what, name: s.to_owned() })
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownName;
            fn try_from(s: String) -> Result<Self, UnknownName> {
                s.parse()
            }
        }
    };
}

name_enum!(
    /// The kind of key a `user_keys` row holds.
    KeyType, "key type" {
        /// The device's signing identity key.
        Ed25519 = "ed25519",
        /// The device's Diffie-Hellman identity key.
        Curve25519 = "curve25519",
        /// A one-time prekey, handed to one sender.
        OneTime = "one_time",
        /// The fallback prekey, handed out when one-time keys run out.
        Fallback = "fallback",
    }
);

name_enum!(
    /// Where a key is in its life.
    KeyStatus, "key status" {
        /// Published and handed out.
        Active = "active",
        /// Replaced by a newer fallback or identity key.
        Rotated = "rotated",
        /// Withdrawn (found corrupted, or its device revoked).
        Revoked = "revoked",
        /// A one-time key handed to a sender.
        Consumed = "consumed",
    }
);

name_enum!(
    /// How a stored key disagrees with what its device published.
    MismatchProblem, "key problem" {
        /// The device published another value under this id.
        Differs = "differs",
        /// The device holds no key with this id.
        Unknown = "unknown",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_json_and_text() {
        for t in KeyType::ALL {
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(json, format!("\"{t}\""));
            assert_eq!(t.as_str().parse::<KeyType>().unwrap(), *t);
        }
        assert_eq!(KeyStatus::Consumed.as_str(), "consumed");
        assert_eq!(
            "ghost".parse::<KeyStatus>(),
            Err(UnknownName {
                what: "key status",
                name: "ghost".into()
            })
        );
        assert!(serde_json::from_str::<KeyType>("\"rsa\"").is_err());
    }
}
