//! PURE: WhatsApp Web's deployment as the simulator plays it: one *live* web version, every
//! version ever served (their bundles stay online, as WhatsApp's static servers keep old
//! bundles), and retired versions whose clients the server turns away with
//! `DEPRECATED_VERSION`.
//!
//! `GET /` serves an index.html that references the live version's bundles; a client that
//! pinned an older index.html (whatsapp-web.js's LocalWebCache, the engine's version cache)
//! therefore still boots that older version, until it is retired.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The version a simulator starts with.
pub const DEFAULT_WEB_VERSION: &str = "2.3000.1012345678-sim";
/// Longest version string accepted.
pub const MAX_VERSION_LEN: usize = 40;
/// At most this many versions are remembered (each is only a short string, but the control
/// API must not let a client grow the simulator without bound).
pub const MAX_KNOWN_VERSIONS: usize = 256;

/// Why a version change was refused; maps to the control API's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not `major.minor.build[-tag]` (400 `invalid_version`).
    #[error("{0:?} is not a web version like 2.3000.1012345678-sim")]
    Invalid(String),
    /// Retiring a version that was never served (404 `unknown_version`).
    #[error("version {0} was never served")]
    Unknown(String),
    /// Making a retired version live, or retiring the live one (409 `retired_version` /
    /// `live_version`).
    #[error("{1}")]
    Conflict(&'static str, String),
    /// Too many versions (409 `too_many_versions`).
    #[error("at most {MAX_KNOWN_VERSIONS} versions are kept")]
    TooMany,
}

/// `GET /sim/web-version`, and what the state file keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebVersions {
    /// The version `GET /` serves.
    pub live: String,
    /// Every version served so far (their bundles are still served), oldest first.
    pub known: Vec<String>,
    /// Versions whose clients get `DEPRECATED_VERSION`.
    pub retired: Vec<String>,
}

impl Default for WebVersions {
    fn default() -> Self {
        Self {
            live: DEFAULT_WEB_VERSION.to_owned(),
            known: vec![DEFAULT_WEB_VERSION.to_owned()],
            retired: Vec::new(),
        }
    }
}

/// Whether `v` is a version string the simulator accepts:
/// `^[0-9]+(\.[0-9]+){2}(-[a-z0-9]+)?$`, at most [`MAX_VERSION_LEN`] characters. Safe to splice
/// into HTML, JS and URLs as is.
pub fn valid_version(v: &str) -> bool {
    if v.is_empty() || v.len() > MAX_VERSION_LEN {
        return false;
    }
    let (numbers, tag) = match v.split_once('-') {
        Some((n, t)) => (n, Some(t)),
        None => (v, None),
    };
    let parts: Vec<&str> = numbers.split('.').collect();
    let numbers_ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    numbers_ok && tag_ok
}

impl WebVersions {
    /// Restores a saved set, falling back to the default for anything invalid.
    pub fn restored(saved: WebVersions) -> Self {
        let mut out = Self::default();
        for v in saved
            .known
            .iter()
            .filter(|v| valid_version(v))
            .take(MAX_KNOWN_VERSIONS)
        {
            if !out.known.contains(v) {
                out.known.push(v.clone());
            }
        }
        if valid_version(&saved.live) {
            if !out.known.contains(&saved.live) && out.known.len() < MAX_KNOWN_VERSIONS {
                out.known.push(saved.live.clone());
            }
            out.live = saved.live;
        }
        out.retired = saved
            .retired
            .into_iter()
            .filter(|v| out.known.contains(v) && *v != out.live)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        out
    }

    /// Whether bundles of `v` are served.
    pub fn is_known(&self, v: &str) -> bool {
        self.known.iter().any(|k| k == v)
    }

    /// Whether clients of `v` are turned away.
    pub fn is_retired(&self, v: &str) -> bool {
        self.retired.iter().any(|k| k == v)
    }

