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

/// A STOPPED status the engine reached by itself because nobody linked within the QR time
/// limit (a stop command gives STOPPED too, but then the desired state is already stopped).
fn stopped_by_qr_timeout(status: &crate::engine::SessionStatus) -> bool {
    status.status == Status::Stopped
        && status
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(crate::engine::QR_TIMEOUT_ERROR))
}

fn map_status(s: Status) -> SessionStatus {
    match s {
        Status::Stopped => SessionStatus::Stopped,
        Status::Starting => SessionStatus::Starting,
        Status::ScanQrCode => SessionStatus::ScanQrCode,
        Status::Working => SessionStatus::Working,
        Status::Failed => SessionStatus::Failed,
        Status::PasskeyRequired => SessionStatus::PasskeyRequired,
    }
}

fn command_error(e: SessionCommandError) -> HostError {
    match e {
        SessionCommandError::WrongStatus(s) => HostError::WrongStatus {
            code: if s == Status::Working {
                "wrong_status"
            } else {
                "not_ready"
            },
            message: format!("session is {}", s.as_str()),
        },
        SessionCommandError::Engine(crate::engine::EngineError::Invalid(m)) => {
            HostError::WrongStatus {
                code: "invalid",
                message: m,
            }
        }
        other => HostError::Other(other.to_string()),
    }
}

/// `ABCDEFGH` → `ABCD-EFGH` (codes already dashed are kept).
pub fn format_pairing_code(code: &str) -> String {
    let c: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if c.len() == 8 {
        format!("{}-{}", &c[..4], &c[4..])
    } else {
        code.to_string()
    }
}

