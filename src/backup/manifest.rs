//! The backup manifest (`manifest.json`): what a backup holds, with a sha256 per file.
//!
//! Paths in the manifest are relative to the session directory inside the backup
//! (`workspaces/<ws>/<s>/`), use `/` separators and only normal components; [`FileEntry::rel_path`]
//! re-checks that when a manifest is read back, so a tampered manifest cannot escape the target.

use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::BackupError;
use crate::ids::{SessionId, WorkspaceId};

/// Name of the manifest file at the root of every backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// What one backup directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// When the backup started, RFC 3339 UTC (`2026-11-28T20:00:00Z`).
    pub created_at: String,
    /// When the backup started, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Host that took the backup (to interpret `SingletonLock` owners).
    pub host: String,
    /// Sessions copied.
    pub sessions: Vec<SessionEntry>,
    /// Sessions not copied, with the reason.
    pub skipped: Vec<SkippedEntry>,
    /// Directory and file names left out of every profile.
    pub excluded: Vec<String>,
}

/// One session copied into the backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Workspace id.
    pub workspace: WorkspaceId,
    /// Session id.
    pub session: SessionId,
    /// `quiescent` (no live Chromium) or `live-verified` (two identical passes).
    pub mode: String,
    /// Every file copied, relative to the session directory (`profile/…`, `session.json`).
    pub files: Vec<FileEntry>,
}

/// One copied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// A session left out of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// Workspace id.
    pub workspace: WorkspaceId,
    /// Session id.
    pub session: SessionId,
    /// Why, for the operator.
    pub reason: String,
}

// === impl FileEntry ===

impl FileEntry {
    /// The entry's path as a relative `PathBuf`, refusing absolute paths, `..`, `.` and empty
    /// components.
    pub fn rel_path(&self) -> Result<PathBuf, BackupError> {
        let p = Path::new(&self.path);
        let ok = !self.path.is_empty()
            && !self.path.contains('\\')
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if ok {
            Ok(p.to_path_buf())
        } else {
            Err(BackupError::Manifest {
                path: PathBuf::from(&self.path),
                message: "file path is not a plain relative path".into(),
            })
        }
    }
}

// === impl Manifest ===

impl Manifest {
    /// Reads and checks `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| BackupError::io("read", &path, e))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| BackupError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(BackupError::Manifest {
                path,
                message: format!("unsupported format {}", m.format),
            });
        }
        for s in &m.sessions {
            for f in &s.files {
                f.rel_path()?;
            }
        }
        Ok(m)
    }

    /// Writes `<dir>/manifest.json` and flushes it to disk.
    pub fn write(&self, dir: &Path) -> Result<(), BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| BackupError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_synced(&path, &bytes)
    }

    /// The entry for one session, if the backup holds it.
    pub fn session(&self, ws: &WorkspaceId, s: &SessionId) -> Option<&SessionEntry> {
        self.sessions
            .iter()
            .find(|e| &e.workspace == ws && &e.session == s)
    }
}

/// Writes `bytes` to `path` and fsyncs it (backups live on NFS or a mounted bucket, where an
/// unsynced close may still lose data).
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| BackupError::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| BackupError::io("write", path, e))
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// UTC calendar fields of `t`: (year, month, day, hour, minute, second).
fn utc_fields(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = i64::try_from(unix_ms(t) / 1000).unwrap_or(i64::MAX);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days: proleptic Gregorian calendar from a day count.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The casts below are of values bounded by the arithmetic above (day ≤ 31, month ≤ 12,
    // hours < 24, minutes and seconds < 60), so they cannot truncate.
    (
        year,
        month as u32,
        day as u32,
        (sod / 3600) as u32,
        ((sod % 3600) / 60) as u32,
        (sod % 60) as u32,
    )
}

/// RFC 3339 UTC timestamp with second precision: `2026-11-28T20:03:07Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Compact UTC timestamp for directory names: `20261128T200307Z` (sorts by time).
pub(crate) fn compact(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_known_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_896_187); // 2026-11-28T20:03:07Z
        assert_eq!(rfc3339(t), "2026-11-28T20:03:07Z");
        assert_eq!(compact(t), "20261128T200307Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn manifest_paths_must_be_plain_relative() {
        let e = |p: &str| FileEntry {
            path: p.into(),
            size: 0,
            sha256: String::new(),
        };
        assert!(e("profile/Default/Cookies").rel_path().is_ok());
        for bad in ["", "/etc/passwd", "../x", "profile/../../x", "./x", "a\\b"] {
            assert!(e(bad).rel_path().is_err(), "{bad:?} accepted");
        }
    }
}
