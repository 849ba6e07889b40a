//! Profile backups (`wafleet backup` / `wafleet restore`): consistent copies with checksums and
//! retention.
//!
//! A session's Chromium profile (`<data>/workspaces/<ws>/<s>/profile/`) is a set of LevelDB,
//! SQLite and IndexedDB files that Chromium rewrites while it runs. Copying it blindly can
//! capture a half-written LevelDB, so a profile is copied only when it is *quiescent*:
//!
//! * `quiescent`: no live Chromium holds it (its `SingletonLock` symlink is absent, or points to
//!   `<this host>-<pid>` with no such process); or
//! * `live-verified`: a Chromium may hold it (a live pid on this host, or a lock from another
//!   host, which we cannot check on shared storage);
//!
//! and in both cases two passes — the copy, then a re-read of every source file — saw the same
//! names, sizes, mtimes and sha256 (a Chromium in another pid namespace can look dead, so the
//! content check is never skipped). Otherwise the session is retried a few times and then
//! reported as skipped; the next run tries again.
//!
//! Each run writes a timestamped directory `wafleet-backup-<UTC>` under `--dest` (built as a
//! hidden `.partial` directory and renamed when complete) with a `manifest.json` that lists the
//! sha256 of every file, then keeps only the newest N backups. Restore verifies every checksum,
//! refuses a profile that a Chromium may hold, and swaps the new profile in by rename.
//!
//! Chromium caches are not backed up (see [`EXCLUDED_DIRS`]); Chromium rebuilds them.
//! This module does not talk to Consul: stopping a session before restoring it is the
//! operator's job (docs/operations.md).

pub mod cli;
mod manifest;
mod profile;
mod run;

pub use manifest::{FileEntry, MANIFEST_FILE, Manifest, SessionEntry, SkippedEntry};
pub use profile::{EXCLUDED_DIRS, EXCLUDED_FILES, Holder, holder, local_hostname};
pub use run::{
    BACKUP_PREFIX, BackupOptions, BackupReport, BetweenPasses, RestoreReport, backup, list_backups,
    prune, restore,
};

use std::path::PathBuf;

/// Everything that can go wrong in a backup or a restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The data directory is not the shared volume (no `.wafleet-volume` sentinel): backing
    /// up an empty local mount point would rotate good backups out for empty ones.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing ("read", "copy", "rename", …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A manifest could not be read or written.
    #[error("manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A copied file does not match the checksum the manifest records.
    #[error("checksum mismatch for {path}: manifest says {expected}, file has {actual}")]
    ChecksumMismatch {
        /// The file inside the backup.
        path: PathBuf,
        /// The sha256 in the manifest.
        expected: String,
        /// The sha256 of the bytes read.
        actual: String,
    },
    /// The backup holds no copy of the requested session.
    #[error("no backup of workspace {workspace} session {session} under {backup}")]
    NotInBackup {
        /// Workspace id.
        workspace: String,
        /// Session id.
        session: String,
        /// The backup directory (or backup root) searched.
        backup: PathBuf,
    },
    /// The target profile may be in use by a Chromium, so it is not overwritten.
    #[error(
        "profile {path} is in use ({holder}); stop the session first (POST …/sessions/{{s}}/stop)"
    )]
    InUse {
        /// The profile directory.
        path: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// The backup completed but left sessions out (listed in its manifest and report); the
    /// command exits non-zero so the scheduler retries and the operator sees it.
    #[error("backup {backup} is incomplete: {skipped} session(s) skipped, see its manifest")]
    Incomplete {
        /// How many sessions were skipped.
        skipped: usize,
        /// The backup directory written.
        backup: PathBuf,
    },
    /// A background task failed to run to completion.
    #[error("backup task failed: {0}")]
    Task(String),
    /// An argument was invalid.
    #[error("{0}")]
    Invalid(String),
}

impl BackupError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BackupError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
