//! Moving a workspace's messaging state with the workspace (docs/worker.md "Handoff").
//!
//! The shard store is per shard, so when the map moves a workspace the rows it has there —
//! queued and sent messages, idempotency records, events, session states — must follow it, or
//! a message accepted just before the move is never sent and never failed, and the acks of
//! sent ones find nothing on the new shard. The old owner, still holding the workspace lock
//! after the workspace stopped, writes them to `<data>/workspaces/<ws>/handoff.json` (durably:
//! fsync, rename, fsync of the directory), then deletes them from its store, then releases the
//! lock ([`Messaging::hand_off`]). The new owner, once it holds the lock and before the
//! workspace starts, replaces its own rows for the workspace with the file's, fails the sends
//! that were in flight (`interrupted`, as after a crash) and deletes the file
//! ([`Messaging::take_over`]). A crash at any step leaves either the file (imported by whoever
//! takes the workspace next; importing replaces, so doing it twice is harmless) or the old rows.
//!
//! Submissions race with the export: [`Messaging::admit`] holds the workspace's gate for reading
//! across the check and the insert, the export holds it for writing, and a workspace handed off
//! stays closed to submissions (503, the client retries and the router finds the new owner)
//! until this worker takes it over again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedRwLockReadGuard, RwLock};
use tracing::{error, info, warn};

use super::Messaging;
use crate::api::ApiError;
use crate::ids::WorkspaceId;
use crate::store::{StoreError, WorkspaceRecord};
use crate::worker::layout::{now_ms, workspace_dir};
use crate::worker::request::unavailable;

/// The file a workspace's messaging state travels in, inside the workspace directory.
pub const HANDOFF_FILE: &str = "handoff.json";

/// How long the export waits for sends in flight on the stopped workspace to finish.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// Why a handoff step failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The shard store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The handoff file could not be written, read or removed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file operation's task did not finish (the runtime is shutting down).
    #[error("file task: {0}")]
    Task(String),
}

/// What a handoff step moved, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Messages in the log.
    pub messages: usize,
    /// Of which still queued.
    pub queued: usize,
    /// Events not delivered yet.
    pub pending_events: usize,
    /// Sends in flight at the export, failed as `interrupted` by the importer.
    pub interrupted: usize,
}

impl Moved {
    fn of(record: &WorkspaceRecord) -> Self {
        Self {
            messages: record.messages.len(),
            queued: record.queued(),
            pending_events: record.pending_events(),
            interrupted: record.claimed().len(),
        }
    }
}

/// `<data>/workspaces/<ws>/handoff.json`.
pub fn handoff_path(data: &Path, ws: &WorkspaceId) -> PathBuf {
    workspace_dir(data, ws).join(HANDOFF_FILE)
}

/// The per-workspace gates: `true` while the workspace is handed off (closed to submissions).
pub(super) type Gates = std::sync::Mutex<std::collections::HashMap<WorkspaceId, Arc<RwLock<bool>>>>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HandoffError + use<> {
    let path = path.to_owned();
    move |source| HandoffError::Io { what, path, source }
}

/// Writes `bytes` to `path` so that it survives a crash once this returns (the worker's one
/// durable writer, [`crate::worker::layout::write_durable`]).
fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), HandoffError> {
    crate::worker::layout::write_durable(path, bytes).map_err(io("write", path))
}

fn sync_dir(path: &Path) -> Result<(), HandoffError> {
    crate::worker::layout::sync_dir(path).map_err(io("fsync", path))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HandoffError> + Send + 'static,
) -> Result<T, HandoffError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(HandoffError::Task(e.to_string())))
}

// === impl Messaging ===

