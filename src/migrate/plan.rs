//! PURE: what to do with one import row, given what was found locally (the profile) and at the
//! target (the session), and the record an import leaves in a session's metadata.
//!
//! The rule that makes imports idempotent and resumable: an import writes
//! `metadata.wafleet_import = {"source","client_id","files","bytes","at_ms"}` into the new
//! session. A target session that already carries a record for the same source and client id
//! is the result of an earlier run: the row is **skipped** (nothing is sent, nothing restarted).
//! Any other existing session is a **conflict**: it is never overwritten.

use serde::{Deserialize, Serialize};

/// The metadata key an import writes.
pub const IMPORT_METADATA_KEY: &str = "wafleet_import";

/// The record an import leaves in the session's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// Where the profile came from: `wwebjs` (a LocalAuth directory) or `tar` (an export).
    pub source: String,
    /// The whatsapp-web.js client id (empty for a tar).
    #[serde(default)]
    pub client_id: String,
    /// Regular files unpacked.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

impl ImportRecord {
    /// Reads the record from a session's metadata (`None` if absent or malformed).
    pub fn from_metadata(metadata: &serde_json::Value) -> Option<ImportRecord> {
        serde_json::from_value(metadata.get(IMPORT_METADATA_KEY)?.clone()).ok()
    }
}

/// What the source profile looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// Found and readable: what would be sent.
    Ready {
        /// Regular files (caches excluded).
        files: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// Missing, unreadable or in use; the message says which.
    Unusable(String),
}

/// What the target session looks like.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// No such session.
    Absent,
    /// The session exists; its metadata (for the import record) and status.
    Exists {
        /// Its `metadata` object.
        metadata: serde_json::Value,
        /// Its status, e.g. `WORKING`.
        status: String,
    },
    /// Could not be looked at (router down, 5xx…).
    Unknown(String),
}

/// The decision for one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the profile.
    Import {
        /// Files to send.
        files: u64,
        /// Bytes to send.
        bytes: u64,
    },
    /// Already imported by an earlier run; nothing to do.
    Skip(String),
    /// The target exists and is not ours: refuse.
    Conflict(String),
    /// Cannot proceed (bad profile, target unknown).
    Fail(String),
}

/// Decides one row: `source`/`client_id` name the profile, `local` and `target` are what was
/// found, `max_bytes` the size cap (0: none).
pub fn decide(
    source: &str,
    client_id: &str,
    local: &Local,
    target: &Target,
    max_bytes: u64,
) -> Action {
    match target {
        Target::Unknown(why) => return Action::Fail(format!("cannot check the target: {why}")),
        Target::Exists { metadata, status } => {
            return match ImportRecord::from_metadata(metadata) {
                Some(r) if r.source == source && r.client_id == client_id => Action::Skip(format!(
                    "already imported ({} files, {} bytes), status {status}",
                    r.files, r.bytes
                )),
                Some(r) => Action::Conflict(format!(
                    "the session exists, imported from {} {:?}; not overwritten",
                    r.source, r.client_id
                )),
                None => Action::Conflict(format!(
                    "the session exists (status {status}); not overwritten"
                )),
            };
        }
        Target::Absent => {}
    }
    match local {
        Local::Unusable(why) => Action::Fail(why.clone()),
        Local::Ready { bytes, .. } if max_bytes > 0 && *bytes > max_bytes => Action::Fail(format!(
            "profile has {bytes} bytes without caches, more than the cap of {max_bytes}"
        )),
        Local::Ready { files: 0, .. } => Action::Fail("profile has no files".into()),
        Local::Ready { files, bytes } => Action::Import {
            files: *files,
            bytes: *bytes,
        },
    }
}

/// How one row ended (the report's `result` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Imported (or, in a dry run, would be).
    Imported,
    /// Nothing to do: imported before.
    Skipped,
    /// The target exists and was left alone.
    Conflict,
    /// Failed; the message says why.
    Failed,
}

impl Outcome {
    /// The word printed in the text report.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Imported => "imported",
            Outcome::Skipped => "skipped",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
        }
    }

    /// Whether the row makes the command exit non-zero.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Conflict | Outcome::Failed)
    }
}

