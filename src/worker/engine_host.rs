//! The Chromium-backed [`SessionHost`]: one supervised engine session per
//! `<data>/workspaces/<ws>/<s>/` (config in `session.json`, Chromium profile in `profile/`).
//!
//! What it adds to the engine ([`crate::engine`]) is the worker's rules:
//! * sessions start only inside [`SessionHost::start_workspace`], i.e. with the workspace lock
//!   held; the [`WorkspaceLease`] is the engine's `WorkspaceLockGuard`, so stale `Singleton*`
//!   files are removed and profiles deleted only while the lock is held;
//! * restores share one [`LaunchLimiter`] (`--restore-concurrency`), so a restarted worker
//!   launches a bounded number of Chromiums at once;
//! * [`SessionHost::stop_workspace`] returns only once every browser of the workspace has exited
//!   (closed cleanly for [`StopMode::Graceful`], SIGKILLed tree first for
//!   [`StopMode::Immediate`], the fencing case), and a lease that ends while browsers still run
//!   kills them too;
//! * every session's status changes and engine events are republished as [`HostEvent`]s for the
//!   messaging side (store, webhooks, SSE).
//!
//! It is not the engine (launching, the adapter, the state machine live in `crate::engine`) and
//! not the HTTP surface (`super::http`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use super::host::{
    DesiredState, HostError, SessionAction, SessionConfig, SessionHost, SessionInfo, SessionQr,
    SessionStatus, StopMode, WorkspaceLease,
};
mod settings;

use super::layout::{SESSION_FILE, read_session_configs, workspace_dir, write_session_config};
use crate::engine::supervisor::SessionEvent;
use crate::engine::{
    Engine, EngineConfig, EngineEvent, LaunchLimiter, SessionCommandError, SessionHandle,
    SessionSpec, Status, SupervisorConfig, spawn_session,
};
use crate::ids::{SessionId, WorkspaceId};
use crate::shutdown::{CancellationToken, TaskTracker};

mod session_host;
use session_host::{command_error, map_status, stopped_by_qr_timeout};

mod browser_procs;
pub use browser_procs::{format_pairing_code, is_foreign, kill_tree, live_singleton_owner};

/// The profile directory name inside a session directory.
pub const PROFILE_DIR: &str = "profile";
/// Capacity of the [`HostEvent`] broadcast (a slow subscriber sees `Lagged`, never blocks).
pub const EVENT_CAPACITY: usize = 4096;

/// What the host tells its subscribers (the messaging side: store, webhooks, SSE).
#[derive(Clone, Debug)]
pub enum HostEvent {
    /// A session was created, or restored when its workspace started here.
    Created {
        /// Its workspace.
        workspace: WorkspaceId,
        /// The session.
        session: SessionId,
        /// Its configuration (webhook, metadata).
        config: SessionConfig,
    },
    /// A session was deleted or logged out.
    Deleted {
        /// Its workspace.
        workspace: WorkspaceId,
        /// The session.
        session: SessionId,
    },
    /// A session's status changed (or a new QR arrived).
    Status {
        /// Its workspace.
        workspace: WorkspaceId,
        /// The session.
        session: SessionId,
        /// The full snapshot.
        status: crate::engine::SessionStatus,
    },
    /// An event of the session's browser (QR, message, ack, logged out, …).
    Engine {
        /// Its workspace.
        workspace: WorkspaceId,
        /// The session.
        session: SessionId,
        /// The event.
        event: EngineEvent,
    },
}

struct Entry {
    config: SessionConfig,
    handle: SessionHandle,
    /// Ends the event forwarder.
    forward: CancellationToken,
}

struct Running {
    /// Which start this is (the lease watcher acts only on its own start).
    generation: u64,
    lease: WorkspaceLease,
    /// Cancelled when the workspace stops (ends the lease watcher).
    stopped: CancellationToken,
    sessions: BTreeMap<SessionId, Entry>,
}

