//! Staging an imported profile next to its target and moving it into place.
//!
//! `<data>/workspaces/<ws>/.import-<s>-<ulid>/profile/` receives the unpacked tar; once it is
//! verified, `session.json` is written beside it and the staging directory is renamed to
//! `<data>/workspaces/<ws>/<s>/`. The name starts with a dot, so no worker ever takes it for a
//! session (only valid ids are read), and the rename is atomic on one filesystem: the session
//! appears complete or not at all. A target that exists is never replaced — rename(2) over a
//! non-empty directory fails — and every failure removes the staging directory.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::Stream;

use super::MigrateError;
use super::profile::{self, UnpackLimits, Unpacked};
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::engine_host::PROFILE_DIR;
use crate::worker::host::SessionConfig;
use crate::worker::layout::{SESSION_FILE, workspace_dir};

/// Prefix of staging directories inside a workspace directory.
pub const STAGING_PREFIX: &str = ".import-";

/// `<data>/workspaces/<ws>/<s>`.
pub fn session_dir(data: &Path, ws: &WorkspaceId, s: &SessionId) -> PathBuf {
    workspace_dir(data, ws).join(s.as_str())
}

/// A verified profile waiting to be moved into place.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    target: PathBuf,
    /// What was unpacked.
    pub unpacked: Unpacked,
}

/// Whether the session directory exists (with anything in it, even without `session.json`).
pub fn session_exists(data: &Path, ws: &WorkspaceId, s: &SessionId) -> bool {
    std::fs::symlink_metadata(session_dir(data, ws, s)).is_ok()
}

/// Unpacks `stream` into a fresh staging directory for `<ws>/<s>` and checks it holds exactly
/// `files` files and `bytes` bytes. Refuses ([`MigrateError::Exists`]) when the session
/// directory exists. On any error nothing is left behind.
pub async fn stage<S, E>(
    data: &Path,
    ws: &WorkspaceId,
    s: &SessionId,
    stream: S,
    limits: UnpackLimits,
    files: u64,
    bytes: u64,
) -> Result<Staged, MigrateError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let target = session_dir(data, ws, s);
    if session_exists(data, ws, s) {
        return Err(MigrateError::Exists(format!("{ws}/{s}")));
    }
    let parent = workspace_dir(data, ws);
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| MigrateError::Io {
            op: "mkdir",
            path: parent.clone(),
            source: e,
        })?;
    let dir = parent.join(format!("{STAGING_PREFIX}{s}-{}", ulid::Ulid::new()));
    let result = async {
        tokio::fs::create_dir(&dir)
            .await
            .map_err(|e| MigrateError::Io {
                op: "mkdir",
                path: dir.clone(),
                source: e,
            })?;
        let got = profile::unpack(stream, &dir.join(PROFILE_DIR), limits).await?;
        profile::verify(got, files, bytes)?;
        Ok(got)
    }
    .await;
    match result {
        Ok(unpacked) => Ok(Staged {
            dir,
            target,
            unpacked,
        }),
        Err(e) => {
            profile::remove_tree(&dir).await;
            Err(e)
        }
    }
}

impl Staged {
    /// The staged profile directory (for removing stale `Singleton*` files under the lock).
    pub fn profile(&self) -> PathBuf {
        self.dir.join(PROFILE_DIR)
    }

    /// Writes `session.json` and renames the staging directory into place. Refuses when the
    /// session appeared meanwhile; on error the staging directory is removed.
    pub async fn commit(self, config: &SessionConfig) -> Result<PathBuf, MigrateError> {
        let result = async {
            let body = serde_json::to_vec_pretty(config)
                .map_err(|e| MigrateError::Invalid(e.to_string()))?;
            let file = self.dir.join(SESSION_FILE);
            tokio::fs::write(&file, body)
                .await
                .map_err(|e| MigrateError::Io {
                    op: "write",
                    path: file,
                    source: e,
                })?;
            match std::fs::symlink_metadata(&self.target) {
                Ok(_) => return Err(MigrateError::Exists(self.target.display().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(MigrateError::Io {
                        op: "stat",
                        path: self.target.clone(),
                        source: e,
                    });
                }
            }
            tokio::fs::rename(&self.dir, &self.target)
                .await
                .map_err(|e| match e.raw_os_error() {
                    // ENOTEMPTY / EEXIST: the session was created between the check and here.
                    Some(39) | Some(17) => MigrateError::Exists(self.target.display().to_string()),
                    _ => MigrateError::Io {
                        op: "rename",
                        path: self.dir.clone(),
                        source: e,
                    },
                })
        }
        .await;
        match result {
            Ok(()) => Ok(self.target),
            Err(e) => {
                profile::remove_tree(&self.dir).await;
                Err(e)
            }
        }
    }

    /// Gives up: removes the staging directory.
    pub async fn abort(self) {
        profile::remove_tree(&self.dir).await;
    }
}

/// The staging directories left in a workspace (a crash mid-import), for tests and cleanup.
pub fn leftovers(data: &Path, ws: &WorkspaceId) -> Vec<PathBuf> {
    std::fs::read_dir(workspace_dir(data, ws))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