    /// Applies `POST /sim/web-version`: first the new live version (if any), then the
    /// retirements. Everything is validated before anything changes. Returns whether anything
    /// changed.
    pub fn apply(&mut self, live: Option<&str>, retire: &[String]) -> Result<bool, VersionError> {
        if let Some(v) = live {
            if !valid_version(v) {
                return Err(VersionError::Invalid(v.to_owned()));
            }
            if self.is_retired(v) {
                return Err(VersionError::Conflict(
                    "retired_version",
                    format!("version {v} is retired and cannot be live again"),
                ));
            }
            if !self.is_known(v) && self.known.len() >= MAX_KNOWN_VERSIONS {
                return Err(VersionError::TooMany);
            }
        }
        let new_live = live.unwrap_or(&self.live);
        for v in retire {
            if !valid_version(v) {
                return Err(VersionError::Invalid(v.clone()));
            }
            if v == new_live {
                return Err(VersionError::Conflict(
                    "live_version",
                    format!("version {v} is live; make another version live first"),
                ));
            }
            if !self.is_known(v) {
                return Err(VersionError::Unknown(v.clone()));
            }
        }
        let mut changed = false;
        if let Some(v) = live {
            if !self.is_known(v) {
                self.known.push(v.to_owned());
            }
            changed |= self.live != v;
            self.live = v.to_owned();
        }
        for v in retire {
            if !self.is_retired(v) {
                self.retired.push(v.clone());
                changed = true;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_strings_are_validated() {
        for ok in [
            "2.3000.1012345678-sim",
            "2.3000.1",
            "0.0.0",
            "2.3000.1017054665-alpha1",
        ] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in [
            "",
            "2.3000",
            "2.3000.1.4",
            "2.3000.x",
            "2.3000.1-",
            "2.3000.1-SIM",
            "2.3000.1-a-b",
            "2.3000.1 ",
            "<script>",
            &format!("2.3000.{}", "1".repeat(40)),
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    #[test]
    fn live_moves_old_versions_stay_known_and_retire() {
        let mut w = WebVersions::default();
        assert_eq!(w.live, DEFAULT_WEB_VERSION);
        assert!(w.apply(Some("2.3000.2-sim"), &[]).unwrap());
        assert_eq!(w.live, "2.3000.2-sim");
        assert!(w.is_known(DEFAULT_WEB_VERSION) && w.is_known("2.3000.2-sim"));
        // Nothing is applied when one part is bad.
        assert_eq!(
            w.apply(Some("2.3000.3-sim"), &["9.9.9".into()]),
            Err(VersionError::Unknown("9.9.9".into()))
        );
        assert_eq!(w.live, "2.3000.2-sim");
        assert!(matches!(
            w.apply(None, &["2.3000.2-sim".into()]),
            Err(VersionError::Conflict("live_version", _))
        ));
        assert!(w.apply(None, &[DEFAULT_WEB_VERSION.into()]).unwrap());
        assert!(w.is_retired(DEFAULT_WEB_VERSION));
        assert!(
            !w.apply(None, &[DEFAULT_WEB_VERSION.into()]).unwrap(),
            "idempotent"
        );
        assert!(matches!(
            w.apply(Some(DEFAULT_WEB_VERSION), &[]),
            Err(VersionError::Conflict("retired_version", _))
        ));
        // A new live version and the retirement of the old one in one call.
        assert!(
            w.apply(Some("2.3000.3-sim"), &["2.3000.2-sim".into()])
                .unwrap()
        );
        assert_eq!(
            w.retired,
            vec![DEFAULT_WEB_VERSION.to_owned(), "2.3000.2-sim".into()]
        );
        assert_eq!(WebVersions::restored(w.clone()), w);
    }

    #[test]
    fn restore_drops_what_is_invalid() {
        let w = WebVersions::restored(WebVersions {
            live: "bad".into(),
            known: vec!["1.2.3".into(), "nope".into()],
            retired: vec![DEFAULT_WEB_VERSION.into(), "7.7.7".into()],
        });
        assert_eq!(w.live, DEFAULT_WEB_VERSION);
        assert_eq!(
            w.known,
            vec![DEFAULT_WEB_VERSION.to_owned(), "1.2.3".into()]
        );
        assert!(
            w.retired.is_empty(),
            "the live one and unknown ones are not retired"
        );
    }
}
