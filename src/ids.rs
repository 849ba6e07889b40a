//! Validated identifiers for workspaces and sessions.
//!
//! A workspace or session id ends up in a filesystem path (`<data>/workspaces/<ws>/<s>/profile`)
//! and in a Consul key (`wafleet/locks/workspaces/<ws>`), so it is validated once, at the edge,
//! against `^[A-Za-z0-9_-]{1,64}$`. Code past the edge takes these types, never a bare string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id was empty.
    #[error("{kind} id must not be empty")]
    Empty {
        /// "workspace" or "session".
        kind: &'static str,
    },
    /// The id was longer than [`MAX_ID_LEN`].
    #[error("{kind} id is longer than {MAX_ID_LEN} characters")]
    TooLong {
        /// "workspace" or "session".
        kind: &'static str,
    },
    /// The id held a character outside `[A-Za-z0-9_-]`.
    #[error("{kind} id may contain only letters, digits, '_' and '-'")]
    BadChar {
        /// "workspace" or "session".
        kind: &'static str,
    },
}

/// Checks `s` against `^[A-Za-z0-9_-]{1,64}$`.
pub fn validate(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(IdError::BadChar { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A customer workspace id (one Laravel tenant), valid by construction.
    WorkspaceId,
    "workspace"
);
id_type!(
    /// A WhatsApp session id within a workspace, valid by construction.
    SessionId,
    "session"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(WorkspaceId::new("acme-42_X").is_ok());
        assert!(WorkspaceId::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_anything_that_could_escape_a_path_or_key() {
        for bad in ["", "..", "a/b", "a b", "ä", "a\0", "a.b", &"a".repeat(65)] {
            assert!(WorkspaceId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<SessionId>("\"../x\"").is_err());
        assert_eq!(
            serde_json::from_str::<SessionId>("\"default\"")
                .unwrap()
                .as_str(),
            "default"
        );
    }
}
