//! The session directory layout on the shared volume (DESIGN §5), used by every session host
//! and by whatever reads a session's configuration without running it (webhook delivery,
//! import and export):
//!
//! ```text
//! <data>/workspaces/<ws>/<session>/session.json   the session's configuration (atomic writes)
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

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
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

/// `<data>/workspaces/<ws>/<s>/session.json`.
pub fn session_file(data: &Path, ws: &WorkspaceId, s: &SessionId) -> PathBuf {
    workspace_dir(data, ws).join(s.as_str()).join(SESSION_FILE)
}
