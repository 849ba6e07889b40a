//! Moving session profiles in and out of wafleet: `wafleet import wwebjs` adopts
//! whatsapp-web.js LocalAuth sessions, `wafleet import tar` and `wafleet export` move one
//! session's profile as a tar (docs/migration.md).
//!
//! A LocalAuth session is a whole Chromium user-data-dir, `<dataPath>/session-<clientId>/`;
//! wafleet's is `<data>/workspaces/<ws>/<s>/profile/` (DESIGN §5), so adopting one is a copy of
//! that directory (caches left out) plus a `session.json`. The copy travels as a tar stream:
//! through the router to the worker that owns the workspace (`PUT …/sessions/{s}/profile`,
//! unpacked under the workspace lock), or straight into a stopped shard's volume (`--data`).
//! Either way the same code stages it: unpack into a hidden directory next to the target,
//! verify the announced file count and bytes, write `session.json`, rename into place — so a
//! refused, truncated or oversized upload leaves nothing behind.
//!
//! * [`map`], [`plan`], [`tar`]: PURE — the CSV map, the per-row decision (import, skip,
//!   conflict), the streaming tar reader and the writer's headers.
//! * [`profile`]: listing a profile, tar streams both ways, caps.
//! * [`stage`]: the staging directory and the rename into place.
//! * [`client`] and [`cli`]: the commands.

pub mod cli;
pub mod client;
pub mod map;
pub mod plan;
pub mod profile;
pub mod stage;
pub mod tar;

use std::path::PathBuf;
use std::time::Duration;

/// The header announcing how many regular files a profile tar holds.
pub const FILES_HEADER: &str = "wafleet-profile-files";
/// The header announcing the total bytes of those files.
pub const BYTES_HEADER: &str = "wafleet-profile-bytes";
/// The header naming where an uploaded profile came from (`wwebjs`, `tar`).
pub const SOURCE_HEADER: &str = "wafleet-import-source";
/// The header naming the whatsapp-web.js client id of an uploaded profile.
pub const CLIENT_ID_HEADER: &str = "wafleet-import-client-id";

/// Everything that can go wrong moving a profile.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The tar stream was refused.
    #[error(transparent)]
    Tar(#[from] tar::TarError),
    /// The stream passed the size cap.
    #[error("the profile is larger than the cap of {0} bytes")]
    TooLarge(u64),
    /// No bytes arrived for too long.
    #[error("the upload stalled for {0:?}")]
    Stalled(Duration),
    /// Reading the request body failed.
    #[error("reading the body: {0}")]
    Body(String),
    /// What was unpacked is not what the sender announced.
    #[error(
        "the tar holds {files} files / {bytes} bytes but {expected_files} files / {expected_bytes} bytes were announced"
    )]
    Mismatch {
        /// Announced files.
        expected_files: u64,
        /// Announced bytes.
        expected_bytes: u64,
        /// Files unpacked.
        files: u64,
        /// Bytes unpacked.
        bytes: u64,
    },
    /// The target session already exists; nothing was overwritten.
    #[error("session {0} already exists; not overwritten")]
    Exists(String),
    /// A profile file changed while it was read (a browser still runs on it).
    #[error("{0} changed while it was read; stop the browser using this profile first")]
    Changed(PathBuf),
    /// A profile is in use by a running browser.
    #[error("{path} is in use by {holder}; stop it first")]
    InUse {
        /// The profile.
        path: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// An HTTP call failed (CLI).
    #[error("{0}")]
    Http(String),
    /// Bad input (arguments, map file, announced totals, …).
    #[error("{0}")]
    Invalid(String),
    /// The command finished with failed rows (already reported per row).
    #[error("{0}")]
    Failed(String),
}