/// Counts per outcome, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Rows imported.
    pub imported: usize,
    /// Rows skipped.
    pub skipped: usize,
    /// Rows in conflict.
    pub conflict: usize,
    /// Rows failed.
    pub failed: usize,
}

impl Summary {
    /// Adds one outcome.
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Imported => self.imported += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Conflict => self.conflict += 1,
            Outcome::Failed => self.failed += 1,
        }
    }

    /// Whether every row succeeded or was skipped.
    pub fn ok(&self) -> bool {
        self.conflict == 0 && self.failed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exists(meta: serde_json::Value) -> Target {
        Target::Exists {
            metadata: meta,
            status: "WORKING".into(),
        }
    }

    #[test]
    fn absent_targets_with_a_good_profile_are_imported() {
        let local = Local::Ready {
            files: 3,
            bytes: 10,
        };
        assert_eq!(
            decide("wwebjs", "acme", &local, &Target::Absent, 100),
            Action::Import {
                files: 3,
                bytes: 10
            }
        );
        // No cap.
        assert!(matches!(
            decide(
                "wwebjs",
                "acme",
                &Local::Ready {
                    files: 1,
                    bytes: u64::MAX
                },
                &Target::Absent,
                0
            ),
            Action::Import { .. }
        ));
    }

    #[test]
    fn our_own_earlier_import_is_skipped_anything_else_conflicts() {
        let local = Local::Ready {
            files: 3,
            bytes: 10,
        };
        let ours = json!({"wafleet_import": {"source": "wwebjs", "client_id": "acme", "files": 3, "bytes": 10, "at_ms": 1}});
        assert!(matches!(
            decide("wwebjs", "acme", &local, &exists(ours.clone()), 0),
            Action::Skip(_)
        ));
        // Even a profile that is gone locally now: the import happened.
        assert!(matches!(
            decide(
                "wwebjs",
                "acme",
                &Local::Unusable("gone".into()),
                &exists(ours.clone()),
                0
            ),
            Action::Skip(_)
        ));
        assert!(matches!(
            decide("wwebjs", "other", &local, &exists(ours.clone()), 0),
            Action::Conflict(_)
        ));
        assert!(matches!(
            decide("tar", "acme", &local, &exists(ours), 0),
            Action::Conflict(_)
        ));
        assert!(matches!(
            decide("wwebjs", "acme", &local, &exists(json!({"tenant": 4})), 0),
            Action::Conflict(_)
        ));
        assert!(matches!(
            decide(
                "wwebjs",
                "acme",
                &local,
                &exists(json!({"wafleet_import": "garbage"})),
                0
            ),
            Action::Conflict(_)
        ));
    }

    #[test]
    fn bad_profiles_unknown_targets_and_oversize_fail() {
        let local = Local::Ready {
            files: 3,
            bytes: 1000,
        };
        assert!(matches!(
            decide("wwebjs", "a", &local, &Target::Unknown("503".into()), 0),
            Action::Fail(_)
        ));
        assert!(
            matches!(decide("wwebjs", "a", &local, &Target::Absent, 999), Action::Fail(m) if m.contains("cap"))
        );
        assert!(matches!(
            decide("wwebjs", "a", &Local::Unusable("no such directory".into()), &Target::Absent, 0),
            Action::Fail(m) if m.contains("no such")
        ));
        assert!(matches!(
            decide(
                "wwebjs",
                "a",
                &Local::Ready { files: 0, bytes: 0 },
                &Target::Absent,
                0
            ),
            Action::Fail(_)
        ));
    }

    #[test]
    fn summaries_count_and_judge() {
        let mut s = Summary::default();
        s.add(Outcome::Imported);
        s.add(Outcome::Skipped);
        assert!(s.ok());
        s.add(Outcome::Conflict);
        assert!(!s.ok());
        assert!(Outcome::Failed.is_failure() && !Outcome::Skipped.is_failure());
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            json!({"imported":1,"skipped":1,"conflict":1,"failed":0})
        );
    }
}
