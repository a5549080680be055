//! Identifier newtypes. Validation happens at deserialisation so a handler
//! never sees an identifier that could break a log line, a path or a key.
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty or longer than the limit.
    #[error("identifier must be 1 to {max} characters")]
    Length {
        /// The limit that applies.
        max: usize,
    },
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("identifier may only contain letters, digits, '.', '_' and '-'")]
    Charset,
}

fn validate(value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() || value.len() > max {
        return Err(IdError::Length { max });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(IdError::Charset);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted identifier, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps an identifier.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate(&value, $max)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A user's name on this server, e.g. `alice`.
    UserId,
    64
);
id_type!(
    /// One device of a user, chosen by the device at registration.
    DeviceId,
    64
);

/// A device named as `USER_ID/DEVICE_ID`, the form operators type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberRef {
    /// The user.
    pub user_id: UserId,
    /// The device, when given.
    pub device_id: Option<DeviceId>,
}

impl std::str::FromStr for MemberRef {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.split_once('/') {
            Some((user, device)) => Ok(Self {
                user_id: UserId::new(user)?,
                device_id: Some(DeviceId::new(device)?),
            }),
            None => Ok(Self {
                user_id: UserId::new(s)?,
                device_id: None,
            }),
        }
    }
}

impl fmt::Display for MemberRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.device_id {
            Some(d) => write!(f, "{}/{}", self.user_id, d),
            None => write!(f, "{}", self.user_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_the_rest() {
        assert!(UserId::new("alice").is_ok());
        assert!(UserId::new("bob.smith-2_x").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Length { max: 64 }));
        assert_eq!(
            UserId::new("a".repeat(65)),
            Err(IdError::Length { max: 64 })
        );
        assert_eq!(UserId::new("al ice"), Err(IdError::Charset));
        assert_eq!(UserId::new("a/b"), Err(IdError::Charset));
        assert_eq!(UserId::new("ünï"), Err(IdError::Charset));
    }

    #[test]
    fn deserialisation_validates() {
        let ok: Result<UserId, _> = serde_json::from_str("\"carol\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"x'; DROP TABLE\"");
        assert!(bad.is_err());
    }

    #[test]
    fn member_ref_parses_both_forms() {
        let m: MemberRef = "alice/PHONE".parse().unwrap();
        assert_eq!(m.device_id.unwrap().as_str(), "PHONE");
        let m: MemberRef = "alice".parse().unwrap();
        assert!(m.device_id.is_none());
        assert!("alice/".parse::<MemberRef>().is_err());
    }
}
