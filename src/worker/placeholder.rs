//! The browser-less session host (`--session-host placeholder`): records sessions in memory
//! and on disk and runs no browser. It is the host of the ownership, fleet and control-plane
//! scale tests (thousands of workspaces on one machine), where a Chromium per session would
//! measure the browser, not the fleet; production runs the engine host
//! ([`super::engine_host`]). What it does for real: reads and writes `session.json` through
//! the shared session layout ([`super::layout`]), and keeps an owner marker
//! `<data>/workspaces/<ws>/.owner` (`{"pid","shard"}`) while a workspace runs, which lets it
//! detect two live processes running one workspace — the condition Chromium's `SingletonLock`
//! detects for the engine. A marker left by a dead process is stale and is replaced (safe: the
//! caller holds the workspace lock). Liveness is checked through `/proc/<pid>`, so the check is
//! meaningful on one machine (dev, tests), not across NFS hosts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::host::{
    DesiredState, HostError, SessionConfig, SessionHost, SessionInfo, SessionStatus, StopMode,
    WorkspaceLease,
};
use super::layout::{
    SESSION_FILE, now_ms, read_session_configs, workspace_dir, write_atomic, write_session_config,
};
use crate::ids::{SessionId, WorkspaceId};

/// The marker file name inside a workspace directory.
pub const OWNER_MARKER: &str = ".owner";

#[derive(Debug, Clone)]
struct Running {
    config: SessionConfig,
    status: SessionStatus,
    updated_at_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    pid: u32,
    shard: u32,
}

/// The placeholder host. Cheap to construct; one per worker process.
#[derive(Debug)]
pub struct PlaceholderHost {
    data: PathBuf,
    shard: u32,
    /// Running workspaces and their sessions. A std mutex: held only for map operations, never
    /// across an await.
    running: Mutex<HashMap<WorkspaceId, BTreeMap<SessionId, Running>>>,
    overlaps: AtomicU64,
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// === impl PlaceholderHost ===

impl PlaceholderHost {
    /// A host storing under `data` and reporting `shard` in session answers.
    pub fn new(data: impl Into<PathBuf>, shard: u32) -> Self {
        Self {
            data: data.into(),
            shard,
            running: Mutex::new(HashMap::new()),
            overlaps: AtomicU64::new(0),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, BTreeMap<SessionId, Running>>> {
        // A poisoned mutex only means another thread panicked mid-update of plain data; the
        // map is still usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn info(&self, ws: &WorkspaceId, r: &Running) -> SessionInfo {
        SessionInfo {
            workspace: ws.clone(),
            session: r.config.session.clone(),
            status: r.status,
            me: None,
            shard: self.shard,
            desired: r.config.desired,
            webhook: r.config.redacted_targets().into_iter().next(),
            webhooks: r.config.redacted_targets(),
            pacing: r.config.pacing.clone(),
            metadata: r.config.metadata.clone(),
            created_at_ms: r.config.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            wa_version: None,
            last_error: None,
            restarts: 0,
            memory_bytes: None,
        }
    }

    fn publish_metrics(&self) {
        let map = self.lock();
        let mut counts: BTreeMap<SessionStatus, usize> = BTreeMap::new();
        for sessions in map.values() {
            for r in sessions.values() {
                *counts.entry(r.status).or_default() += 1;
            }
        }
        drop(map);
        for status in SessionStatus::ALL {
            metrics::gauge!("wafleet_sessions", "status" => status.as_str())
                .set(counts.get(&status).copied().unwrap_or(0) as f64);
        }
    }

    fn claim_marker(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(OWNER_MARKER);
        let me = std::process::id();
        if let Ok(bytes) = std::fs::read(&path)
            && let Ok(m) = serde_json::from_slice::<Marker>(&bytes)
            && m.pid != me
        {
            if pid_alive(m.pid) {
                self.overlaps.fetch_add(1, Ordering::Relaxed);
                tracing::error!(dir = %dir.display(), other_pid = m.pid, other_shard = m.shard,
                    "OVERLAP: another live process runs this workspace");
            } else {
                tracing::info!(dir = %dir.display(), stale_pid = m.pid, "replacing a stale owner marker");
            }
        }
        let body = serde_json::to_vec(&Marker {
            pid: me,
            shard: self.shard,
        })
        .map_err(std::io::Error::other)?;
        write_atomic(&path, &body)
    }

    fn drop_marker(dir: &Path) {
        let path = dir.join(OWNER_MARKER);
        let ours = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
            .is_some_and(|m| m.pid == std::process::id());
        if ours && let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove the owner marker");
        }
    }

    fn status_for(desired: DesiredState) -> SessionStatus {
        match desired {
            // No browser to drive: a placeholder session counts as logged in.
            DesiredState::Running => SessionStatus::Working,
            DesiredState::Stopped => SessionStatus::Stopped,
        }
    }
}

impl SessionHost for PlaceholderHost {
    fn start_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        lease: WorkspaceLease,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            // Replacing a marker left by a dead process is safe only under the lock.
            if !lease.is_held() || lease.workspace() != ws {
                return Err(HostError::Other(format!("lock for {ws} not held")));
            }
            let dir = workspace_dir(&self.data, ws);
            self.claim_marker(&dir)?;
            let configs = read_session_configs(&dir)?;
            let now = now_ms();
            let sessions = configs
                .into_iter()
                .map(|c| {
                    let status = Self::status_for(c.desired);
                    (
                        c.session.clone(),
                        Running {
                            config: c,
                            status,
                            updated_at_ms: now,
                        },
                    )
                })
                .collect();
            self.lock().insert(ws.clone(), sessions);
            self.publish_metrics();
            Ok(())
        }
        .boxed()
    }