/// The Chromium-backed session host. One per worker process; build with [`EngineHost::new`].
pub struct EngineHost {
    data: PathBuf,
    shard: u32,
    engine: Engine,
    supervisor: SupervisorConfig,
    /// The WhatsApp Web version control every session's launches consult, once set.
    versions: std::sync::OnceLock<Arc<dyn crate::engine::WebVersions>>,
    /// Running workspaces. A std mutex: held only for map operations, never across an await.
    running: Mutex<HashMap<WorkspaceId, Running>>,
    events: broadcast::Sender<HostEvent>,
    overlaps: AtomicU64,
    generations: AtomicU64,
    tracker: TaskTracker,
    me: Weak<EngineHost>,
    /// Profile owner records (`super::owner`), once enabled.
    owners: std::sync::OnceLock<ProfileOwners>,
    /// Serializes settings updates and deletes per session ([`settings`]).
    settings_locks: settings::SettingsLocks,
    /// Held while a `session.json` is written from the in-memory config, so the last write
    /// carries the latest config (a PATCH and a stop racing cannot undo each other on disk).
    config_writes: Mutex<()>,
}

/// What the host needs to keep profile owner records.
#[derive(Debug, Clone)]
struct ProfileOwners {
    me: super::owner::Identity,
    margin_ms: u64,
}

impl std::fmt::Debug for EngineHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHost")
            .field("data", &self.data)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

// === impl EngineHost ===

impl EngineHost {
    /// A host storing under `data`, reporting `shard`, launching Chromium per `engine`, with at
    /// most `launch_concurrency` browsers launching at once.
    pub fn new(
        data: impl Into<PathBuf>,
        shard: u32,
        engine: EngineConfig,
        launch_concurrency: usize,
        qr_timeout: Option<std::time::Duration>,
    ) -> Arc<EngineHost> {
        let mut supervisor = SupervisorConfig {
            limiter: Some(LaunchLimiter::new(launch_concurrency)),
            ..SupervisorConfig::default()
        };
        supervisor.timing.qr_timeout = qr_timeout;
        Self::with_supervisor(data, shard, engine, supervisor)
    }

    /// Like [`EngineHost::new`] with explicit supervisor settings (watchdog timing in tests).
    pub fn with_supervisor(
        data: impl Into<PathBuf>,
        shard: u32,
        engine: EngineConfig,
        supervisor: SupervisorConfig,
    ) -> Arc<EngineHost> {
        let tracker = TaskTracker::new();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Arc::new_cyclic(|me| EngineHost {
            data: data.into(),
            shard,
            engine: Engine::with_tracker(engine, tracker.clone()),
            supervisor,
            versions: std::sync::OnceLock::new(),
            running: Mutex::new(HashMap::new()),
            events,
            overlaps: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            tracker,
            me: me.clone(),
            owners: std::sync::OnceLock::new(),
            settings_locks: Mutex::default(),
            config_writes: Mutex::new(()),
        })
    }

    /// Keeps a profile owner record (`super::owner`) for every session this host runs, and
    /// checks the previous one before a browser starts on the profile: a profile whose owner
    /// may still run a browser (alive or unknown, lease not run out plus `margin`) waits.
    /// Set once, before the first workspace starts.
    pub fn use_owner_records(
        &self,
        margin: std::time::Duration,
    ) -> Result<(), super::owner::OwnerError> {
        let me = super::owner::Identity::current()?;
        let _ = self.owners.set(ProfileOwners {
            me,
            margin_ms: margin.as_millis() as u64,
        });
        Ok(())
    }

    /// Every browser this host runs, as `(pid, start time)` (what the browser guard kills if
    /// this process stops answering).
    pub fn browser_pids(&self) -> Vec<(u32, u64)> {
        let pids: Vec<u32> = self
            .lock()
            .values()
            .flat_map(|r| r.sessions.values())
            .filter_map(|e| e.handle.browser().and_then(|b| b.pid()))
            .collect();
        pids.into_iter()
            .filter_map(|p| super::owner::start_time_of(p).map(|t| (p, t)))
            .collect()
    }