/// Whether `profile`'s `SingletonLock` names a live process on this host that runs a browser on
/// that profile (a second browser would share the profile: the overlap the invariant forbids).
pub fn live_singleton_owner(profile: &Path) -> Option<u32> {
    let target = std::fs::read_link(profile.join("SingletonLock")).ok()?;
    let (host, pid) = crate::engine::profile::parse_singleton_lock(target.to_str()?)?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    if hostname.trim() != host {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let wanted = format!("--user-data-dir={}", profile.display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == wanted.as_bytes())
        .then_some(pid)
}

/// Whether browser `pid` was not launched by this process: a leftover of a predecessor (killed
/// with SIGKILL, or frozen) or of anyone else. Its parent is not this process. Checked by pid,
/// not by name: a predecessor's browsers are reparented to whatever subreaper there is, which
/// may well be a `wafleet` process too (`wafleet dev`).
pub fn is_foreign(pid: u32) -> bool {
    let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let rest = st.rsplit_once(')')?.1.to_string();
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
    else {
        // Gone meanwhile: nothing to do about it.
        return false;
    };
    ppid != std::process::id()
}

/// SIGKILLs `pid` and its descendants (fencing: no time for a clean close).
pub fn kill_tree(pid: u32) {
    let mut tree = crate::engine::memory::process_tree(pid).unwrap_or_default();
    if tree.is_empty() {
        tree.push(pid);
    }
    // One `kill -9` for the whole tree (the crate forbids `unsafe`, so no libc::kill); a pid
    // that is already gone only makes kill print a complaint.
    let args: Vec<String> = tree
        .iter()
        .filter(|p| **p > 1)
        .map(u32::to_string)
        .collect();
    if args.is_empty() {
        return;
    }
    if let Err(e) = std::process::Command::new("kill")
        .arg("-9")
        .args(&args)
        .stderr(std::process::Stdio::null())
        .status()
    {
        tracing::error!(error = %e, "could not run kill -9 on a browser tree");
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

impl SessionHost for EngineHost {
    fn start_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        lease: WorkspaceLease,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            if !lease.is_held() || lease.workspace() != ws {
                return Err(HostError::Other(format!("lock for {ws} not held")));
            }
            let dir = workspace_dir(&self.data, ws);
            let configs = read_session_configs(&dir)?;
            let stopped = CancellationToken::new();
            let generation = self.generations.fetch_add(1, Ordering::Relaxed);
            let mut sessions = BTreeMap::new();
            for config in &configs {
                // A browser left behind by a worker killed with SIGKILL (or frozen) may still run
                // on the profile; with the lock held here it must be gone before a new one
                // starts, or two browsers would share the profile.
                let profile = self.session_dir(ws, &config.session).join(PROFILE_DIR);
                if let Some(pid) = live_singleton_owner(&profile)
                    && is_foreign(pid)
                {
                    tracing::warn!(workspace = %ws, session = %config.session, pid, "killing a previous browser on the profile");
                    kill_tree(pid);
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                    while live_singleton_owner(&profile).is_some() {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(HostError::Other(format!(
                                "a previous browser (pid {pid}) on {ws}/{} did not exit",
                                config.session
                            )));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
            for config in &configs {
                if !self.claim_profile(ws, &config.session, &lease).await {
                    return Err(HostError::Other(format!("lock for {ws} lost while waiting for a profile's previous owner")));
                }
            }
            for config in configs {
                let entry = self.spawn_entry(ws, &lease, config);
                sessions.insert(entry.config.session.clone(), entry);
            }
            let starts: Vec<(SessionHandle, SessionConfig)> = sessions
                .values()
                .map(|e| (e.handle.clone(), e.config.clone()))
                .collect();
            let old = self.lock().insert(
                ws.clone(),
                Running {
                    generation,
                    lease: lease.clone(),
                    stopped: stopped.clone(),
                    sessions,
                },
            );
            if let Some(old) = old {
                // A start without a stop in between should not happen; never leak browsers.
                tracing::warn!(workspace = %ws, "workspace started twice; stopping the old sessions");
                old.stopped.cancel();
                Self::shutdown_entries(old.sessions.into_values().collect(), false).await;
            }
            // Browsers that outlive the lease (fencing with a stop that came too late) are
            // killed: the lock is what makes running them safe.
            if let Some(me) = self.me.upgrade() {
                let (w, l, st) = (ws.clone(), lease.clone(), stopped.clone());
                self.tracker.spawn(async move {
                    tokio::select! {
                        _ = st.cancelled() => {}
                        _ = l.lost() => {
                            let entries = {
                                let mut map = me.lock();
                                match map.get(&w) {
                                    Some(r) if r.generation == generation => map
                                        .remove(&w)
                                        .map(|r| r.sessions.into_values().collect())
                                        .unwrap_or_default(),
                                    _ => Vec::new(),
                                }
                            };
                            if !entries.is_empty() {
                                tracing::warn!(workspace = %w, "lease lost with browsers running; killing them");
                                let ids: Vec<SessionId> = entries.iter().map(|e| e.config.session.clone()).collect();
                                EngineHost::shutdown_entries(entries, true).await;
                                me.release_profiles(&w, ids).await;
                            }
                        }
                    }
                });
            }
            for (handle, config) in starts {
                self.emit(HostEvent::Created {
                    workspace: ws.clone(),
                    session: config.session.clone(),
                    config: config.clone(),
                });
                if config.desired == DesiredState::Running {
                    // Not awaited: a start returns once the browser has launched, and the
                    // launches are bounded by the engine's launch limiter already. Awaiting
                    // here would hold the driver's restore slot for every launch, so after a
                    // restart the workspaces without a browser (or whose sessions are
                    // stopped) would queue behind every Chromium launch before answering.
                    let ws = ws.clone();
                    self.tracker.spawn(async move {
                        if let Err(e) = handle.start().await {
                            tracing::warn!(workspace = %ws, session = %config.session, error = %e, "session start");
                        }
                    });
                }
            }
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
            if let Some(r) = removed {
                r.stopped.cancel();
                let n = r.sessions.len();
                let ids: Vec<SessionId> = r.sessions.keys().cloned().collect();
                Self::shutdown_entries(
                    r.sessions.into_values().collect(),
                    mode == StopMode::Immediate,
                )
                .await;
                self.release_profiles(ws, ids).await;
                tracing::debug!(workspace = %ws, ?mode, sessions = n, "workspace stopped");
            }
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
            let lease = self.lease_for_new(ws, &config.session)?;
            let path = self.session_dir(ws, &config.session).join(SESSION_FILE);
            if path.exists() {
                return Err(HostError::Exists(config.session.clone()));
            }
            self.persist(ws, &config)?;
            self.register(ws, &lease, config).await
        }
        .boxed()
    }

    fn list_sessions<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, HostError>> {
        async move {
            let map = self.lock();
            let r = map
                .get(ws)
                .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
            Ok(r.sessions.values().map(|e| self.info(ws, e)).collect())
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
            let r = map
                .get(ws)
                .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
            Ok(r.sessions.get(session).map(|e| self.info(ws, e)))
        }
        .boxed()
    }

    fn session_action<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        action: SessionAction,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        async move {
            let (handle, config) = self.entry_handle(ws, session)?;
            match action {
                SessionAction::Start => {
                    self.set_desired(ws, session, DesiredState::Running)?;
                    if config.desired == DesiredState::Stopped {
                        // After a logout the messaging side forgot it; tell it again.
                        let mut config = config.clone();
                        config.desired = DesiredState::Running;
                        self.emit(HostEvent::Created {
                            workspace: ws.clone(),
                            session: session.clone(),
                            config,
                        });
                    }
                    handle.start().await.map_err(command_error)?;
                }
                SessionAction::Stop => {
                    self.set_desired(ws, session, DesiredState::Stopped)?;
                    handle.stop().await.map_err(command_error)?;
                }
                SessionAction::Restart => {
                    self.set_desired(ws, session, DesiredState::Running)?;
                    handle.restart().await.map_err(command_error)?;
                }
                SessionAction::Logout => {
                    self.set_desired(ws, session, DesiredState::Stopped)?;
                    handle.logout().await.map_err(command_error)?;
                    self.emit(HostEvent::Deleted {
                        workspace: ws.clone(),
                        session: session.clone(),
                    });
                }
            }
            self.current_info(ws, session)
        }
        .boxed()
    }

    fn update_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        update: super::host::ConfigUpdate<'a>,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        self.update_settings(ws, session, update).boxed()
    }

    fn delete_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            // Not while a settings update of the session is being written.
            let settings = self.settings_lock(ws, session);
            let _turn = settings.lock().await;
            let (entry, lease) = {
                let mut map = self.lock();
                let r = map
                    .get_mut(ws)
                    .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
                let e = r
                    .sessions
                    .remove(session)
                    .ok_or_else(|| HostError::NotFound(session.clone()))?;
                (e, r.lease.clone())
            };
            Self::shutdown_entries(vec![entry], false).await;
            if !lease.is_held() {
                return Err(HostError::NotRunning(ws.clone()));
            }
            let dir = self.session_dir(ws, session);
            match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(HostError::Other(e.to_string())),
            }
            self.emit(HostEvent::Deleted {
                workspace: ws.clone(),
                session: session.clone(),
            });
            self.forget_settings_lock(ws, session);
            Ok(())
        }
        .boxed()
    }

    fn qr<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<SessionQr, HostError>> {
        async move {
            let (handle, _) = self.entry_handle(ws, session)?;
            let st = handle.status();
            match (st.status, st.qr) {
                (Status::ScanQrCode, Some(qr)) => Ok(SessionQr {
                    value: qr.value,
                    expires_at: qr.expires_unix_ms,
                }),
                (s, _) => Err(HostError::WrongStatus {
                    code: "not_scanning",
                    message: format!("session is {}, no QR to show", s.as_str()),
                }),
            }
        }
        .boxed()
    }

    fn pairing_code<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<String, HostError>> {
        async move {
            let (handle, _) = self.entry_handle(ws, session)?;
            let code = handle
                .request_pairing_code(phone)
                .await
                .map_err(|e| match e {
                    SessionCommandError::WrongStatus(s) => HostError::WrongStatus {
                        code: "not_scanning",
                        message: format!("session is {}, not waiting for a link", s.as_str()),
                    },
                    other => command_error(other),
                })?;
            Ok(format_pairing_code(&code))
        }
        .boxed()
    }

    fn engine_host(&self) -> Option<Arc<EngineHost>> {
        self.me.upgrade()
    }

    fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_codes_get_their_dash() {
        assert_eq!(format_pairing_code("ABCDEFGH"), "ABCD-EFGH");
        assert_eq!(format_pairing_code("ABCD-EFGH"), "ABCD-EFGH");
        assert_eq!(format_pairing_code("ABC"), "ABC");
    }

    fn host(dir: &Path) -> Arc<EngineHost> {
        // A Chromium that cannot exist: sessions fail to launch, everything else is real.
        let engine = EngineConfig {
            chromium: "/nonexistent/chromium".into(),
            ..EngineConfig::default()
        };
        let supervisor = SupervisorConfig {
            memory_interval: None,
            ..SupervisorConfig::default()
        };
        EngineHost::with_supervisor(dir, 3, engine, supervisor)
    }

    fn config(s: &str) -> SessionConfig {
        SessionConfig {
            session: SessionId::new(s).unwrap(),
            webhook: None,
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
    async fn sessions_are_persisted_announced_restored_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let ws = WorkspaceId::new("acme").unwrap();
        let mut events = h.subscribe();
        let gone = CancellationToken::new();
        gone.cancel();
        assert!(
            h.start_workspace(&ws, WorkspaceLease::new(ws.clone(), gone))
                .await
                .is_err(),
            "no start without a held lease"
        );
        assert!(matches!(
            h.create_session(&ws, config("a")).await,
            Err(HostError::NotRunning(_))
        ));
        let lease = CancellationToken::new();
        h.start_workspace(&ws, WorkspaceLease::new(ws.clone(), lease.clone()))
            .await
            .unwrap();
        let info = h.create_session(&ws, config("a")).await.unwrap();
        assert_eq!(info.shard, 3);
        assert!(dir.path().join("workspaces/acme/a/session.json").exists());
        assert!(matches!(
            h.create_session(&ws, config("a")).await,
            Err(HostError::Exists(_))
        ));
        assert!(h.handle(&ws, &SessionId::new("a").unwrap()).is_some());
        let first = events.recv().await.unwrap();
        assert!(
            matches!(&first, HostEvent::Created { session, .. } if session.as_str() == "a"),
            "{first:?}"
        );
        // The QR route has nothing to show for a session that is not scanning.
        assert!(matches!(
            h.qr(&ws, &SessionId::new("a").unwrap()).await,
            Err(HostError::WrongStatus {
                code: "not_scanning",
                ..
            })
        ));
        assert!(matches!(
            h.qr(&ws, &SessionId::new("nope").unwrap()).await,
            Err(HostError::NotFound(_))
        ));
        h.stop_workspace(&ws, StopMode::Immediate).await.unwrap();
        assert!(h.handle(&ws, &SessionId::new("a").unwrap()).is_none());

        // A later start (after a restart or a handoff) restores it from disk, and announces it.
        let mut events = h.subscribe();
        h.start_workspace(&ws, WorkspaceLease::new(ws.clone(), lease.clone()))
            .await
            .unwrap();
        assert_eq!(h.list_sessions(&ws).await.unwrap().len(), 1);
        loop {
            if let HostEvent::Created { session, .. } = events.recv().await.unwrap() {
                assert_eq!(session.as_str(), "a");
                break;
            }
        }
        h.delete_session(&ws, &SessionId::new("a").unwrap())
            .await
            .unwrap();
        assert!(!dir.path().join("workspaces/acme/a").exists());
        assert!(h.list_sessions(&ws).await.unwrap().is_empty());
        h.stop_workspace(&ws, StopMode::Graceful).await.unwrap();
        assert_eq!(h.overlaps(), 0);
    }

    #[test]
    fn no_singleton_lock_means_no_owner() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(live_singleton_owner(dir.path()), None);
        // A lock naming a dead pid on this host is stale, not an owner.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        std::os::unix::fs::symlink(
            format!("{}-4294967", host.trim()),
            dir.path().join("SingletonLock"),
        )
        .unwrap();
        assert_eq!(live_singleton_owner(dir.path()), None);
    }
}
