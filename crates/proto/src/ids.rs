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
    /// A character the identifier's alphabet does not have.
    #[error("identifier may only contain {allowed}")]
    Charset {
        /// The alphabet, in words.
        allowed: &'static str,
    },
    /// A name reserved for something else (a route under the same path).
    #[error("{0:?} is a reserved name")]
    Reserved(&'static str),
    /// Not in the identifier's shape.
    #[error("identifier must look like {0}")]
    Shape(&'static str),
}

/// One identifier alphabet: which bytes it allows, and how to say so.
struct Alphabet {
    allows: fn(u8) -> bool,
    words: &'static str,
}

/// Names typed by people: user and device ids.
const NAME: Alphabet = Alphabet {
    allows: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'),
    words: "letters, digits, '.', '_' and '-'",
};
/// Server-made UUIDs and request ids.
const UUID: Alphabet = Alphabet {
    allows: |b| b.is_ascii_alphanumeric() || b == b'-',
    words: "letters, digits and '-'",
};
/// Client-chosen idempotency keys.
const TOKEN: Alphabet = Alphabet {
    allows: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'),
    words: "letters, digits, '.', '_', ':' and '-'",
};
/// vodozemac session ids: standard or URL-safe base64.
const BASE64: Alphabet = Alphabet {
    allows: |b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'),
    words: "base64 characters",
};

fn validate(value: &str, max: usize, alphabet: &Alphabet) -> Result<(), IdError> {
    if value.is_empty() || value.len() > max {
        return Err(IdError::Length { max });
    }
    if !value.bytes().all(alphabet.allows) {
        return Err(IdError::Charset {
            allowed: alphabet.words,
        });
    }
    Ok(())
}

/// Checks that are more than an alphabet (reserved names, a shape).
trait Extra {
    fn extra(_value: &str) -> Result<(), IdError> {
        Ok(())
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $alphabet:expr) => {
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
                validate(&value, $max, &$alphabet)?;
                <Self as Extra>::extra(&value)?;
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

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
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
    64,
    NAME
);
impl Extra for UserId {}
id_type!(
    /// One device of a user, chosen by the device at registration.
    DeviceId,
    64,
    NAME
);
impl Extra for DeviceId {}
id_type!(
    /// A 1:1 message, named by the server (a UUID).
    MessageId,
    64,
    UUID
);
impl Extra for MessageId {}
id_type!(
    /// A resend request or a pending member action, named by the server (a UUID).
    RequestId,
    64,
    UUID
);
impl Extra for RequestId {}
id_type!(
    /// The sender's idempotency key for one send: a retry with the same key
    /// gets the first answer instead of a second message.
    ClientMessageId,
    128,
    TOKEN
);
impl Extra for ClientMessageId {}
id_type!(
    /// An MLS group, named by its creator. `actions` and `welcomes` are
    /// routes of their own under `/groups` and cannot be group names.
    GroupId,
    64,
    NAME
);
impl Extra for GroupId {
    fn extra(value: &str) -> Result<(), IdError> {
        match value {
            "actions" => Err(IdError::Reserved("actions")),
            "welcomes" => Err(IdError::Reserved("welcomes")),
            _ => Ok(()),
        }
    }
}
id_type!(
    /// An Olm session id, as vodozemac writes it (standard base64) or as it
    /// travels in a URL path (base64url); [`SessionId::url_form`] and
    /// [`SessionId::std_form`] convert.
    SessionId,
    128,
    BASE64
);
impl Extra for SessionId {}

impl SessionId {
    /// The base64url form, which fits in a path segment.
    pub fn url_form(&self) -> SessionId {
        SessionId(self.0.replace('+', "-").replace('/', "_"))
    }

    /// The standard-base64 form a device stores.
    pub fn std_form(&self) -> SessionId {
        SessionId(self.0.replace('-', "+").replace('_', "/"))
    }
}

id_type!(
    /// A key backup: `backup-<user>-<unix-ms>`, so its owner and time show in
    /// its name.
    BackupId,
    64 + 24,
    NAME
);
impl Extra for BackupId {
    fn extra(value: &str) -> Result<(), IdError> {
        const SHAPE: IdError = IdError::Shape("backup-<user>-<unix-ms>");
        let (user, ms) = value
            .strip_prefix("backup-")
            .and_then(|rest| rest.rsplit_once('-'))
            .ok_or(SHAPE)?;
        let ms_ok = !ms.is_empty() && ms.len() <= 16 && ms.bytes().all(|b| b.is_ascii_digit());
        if ms_ok && UserId::new(user).is_ok() {
            Ok(())
        } else {
            Err(SHAPE)
        }
    }
}

id_type!(
    /// An incident: `INC-YYYYMMDDHHMMSS` (UTC, the emergency manual's form),
    /// with `-N` for the second and later one declared in the same second.
    IncidentId,
    24,
    UUID
);
impl Extra for IncidentId {
    fn extra(value: &str) -> Result<(), IdError> {
        const SHAPE: IdError = IdError::Shape("INC-YYYYMMDDHHMMSS or INC-YYYYMMDDHHMMSS-N");
        let rest = value.strip_prefix("INC-").ok_or(SHAPE)?;
        let (stamp, n) = rest
            .split_once('-')
            .map_or((rest, None), |(s, n)| (s, Some(n)));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        let n_ok = n.is_none_or(|n| (1..=4).contains(&n.len()) && digits(n) && !n.starts_with('0'));
        if stamp.len() == 14 && digits(stamp) && n_ok {
            Ok(())
        } else {
            Err(SHAPE)
        }
    }
}

impl IncidentId {
    /// The id of the `n`th incident (1, 2 …) declared in the second of `at`.
    pub fn at(at: time::OffsetDateTime, n: u32) -> IncidentId {
        let at = at.to_offset(time::UtcOffset::UTC);
        let stamp = format!(
            "INC-{:04}{:02}{:02}{:02}{:02}{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
        IncidentId(if n <= 1 {
            stamp
        } else {
            format!("{stamp}-{n}")
        })
    }
}

impl BackupId {
    /// The id of a backup `user_id` makes at `unix_ms`.
    pub fn for_user(user_id: &UserId, unix_ms: i128) -> BackupId {
        BackupId(format!("backup-{user_id}-{unix_ms}"))
    }

    /// Whether the id names `user_id` as its owner.
    pub fn belongs_to(&self, user_id: &str) -> bool {
        self.0
            .strip_prefix("backup-")
            .and_then(|rest| rest.rsplit_once('-'))
            .is_some_and(|(user, _)| user == user_id)
    }
}

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
    fn incident_ids_have_the_manuals_shape() {
        let at = time::macros::datetime!(2026-11-30 06:05:09 UTC);
        assert_eq!(IncidentId::at(at, 1).as_str(), "INC-20261130060509");
        assert_eq!(IncidentId::at(at, 3).as_str(), "INC-20261130060509-3");
        let east = at.to_offset(time::macros::offset!(+2));
        assert_eq!(IncidentId::at(east, 1), IncidentId::at(at, 1), "always UTC");
        for ok in [
            "INC-20261130060509",
            "INC-20261130060509-2",
            "INC-20261130060509-9999",
        ] {
            assert!(IncidentId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "INC-2026113006050",
            "INC-20261130060509-",
            "INC-20261130060509-0",
            "INC-20261130060509-01",
            "inc-20261130060509",
            "INC-2026113006050x",
            "INC-20261130060509-2-2",
            "../etc/passwd",
        ] {
            assert!(IncidentId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accepts_plain_names_and_rejects_the_rest() {
        assert!(UserId::new("alice").is_ok());
        assert!(UserId::new("bob.smith-2_x").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Length { max: 64 }));
        assert_eq!(
            UserId::new("a".repeat(65)),
            Err(IdError::Length { max: 64 })
        );
        let charset = |r: Result<UserId, IdError>| matches!(r, Err(IdError::Charset { .. }));
        assert!(charset(UserId::new("al ice")));
        assert!(charset(UserId::new("a/b")));
        assert!(charset(UserId::new("ünï")));
    }

    #[test]
    fn deserialisation_validates() {
        let ok: Result<UserId, _> = serde_json::from_str("\"carol\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"x'; DROP TABLE\"");
        assert!(bad.is_err());
    }

    #[test]
    fn each_id_has_its_own_alphabet() {
        assert!(MessageId::new("0b6f7c1e-5f1a-4c3e-9d7a-1a2b3c4d5e6f").is_ok());
        assert!(MessageId::new("a.b").is_err());
        assert!(ClientMessageId::new("resend:abc-1").is_ok());
        assert!(ClientMessageId::new("a b").is_err());
        assert!(ClientMessageId::new("x".repeat(129)).is_err());
        assert!(SessionId::new("ab+/cd=").is_ok());
        assert!(SessionId::new("ab cd").is_err());
        assert_eq!(GroupId::new("welcomes"), Err(IdError::Reserved("welcomes")));
        assert!(GroupId::new("team.chat-1").is_ok());
    }

    #[test]
    fn session_ids_convert_between_their_two_forms() {
        let std = SessionId::new("a+b/c").unwrap();
        assert_eq!(std.url_form().as_str(), "a-b_c");
        assert_eq!(std.url_form().std_form(), std);
    }

    #[test]
    fn backup_ids_name_their_user_and_time() {
        let id = BackupId::new("backup-alice-1763848800000").unwrap();
        assert!(id.belongs_to("alice"));
        assert!(!id.belongs_to("bob"));
        assert!(BackupId::new("backup-alice-").is_err());
        assert!(BackupId::new("backup-alice-12x").is_err());
        assert!(BackupId::new("backup--12").is_err());
        assert!(BackupId::new("alice-12").is_err());
        let made = BackupId::for_user(&UserId::new("bob-2").unwrap(), 17);
        assert_eq!(made.as_str(), "backup-bob-2-17");
        assert!(made.belongs_to("bob-2") && !made.belongs_to("bob"));
        assert!(BackupId::new(made.as_str()).is_ok());
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