    fn stop_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        mode: StopMode,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            let removed = self.lock().remove(ws);
            Self::drop_marker(&workspace_dir(&self.data, ws));
            tracing::debug!(workspace = %ws, ?mode, sessions = removed.map_or(0, |s| s.len()), "workspace stopped");
            self.publish_metrics();
            Ok(())
        }
        .boxed()
    }

    fn create_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        config: SessionConfig,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        async move {
            {
                let map = self.lock();
                let sessions = map
                    .get(ws)
                    .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
                if sessions.contains_key(&config.session) {
                    return Err(HostError::Exists(config.session.clone()));
                }
            }
            let dir = workspace_dir(&self.data, ws).join(config.session.as_str());
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(SESSION_FILE);
            if path.exists() {
                return Err(HostError::Exists(config.session.clone()));
            }
            write_session_config(&dir, &config)?;
            let running = Running {
                status: Self::status_for(config.desired),
                updated_at_ms: now_ms(),
                config,
            };
            let info = self.info(ws, &running);
            {
                let mut map = self.lock();
                let sessions = map
                    .get_mut(ws)
                    .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
                sessions.insert(running.config.session.clone(), running);
            }
            self.publish_metrics();
            Ok(info)
        }
        .boxed()
    }

    fn list_sessions<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, HostError>> {
        async move {
            let map = self.lock();
            let sessions = map
                .get(ws)
                .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
            Ok(sessions.values().map(|r| self.info(ws, r)).collect())
        }
        .boxed()
    }

    fn get_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionInfo>, HostError>> {
        async move {
            let map = self.lock();
            let sessions = map
                .get(ws)
                .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
            Ok(sessions.get(session).map(|r| self.info(ws, r)))
        }
        .boxed()
    }

    fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    fn lease(w: &WorkspaceId) -> WorkspaceLease {
        WorkspaceLease::new(w.clone(), crate::shutdown::CancellationToken::new())
    }

    #[tokio::test]
    async fn start_refuses_without_a_held_lease() {
        let dir = tempfile::tempdir().unwrap();
        let host = PlaceholderHost::new(dir.path(), 0);
        let a = ws("acme");
        let gone = crate::shutdown::CancellationToken::new();
        gone.cancel();
        assert!(
            host.start_workspace(&a, WorkspaceLease::new(a.clone(), gone))
                .await
                .is_err()
        );
        assert!(host.start_workspace(&a, lease(&ws("other"))).await.is_err());
        assert!(host.start_workspace(&a, lease(&a)).await.is_ok());
    }

    fn config(s: &str) -> SessionConfig {
        SessionConfig {
            session: SessionId::new(s).unwrap(),
            webhook: Some(super::super::host::WebhookConfig {
                id: String::new(),
                url: "http://127.0.0.1:1/hook".into(),
                secret: Some("s3cret".into()),
                events: vec![],
                headers: BTreeMap::from([("Authorization".into(), "Bearer hook-token".into())]),
            }),
            webhooks: Vec::new(),
            metadata: BTreeMap::new(),
            pacing: None,
            desired: DesiredState::Running,
            created_at_ms: 1,
            reject_calls: false,
            media_download: Default::default(),
        }
    }

    #[tokio::test]
    async fn sessions_persist_across_stop_and_start() {
        let dir = tempfile::tempdir().unwrap();
        let host = PlaceholderHost::new(dir.path(), 2);
        let a = ws("acme");
        host.start_workspace(&a, lease(&a)).await.unwrap();
        let info = host.create_session(&a, config("default")).await.unwrap();
        assert_eq!(info.status, SessionStatus::Working);
        assert_eq!(info.shard, 2);
        let hook = info.webhook.unwrap();
        assert!(hook.secret.is_none(), "secret echoed");
        assert_eq!(
            hook.headers["Authorization"], "<redacted>",
            "header value echoed"
        );
        assert!(matches!(
            host.create_session(&a, config("default")).await,
            Err(HostError::Exists(_))
        ));
        assert!(dir.path().join("workspaces/acme/.owner").exists());
        host.stop_workspace(&a, StopMode::Graceful).await.unwrap();
        assert!(!dir.path().join("workspaces/acme/.owner").exists());
        assert!(matches!(
            host.list_sessions(&a).await,
            Err(HostError::NotRunning(_))
        ));
        // Another host (another worker after a handoff) finds the session on shared storage.
        let other = PlaceholderHost::new(dir.path(), 3);
        other.start_workspace(&a, lease(&a)).await.unwrap();
        let list = other.list_sessions(&a).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].shard, 3);
        assert_eq!(other.overlaps(), 0);
    }

    #[tokio::test]
    async fn a_live_foreign_marker_counts_as_an_overlap_and_a_dead_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let host = PlaceholderHost::new(dir.path(), 0);
        let wsdir = dir.path().join("workspaces/acme");
        std::fs::create_dir_all(&wsdir).unwrap();
        // pid 1 is always alive; u32::MAX never is.
        std::fs::write(wsdir.join(OWNER_MARKER), r#"{"pid":4294967295,"shard":1}"#).unwrap();
        host.start_workspace(&ws("acme"), lease(&ws("acme")))
            .await
            .unwrap();
        assert_eq!(host.overlaps(), 0);
        host.stop_workspace(&ws("acme"), StopMode::Immediate)
            .await
            .unwrap();
        std::fs::write(wsdir.join(OWNER_MARKER), r#"{"pid":1,"shard":1}"#).unwrap();
        host.start_workspace(&ws("acme"), lease(&ws("acme")))
            .await
            .unwrap();
        assert_eq!(host.overlaps(), 1);
    }

    #[tokio::test]
    async fn invalid_directory_names_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let wsdir = dir.path().join("workspaces/acme");
        std::fs::create_dir_all(wsdir.join("not valid")).unwrap();
        std::fs::write(wsdir.join("not valid").join(SESSION_FILE), "{}").unwrap();
        assert!(read_session_configs(&wsdir).unwrap().is_empty());
        std::fs::create_dir_all(wsdir.join("s1")).unwrap();
        std::fs::write(wsdir.join("s1").join(SESSION_FILE), "{nope").unwrap();
        assert!(matches!(
            read_session_configs(&wsdir),
            Err(HostError::Corrupt { .. })
        ));
    }
}