    /// Waits until the profile of session `s` is free of any other owner (see
    /// [`EngineHost::use_owner_records`]), then records this process as its owner. Gives up
    /// (false) when the lease is lost meanwhile.
    async fn claim_profile(&self, ws: &WorkspaceId, s: &SessionId, lease: &WorkspaceLease) -> bool {
        use super::owner::{self, Verdict};
        let Some(o) = self.owners.get().cloned() else {
            return true;
        };
        let dir = self.session_dir(ws, s);
        let data = self.data.clone();
        let mut logged = false;
        loop {
            let (d, me, data) = (dir.clone(), o.me.clone(), data.clone());
            let margin = o.margin_ms;
            let verdict = tokio::task::spawn_blocking(move || {
                let record = match owner::read::<owner::ProfileRecord>(&owner::profile_record_path(&d)) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "profile owner record unreadable; treating it as absent");
                        None
                    }
                };
                let shard_record = record.as_ref().and_then(|r| {
                    owner::read::<owner::ShardRecord>(&owner::shard_record_path(&data, r.shard))
                        .unwrap_or(None)
                });
                owner::profile_verdict(
                    record.as_ref(),
                    shard_record.as_ref(),
                    &me,
                    super::layout::now_ms(),
                    margin,
                    owner::start_time_of,
                )
            })
            .await
            .unwrap_or(Verdict::Free);
            match verdict {
                Verdict::Held { until_ms } => {
                    let wait = until_ms.saturating_sub(super::layout::now_ms()).max(50);
                    if !logged {
                        tracing::warn!(workspace = %ws, session = %s, wait_ms = wait, "the profile's previous owner may still run a browser; waiting for its lease to run out");
                        logged = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                        _ = lease.lost() => return false,
                    }
                }
                v => {
                    if v != Verdict::Free {
                        tracing::info!(workspace = %ws, session = %s, verdict = ?v, "profile's previous owner is gone");
                    }
                    break;
                }
            }
        }
        let record = owner::ProfileRecord {
            owner: o.me.clone(),
            shard: self.shard,
            written_ms: super::layout::now_ms(),
        };
        let path = owner::profile_record_path(&dir);
        match tokio::task::spawn_blocking(move || owner::write(&path, &record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(workspace = %ws, session = %s, error = %e, "cannot write the profile owner record")
            }
            Err(e) => tracing::warn!(error = %e, "profile owner record task failed"),
        }
        true
    }

    /// Removes the owner records of the given sessions that name this process (every browser
    /// of them has exited).
    async fn release_profiles(&self, ws: &WorkspaceId, sessions: Vec<SessionId>) {
        let Some(o) = self.owners.get().cloned() else {
            return;
        };
        let paths: Vec<PathBuf> = sessions
            .iter()
            .map(|s| super::owner::profile_record_path(&self.session_dir(ws, s)))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for p in paths {
                super::owner::remove_if_mine::<super::owner::ProfileRecord>(&p, &o.me, |r| {
                    &r.owner
                });
            }
        })
        .await;
    }

    /// Makes every session started from now on load WhatsApp Web as `versions` decides (the
    /// fleet setting, the cache) and report the versions it proves good. Set once, before the
    /// first workspace starts; a second call is ignored.
    pub fn use_versions(&self, versions: Arc<dyn crate::engine::WebVersions>) {
        if self.versions.set(versions).is_err() {
            tracing::warn!("WhatsApp Web version control set twice; keeping the first");
        }
    }

    /// The handle of a running session (send messages, watch its status, subscribe to its
    /// events); `None` when the session does not run on this host.
    pub fn handle(&self, ws: &WorkspaceId, s: &SessionId) -> Option<SessionHandle> {
        self.lock()
            .get(ws)
            .and_then(|r| r.sessions.get(s))
            .map(|e| e.handle.clone())
    }

    /// Every session event of this host from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.events.subscribe()
    }

    /// The tracker every browser and forwarder task runs on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The lease of running workspace `ws` for a session `s` it does not run yet:
    /// `NotRunning` when the workspace is not running here, `Exists` when the session is.
    fn lease_for_new(&self, ws: &WorkspaceId, s: &SessionId) -> Result<WorkspaceLease, HostError> {
        let map = self.lock();
        let r = map
            .get(ws)
            .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
        if r.sessions.contains_key(s) {
            return Err(HostError::Exists(s.clone()));
        }
        Ok(r.lease.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, Running>> {
        // Poisoning means a panic mid-update of plain data; the map is still usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn session_dir(&self, ws: &WorkspaceId, s: &SessionId) -> PathBuf {
        workspace_dir(&self.data, ws).join(s.as_str())
    }

    fn info(&self, ws: &WorkspaceId, e: &Entry) -> SessionInfo {
        let st = e.handle.status();
        SessionInfo {
            workspace: ws.clone(),
            session: e.config.session.clone(),
            status: map_status(st.status),
            me: st.me.clone(),
            shard: self.shard,
            desired: e.config.desired,
            webhook: e.config.redacted_targets().into_iter().next(),
            webhooks: e.config.redacted_targets(),
            pacing: e.config.pacing.clone(),
            metadata: e.config.metadata.clone(),
            created_at_ms: e.config.created_at_ms,
            updated_at_ms: st.status_since_unix_ms,
            wa_version: st.wa_version.clone(),
            last_error: st.last_error.clone(),
            restarts: st.restarts,
            memory_bytes: st.memory_bytes,
        }
    }

    fn persist(&self, ws: &WorkspaceId, config: &SessionConfig) -> Result<(), HostError> {
        write_session_config(&self.session_dir(ws, &config.session), config)
    }

    /// Spawns the supervisor of one session (STOPPED) and its event forwarder.
    fn spawn_entry(
        &self,
        ws: &WorkspaceId,
        lease: &WorkspaceLease,
        config: SessionConfig,
    ) -> Entry {
        let profile = self.session_dir(ws, &config.session).join(PROFILE_DIR);
        if let Some(pid) = live_singleton_owner(&profile) {
            self.overlaps.fetch_add(1, Ordering::Relaxed);
            tracing::error!(workspace = %ws, session = %config.session, pid,
                "OVERLAP: a live browser already runs on this profile");
        }
        let mut supervisor = self.supervisor.clone();
        if let Some(v) = self.versions.get() {
            supervisor.versions = Some(v.clone());
        }
        let handle = spawn_session(
            self.engine.clone(),
            SessionSpec {
                workspace: ws.clone(),
                session: config.session.clone(),
                profile_dir: profile,
                lock: Some(Arc::new(lease.clone())),
            },
            supervisor,
            CancellationToken::new(),
        );
        let forward = CancellationToken::new();
        let mut rx = handle.subscribe();
        let events = self.events.clone();
        let (w, s) = (ws.clone(), config.session.clone());
        let stop = forward.clone();
        let host = self.me.clone();
        self.tracker.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => break,
                    ev = rx.recv() => ev,
                };
                let out = match ev {
                    Ok(SessionEvent::Status(status)) => {
                        if stopped_by_qr_timeout(&status)
                            && let Some(h) = host.upgrade()
                        {
                            // The engine stopped it for good: remember that, or the next
                            // restore (restart, handoff) would open a QR for nobody again.
                            if let Err(e) = h.set_desired(&w, &s, DesiredState::Stopped) {
                                tracing::warn!(workspace = %w, session = %s, error = %e, "cannot persist the stop after the QR time limit");
                            }
                        }
                        HostEvent::Status {
                            workspace: w.clone(),
                            session: s.clone(),
                            status,
                        }
                    }
                    Ok(SessionEvent::Engine(event)) => HostEvent::Engine {
                        workspace: w.clone(),
                        session: s.clone(),
                        event,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(workspace = %w, session = %s, skipped = n, "session events lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                // No subscriber is fine: nobody listens yet.
                let _ = events.send(out);
            }
        });
        Entry {
            config,
            handle,
            forward,
        }
    }

    fn emit(&self, ev: HostEvent) {
        let _ = self.events.send(ev);
    }

    fn entry_handle(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<(SessionHandle, SessionConfig), HostError> {
        let map = self.lock();
        let r = map
            .get(ws)
            .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
        let e = r
            .sessions
            .get(s)
            .ok_or_else(|| HostError::NotFound(s.clone()))?;
        Ok((e.handle.clone(), e.config.clone()))
    }

    fn set_desired(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        desired: DesiredState,
    ) -> Result<(), HostError> {
        let config = {
            let mut map = self.lock();
            let r = map
                .get_mut(ws)
                .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
            let e = r
                .sessions
                .get_mut(s)
                .ok_or_else(|| HostError::NotFound(s.clone()))?;
            if e.config.desired == desired {
                return Ok(());
            }
            e.config.desired = desired;
            e.config.session.clone()
        };
        self.persist_latest(ws, &config)
    }

    fn current_info(&self, ws: &WorkspaceId, s: &SessionId) -> Result<SessionInfo, HostError> {
        let map = self.lock();
        let r = map
            .get(ws)
            .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
        let e = r
            .sessions
            .get(s)
            .ok_or_else(|| HostError::NotFound(s.clone()))?;
        Ok(self.info(ws, e))
    }

    /// Stops the given sessions: SIGKILL first when `immediate`, then the supervisors' own
    /// shutdown (which closes or reaps the browser); returns once every browser has exited.
    async fn shutdown_entries(entries: Vec<Entry>, immediate: bool) {
        if immediate {
            for e in &entries {
                if let Some(pid) = e.handle.browser().and_then(|b| b.pid()) {
                    kill_tree(pid);
                }
            }
        }
        futures::future::join_all(entries.iter().map(|e| e.handle.shutdown())).await;
        for e in entries {
            e.forward.cancel();
        }
    }

    /// The lease of a workspace running here (proof of its lock), for profile work outside a
    /// session's own supervisor (an import removes stale `Singleton*` files with it).
    pub fn lease(&self, ws: &WorkspaceId) -> Option<WorkspaceLease> {
        self.lock().get(ws).map(|r| r.lease.clone())
    }

    /// Registers and starts a session whose directory (`session.json` and `profile/`) an
    /// import has just put in place: like `create_session` without writing the config.
    pub async fn adopt_session(
        &self,
        ws: &WorkspaceId,
        config: SessionConfig,
    ) -> Result<SessionInfo, HostError> {
        let lease = self.lease_for_new(ws, &config.session)?;
        self.register(ws, &lease, config).await
    }

    /// Spawns a persisted session's supervisor, adds it to its running workspace, announces it
    /// and starts it if its desired state is running.
    async fn register(
        &self,
        ws: &WorkspaceId,
        lease: &WorkspaceLease,
        config: SessionConfig,
    ) -> Result<SessionInfo, HostError> {
        let entry = self.spawn_entry(ws, lease, config.clone());
        let handle = entry.handle.clone();
        // Insert, or give the entry back with the reason it could not be inserted.
        let refused = {
            let mut map = self.lock();
            match map.get_mut(ws) {
                // The workspace stopped meanwhile; the session is on disk and starts with it.
                None => Some((entry, HostError::NotRunning(ws.clone()))),
                Some(r) if r.sessions.contains_key(&config.session) => {
                    Some((entry, HostError::Exists(config.session.clone())))
                }
                Some(r) => {
                    r.sessions.insert(config.session.clone(), entry);
                    None
                }
            }
        };
        if let Some((entry, error)) = refused {
            Self::shutdown_entries(vec![entry], false).await;
            return Err(error);
        }
        self.emit(HostEvent::Created {
            workspace: ws.clone(),
            session: config.session.clone(),
            config: config.clone(),
        });
        if config.desired == DesiredState::Running {
            handle.start().await.map_err(command_error)?;
        }
        self.current_info(ws, &config.session)
    }
}

#[cfg(test)]
mod tests;
