//! What the driver publishes ([`Status`]) and the state its tasks share ([`Shared`]): the host,
//! the current shard map and the status channel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};

use super::MAX_CONCURRENT_ACQUIRES;
use crate::ids::WorkspaceId;
use crate::shard::ShardMap;
use crate::worker::host::SessionHost;
use crate::worker::ownership::Phase;

/// What the worker is doing, as published to the HTTP surface and the state endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Holds the shard lock and a map, registered, serving.
    pub ready: bool,
    /// The last term was fenced and no new term is ready yet.
    pub fenced: bool,
    /// Shutdown requested.
    pub draining: bool,
    /// The current term's session id.
    pub session: Option<String>,
    /// How many terms were opened (1 for a worker that was never fenced).
    pub term: u64,
    /// The version of the map in use.
    pub map_version: Option<u64>,
    /// Every workspace this worker is handling, with its phase.
    pub workspaces: BTreeMap<WorkspaceId, Phase>,
    /// How many times the host saw another live process running one of its workspaces.
    pub overlaps: u64,
    /// Why the worker is not ready, when it is held back before any term (e.g. the shared
    /// volume is missing); shown in the `/readyz` body.
    pub reason: Option<String>,
}

/// State shared by the runner and the HTTP handlers.
pub struct Shared {
    /// This worker's shard.
    pub shard: u32,
    /// The data directory (`<data>/workspaces/<ws>/…`).
    pub data: PathBuf,
    /// The session host.
    pub host: Arc<dyn SessionHost>,
    /// The latest valid shard map (`None` until one was read).
    pub map: watch::Receiver<Option<Arc<ShardMap>>>,
    /// Published status; the runner is the only writer.
    pub status: watch::Sender<Status>,
    /// Workspaces this worker knows exist (directory scan and API creates). Lives across terms.
    known: Mutex<BTreeSet<WorkspaceId>>,
    /// Wakes the runner after `known` grew.
    pub(super) poke: Notify,
    /// Bounds concurrent workspace lock attempts (each may hold a blocking query open).
    pub(super) acquiring: Arc<Semaphore>,
    /// Messaging (shard store, webhooks, send queue): opened while the shard lock is held.
    pub messaging: std::sync::OnceLock<Arc<crate::worker::messaging::Messaging>>,
}

// === impl Shared ===

impl Shared {
    /// Shared state for a worker of `shard` storing under `data`.
    pub fn new(
        shard: u32,
        data: PathBuf,
        host: Arc<dyn SessionHost>,
        map: watch::Receiver<Option<Arc<ShardMap>>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shard,
            data,
            host,
            map,
            status: watch::Sender::new(Status::default()),
            known: Mutex::new(BTreeSet::new()),
            poke: Notify::new(),
            acquiring: Arc::new(Semaphore::new(MAX_CONCURRENT_ACQUIRES)),
            messaging: std::sync::OnceLock::new(),
        })
    }

    /// The current map, if any.
    pub fn current_map(&self) -> Option<Arc<ShardMap>> {
        self.map.borrow().clone()
    }

    /// Records that `ws` exists (created through the API or found on disk) and wakes the runner.
    pub fn ensure(&self, ws: &WorkspaceId) {
        let added = self.known_lock().insert(ws.clone());
        if added {
            self.poke.notify_one();
        }
    }

    /// Whether `ws` is known.
    pub fn is_known(&self, ws: &WorkspaceId) -> bool {
        self.known_lock().contains(ws)
    }

    pub(super) fn known_lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<WorkspaceId>> {
        // Poisoning only means a panic elsewhere mid-insert; the set is still a valid set.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The desired set under `map`: known workspaces that the map assigns to this shard.
    pub(super) fn desired(&self, map: Option<&ShardMap>) -> BTreeSet<WorkspaceId> {
        let Some(map) = map else {
            return BTreeSet::new();
        };
        self.known_lock()
            .iter()
            .filter(|ws| map.owner(ws) == Some(self.shard))
            .cloned()
            .collect()
    }

    /// Adds every valid workspace directory under `<data>/workspaces/` to `known`.
    pub(super) async fn rescan(&self) {
        let dir = self.data.join("workspaces");
        let found = tokio::task::spawn_blocking(move || scan_workspaces(&dir)).await;
        match found {
            Ok(Ok(found)) => {
                self.known_lock().extend(found);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not scan the workspace directory"),
            Err(e) => tracing::warn!(error = %e, "workspace scan task failed"),
        }
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }
}

/// Lists the valid workspace ids under `dir` (missing directory: none).
pub fn scan_workspaces(dir: &Path) -> std::io::Result<Vec<WorkspaceId>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(ws) = entry
            .file_name()
            .to_str()
            .and_then(|n| WorkspaceId::new(n).ok())
        {
            out.push(ws);
        }
    }
    Ok(out)
}
