//! The session directory layout on the shared volume (DESIGN §5), used by every session host
//! and by whatever reads a session's configuration without running it (webhook delivery,
//! import and export):
//!
//! ```text
//! <data>/workspaces/<ws>/<session>/session.json   the session's configuration (durable writes)
//! <data>/workspaces/<ws>/<session>/profile/       the Chromium user-data-dir (engine host)
//! ```
//!
//! Workspace and session ids are validated types ([`WorkspaceId`], [`SessionId`]), so nothing
//! else reaches a path.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::host::{HostError, SessionConfig};
use crate::ids::{SessionId, WorkspaceId};

/// The config file name inside a session directory.
pub const SESSION_FILE: &str = "session.json";

/// Current time in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `<data>/workspaces/<ws>`.
pub fn workspace_dir(data: &Path, ws: &WorkspaceId) -> PathBuf {
    data.join("workspaces").join(ws.as_str())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half;
/// NOT durable (no fsync): for files that are rebuilt when lost (caches, snapshots, owner
/// records renewed on a timer). Configuration goes through [`write_durable`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes `bytes` to `path` durably: into a temporary file next to it, fsynced, renamed over
/// `path`, then the directory fsynced. Readers never see half a file, and once this returns
/// the new content survives a crash or power loss (the rename alone may be reordered before
/// the data reaches the disk, leaving an empty file; the directory sync makes the rename
/// itself durable). Every writer of files others rely on (`session.json`, handoff records)
/// goes through here.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path` (makes a rename or create in it durable).
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Reads every `session.json` of a workspace; directories that are not valid session ids are
/// skipped (nothing else reaches a path).
pub fn read_session_configs(dir: &Path) -> Result<Vec<SessionConfig>, HostError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if SessionId::new(&name).is_err() || !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path().join(SESSION_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let config: SessionConfig =
            serde_json::from_slice(&bytes).map_err(|source| HostError::Corrupt {
                path: path.display().to_string(),
                source,
            })?;
        out.push(config);
    }
    Ok(out)
}

/// Writes a session's configuration durably to `<dir>/session.json` (creating `dir`),
/// normalized first ([`SessionConfig::normalize`]).
pub fn write_session_config(dir: &Path, config: &SessionConfig) -> Result<(), HostError> {
    std::fs::create_dir_all(dir)?;
    let mut config = config.clone();
    config.normalize();
    let body = serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?;
    write_durable(&dir.join(SESSION_FILE), &body)?;
    Ok(())
}

/// `<data>/workspaces/<ws>/<s>/session.json`.
pub fn session_file(data: &Path, ws: &WorkspaceId, s: &SessionId) -> PathBuf {
    workspace_dir(data, ws).join(s.as_str()).join(SESSION_FILE)
}