impl Messaging {
    fn gate(&self, ws: &WorkspaceId) -> Arc<RwLock<bool>> {
        self.gates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ws.clone())
            .or_default()
            .clone()
    }

    /// Holds `ws` open for one submission: keep the guard until the message is in the store.
    /// 503 `workspace_unavailable` (with `Retry-After`) once the workspace was handed off.
    pub async fn admit(&self, ws: &WorkspaceId) -> Result<OwnedRwLockReadGuard<bool>, ApiError> {
        let guard = self.gate(ws).read_owned().await;
        if *guard {
            return Err(unavailable(
                "workspace_unavailable",
                &format!("workspace {ws} is being handed over to another shard; retry"),
            ));
        }
        Ok(guard)
    }

    /// The old owner's step: writes `ws`'s rows to its handoff file and deletes them from this
    /// shard's store. Call after the workspace stopped and before its lock is released. `None`
    /// when the store is not open this term (it then holds nothing this term could move).
    pub async fn hand_off(&self, ws: &WorkspaceId) -> Result<Option<Moved>, HandoffError> {
        let gate = self.gate(ws);
        let mut closed = gate.write().await;
        // Closed from now on, whatever happens below: the workspace is no longer ours.
        *closed = true;
        let Some(active) = self.active() else {
            warn!(workspace = %ws, "handoff: the shard store is not open; nothing to move");
            return Ok(None);
        };
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let record = loop {
            let record = active.store.export_workspace(ws).await?;
            if record.claimed().is_empty() || tokio::time::Instant::now() >= deadline {
                break record;
            }
            // A send the dispatcher began before the session stopped is finishing (it fails
            // at once now that the session is gone): wait for it, bounded.
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let moved = Moved::of(&record);
        let path = handoff_path(&self.data, ws);
        let bytes = serde_json::to_vec(&record).map_err(|e| {
            io("encode", &path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        {
            let path = path.clone();
            blocking(move || write_durable(&path, &bytes)).await?;
        }
        active.store.forget_workspace(ws).await?;
        info!(workspace = %ws, messages = moved.messages, queued = moved.queued,
            pending_events = moved.pending_events, in_flight = moved.interrupted,
            "handoff: messaging state written for the next owner");
        Ok(Some(moved))
    }

    /// The new owner's step: imports `ws`'s handoff file, if there is one, replacing this
    /// store's rows for it, fails the sends that were in flight, removes the file and opens the
    /// workspace to submissions. Call once the workspace lock is held, before it starts.
    ///
    /// A file that cannot be parsed, or whose import keeps failing, is renamed aside
    /// (`handoff.failed-<ms>.json`, kept for the operator) so that it is never imported over
    /// newer rows later; the error is logged.
    pub async fn take_over(&self, ws: &WorkspaceId) -> Result<Option<Moved>, HandoffError> {
        let gate = self.gate(ws);
        let mut closed = gate.write().await;
        let path = handoff_path(&self.data, ws);
        let Some(active) = self.active() else {
            // Submissions fail anyway without a store; the file waits for a term that has one.
            *closed = false;
            return Ok(None);
        };
        let read = {
            let path = path.clone();
            blocking(move || match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io("read", &path)(e)),
            })
            .await?
        };
        let Some(bytes) = read else {
            *closed = false;
            return Ok(None);
        };
        let record = match serde_json::from_slice::<WorkspaceRecord>(&bytes) {
            Ok(r) if r.workspace == ws.as_str() => r,
            Ok(r) => {
                error!(workspace = %ws, named = %r.workspace, "handoff file names another workspace; set aside");
                self.set_aside(&path).await;
                *closed = false;
                return Ok(None);
            }
            Err(e) => {
                error!(workspace = %ws, error = %e, "corrupt handoff file; set aside");
                self.set_aside(&path).await;
                *closed = false;
                return Ok(None);
            }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match active.store.import_workspace(&record).await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    warn!(workspace = %ws, attempt, error = %e, "handoff import failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                Err(e) => {
                    error!(workspace = %ws, error = %e, "handoff import failed; file set aside, its messages are not sent");
                    self.set_aside(&path).await;
                    *closed = false;
                    return Err(e.into());
                }
            }
        }
        let moved = Moved::of(&record);
        active
            .sendq
            .fail_interrupted(&record.claimed(), "a handoff")
            .await;
        let removed = {
            let path = path.clone();
            blocking(move || {
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                sync_dir(&path)
            })
            .await
        };
        if let Err(e) = removed {
            // Left in place it would be imported again over this shard's newer rows.
            error!(workspace = %ws, error = %e, "cannot remove the imported handoff file");
            self.set_aside(&path).await;
        }
        *closed = false;
        info!(workspace = %ws, messages = moved.messages, queued = moved.queued,
            pending_events = moved.pending_events, interrupted = moved.interrupted,
            "handoff: messaging state taken over");
        Ok(Some(moved))
    }

    async fn set_aside(&self, path: &Path) {
        let aside = path.with_file_name(format!("handoff.failed-{}.json", now_ms()));
        let (from, to) = (path.to_owned(), aside.clone());
        if let Err(e) =
            blocking(move || std::fs::rename(&from, &to).map_err(io("rename", &from))).await
        {
            error!(error = %e, "cannot set the handoff file aside");
        } else {
            warn!(file = %aside.display(), "handoff file set aside for the operator");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handed_off_workspace_refuses_submissions_until_taken_over_again() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::new("acme").unwrap();
        std::fs::create_dir_all(workspace_dir(dir.path(), &ws)).unwrap();
        let m = Messaging::from_lookup(0, dir.path().to_owned(), |_| None).unwrap();
        m.open().await.unwrap();
        assert!(m.admit(&ws).await.is_ok());

        let moved = m.hand_off(&ws).await.unwrap().expect("the store is open");
        assert_eq!(moved, Moved::default());
        let path = handoff_path(dir.path(), &ws);
        assert!(path.exists(), "the record is written even when empty");
        let refused = m.admit(&ws).await.unwrap_err();
        assert_eq!(refused.status, http::StatusCode::SERVICE_UNAVAILABLE);

        // A corrupt file is set aside, never imported, and the workspace opens.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(m.take_over(&ws).await.unwrap().is_none());
        assert!(!path.exists());
        let aside = std::fs::read_dir(workspace_dir(dir.path(), &ws))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("handoff.failed-"))
            .count();
        assert_eq!(aside, 1);
        assert!(m.admit(&ws).await.is_ok());

        // Out and back: the file is taken over and removed.
        m.hand_off(&ws).await.unwrap();
        assert!(m.take_over(&ws).await.unwrap().is_some());
        assert!(!path.exists());
        assert!(m.admit(&ws).await.is_ok());
        m.close().await;
    }
}
