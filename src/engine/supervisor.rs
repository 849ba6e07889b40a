//! The per-session supervisor: one task per session that drives the pure [`Machine`] and
//! carries out its actions with the [`Engine`].
//!
//! Inputs are commands (start, stop, restart, logout, shutdown) from a [`SessionHandle`], the
//! current browser's [`EngineEvent`]s and watchdog ticks at the machine's next deadline. The
//! task publishes a [`SessionStatus`] (watch channel) and forwards engine events and status
//! changes on a broadcast channel for webhooks. Launches of many sessions are bounded by a
//! shared [`LaunchLimiter`]: a permit is held from launch until the session shows a QR, logs in
//! or fails, which is the CPU-heavy part of a restore.
//!
//! Stale `Singleton*` files are removed before each launch only when the session was given a
//! [`WorkspaceLockGuard`] that is currently held.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::driver::{BrowserSession, Engine, EngineError, EventReceiver, Media, SentMessage};
use super::events::EngineEvent;
use super::metrics;
use super::profile::{WorkspaceLockGuard, delete_profile, remove_stale_singletons};
use super::state::{Action, Input, Machine, Now, SessionStatus, Status, Timing};
use crate::ids::{SessionId, WorkspaceId};

/// What a session is and where its profile lives.
#[derive(Clone)]
pub struct SessionSpec {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Its id.
    pub session: SessionId,
    /// The Chromium profile directory (the session's credentials).
    pub profile_dir: PathBuf,
    /// Proof of the workspace lock; without one, stale Chromium locks are never removed.
    pub lock: Option<Arc<dyn WorkspaceLockGuard>>,
}

/// Supervisor settings.
#[derive(Clone)]
pub struct SupervisorConfig {
    /// Watchdog and backoff.
    pub timing: Timing,
    /// How often the process tree's PSS is sampled; `None` never.
    pub memory_interval: Option<Duration>,
    /// Bounds concurrent launches across sessions; `None` unbounded.
    pub limiter: Option<LaunchLimiter>,
    /// The WhatsApp Web version control (pin per launch, cache proven versions); `None`:
    /// always live, nothing cached.
    pub versions: Option<Arc<dyn super::versions::WebVersions>>,
}

impl std::fmt::Debug for SupervisorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorConfig")
            .field("timing", &self.timing)
            .field("memory_interval", &self.memory_interval)
            .field("limiter", &self.limiter)
            .field("versions", &self.versions.is_some())
            .finish()
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            timing: Timing::default(),
            memory_interval: Some(Duration::from_secs(30)),
            limiter: None,
            versions: None,
        }
    }
}

/// The least time between two restarts of one session by its memory budget.
pub const BUDGET_RESTART_SPACING: Duration = Duration::from_secs(600);

/// A shared bound on sessions in their launch phase (restores after a worker restart).
#[derive(Debug, Clone)]
pub struct LaunchLimiter(Arc<Semaphore>);

impl LaunchLimiter {
    /// At most `concurrency` (at least 1) sessions launching at once.
    pub fn new(concurrency: usize) -> LaunchLimiter {
        LaunchLimiter(Arc::new(Semaphore::new(concurrency.max(1))))
    }

    /// Launch slots free right now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Runs `f` for every item with at most `concurrency` running at once (e.g. restoring the
/// sessions of a workspace), and returns when all are done.
pub async fn for_each_bounded<T, F, Fut>(
    items: impl IntoIterator<Item = T>,
    concurrency: usize,
    f: F,
) where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(items)
        .for_each_concurrent(concurrency.max(1), f)
        .await
}

/// What a session tells its subscribers.
// Status is the larger variant and both are common; a status is cloned to every subscriber
// either way, so boxing would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// The status changed (or a new QR arrived).
    Status(SessionStatus),
    /// An event of the current browser (messages, acks, QR, …).
    Engine(EngineEvent),
}

/// Why a command on a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionCommandError {
    /// The session must be WORKING (or showing a QR, for pairing) for this.
    #[error("session is {}", .0.as_str())]
    WrongStatus(Status),
    /// The engine failed it.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The supervisor task has ended.
    #[error("session supervisor has stopped")]
    Gone,
}

enum Command {
    Input(Input, oneshot::Sender<SessionStatus>),
}

/// The handle to a supervised session. Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    workspace: WorkspaceId,
    session: SessionId,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<SessionStatus>,
    browser: watch::Receiver<Option<BrowserSession>>,
    events: broadcast::Sender<SessionEvent>,
    cancel: CancellationToken,
    done: watch::Receiver<bool>,
}

// === impl SessionHandle ===

impl SessionHandle {
    /// The workspace.
    pub fn workspace(&self) -> &WorkspaceId {
        &self.workspace
    }

    /// The session id.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The current status.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// A watch on the status (wait for WORKING, …).
    pub fn watch_status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Status changes and engine events (messages, acks) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// The current browser, if one runs.
    pub fn browser(&self) -> Option<BrowserSession> {
        self.browser.borrow().clone()
    }

    /// Starts the session (idempotent); answers with the status after the command.
    pub async fn start(&self) -> Result<SessionStatus, SessionCommandError> {
        self.input(Input::Start).await
    }

    /// Stops it; the profile stays, a later start logs in without a QR.
    pub async fn stop(&self) -> Result<SessionStatus, SessionCommandError> {
        self.input(Input::Stop).await
    }

    /// Closes and relaunches the browser.
    pub async fn restart(&self) -> Result<SessionStatus, SessionCommandError> {
        self.input(Input::Restart).await
    }

    /// Unlinks the device, closes the browser and deletes the profile.
    pub async fn logout(&self) -> Result<SessionStatus, SessionCommandError> {
        self.input(Input::Logout).await
    }

    /// Closes the browser cleanly and ends the supervisor (worker drain); returns once the
    /// browser process is gone. Works even while the session waits for a launch slot or is
    /// launching (a cancellation, not a queued command). The desired state is not changed: a
    /// later supervisor on the same profile starts where this one was.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Sends a text (the session must be WORKING).
    pub async fn send_text(
        &self,
        to: &str,
        text: &str,
    ) -> Result<SentMessage, SessionCommandError> {
        let browser = self.working_browser()?;
        Ok(browser.send_text(to, text).await?)
    }

    /// Sends media (the session must be WORKING).
    pub async fn send_media(
        &self,
        to: &str,
        media: &Media,
    ) -> Result<SentMessage, SessionCommandError> {
        let browser = self.working_browser()?;
        Ok(browser.send_media(to, media).await?)
    }

    /// Requests a pairing code (the session must be showing a QR).
    pub async fn request_pairing_code(&self, phone: &str) -> Result<String, SessionCommandError> {
        let status = self.status.borrow().status;
        if status != Status::ScanQrCode {
            return Err(SessionCommandError::WrongStatus(status));
        }
        let browser = self
            .browser()
            .ok_or(SessionCommandError::WrongStatus(status))?;
        Ok(browser.request_pairing_code(phone).await?)
    }

    /// The browser of a WORKING session (else `WrongStatus`): what every command needs.
    pub(super) fn working_browser(&self) -> Result<BrowserSession, SessionCommandError> {
        let status = self.status.borrow().status;
        if status != Status::Working {
            return Err(SessionCommandError::WrongStatus(status));
        }
        self.browser()
            .ok_or(SessionCommandError::WrongStatus(status))
    }

    async fn input(&self, input: Input) -> Result<SessionStatus, SessionCommandError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Input(input, tx))
            .await
            .map_err(|_| SessionCommandError::Gone)?;
        rx.await.map_err(|_| SessionCommandError::Gone)
    }
}

/// Spawns the supervisor of one session (initially STOPPED; call `start`). The task runs on the
/// engine's tracker and ends on `shutdown`, when every handle is dropped, or on `cancel`; in
/// every case it closes the browser first.
pub fn spawn_session(
    engine: Engine,
    spec: SessionSpec,
    config: SupervisorConfig,
    cancel: CancellationToken,
) -> SessionHandle {
    let now = Now::system();
    let machine = Machine::new(config.timing.clone(), now);
    let (commands, command_rx) = mpsc::channel(32);
    let (status_tx, status) = watch::channel(machine.snapshot());
    let (browser_tx, browser) = watch::channel(None);
    let (events, _) = broadcast::channel(1024);
    let (done_tx, done) = watch::channel(false);
    let cancel = cancel.child_token();
    let handle = SessionHandle {
        workspace: spec.workspace.clone(),
        session: spec.session.clone(),
        commands,
        status,
        browser,
        events: events.clone(),
        cancel: cancel.clone(),
        done,
    };
    let task = Supervisor {
        engine: engine.clone(),
        spec,
        config,
        machine,
        current: None,
        event_rx: None,
        permit: None,
        status_tx,
        browser_tx,
        events,
        published: None,
        memory_bytes: None,
        budget_restarted: None,
        purged: None,
        live_launch: false,
        cancel,
    };
    engine.tracker().spawn(async move {
        task.run(command_rx).await;
        let _ = done_tx.send(true);
    });
    handle
}

struct Supervisor {
    engine: Engine,
    spec: SessionSpec,
    config: SupervisorConfig,
    machine: Machine,
    current: Option<BrowserSession>,
    event_rx: Option<EventReceiver>,
    permit: Option<OwnedSemaphorePermit>,
    status_tx: watch::Sender<SessionStatus>,
    browser_tx: watch::Sender<Option<BrowserSession>>,
    events: broadcast::Sender<SessionEvent>,
    published: Option<Status>,
    memory_bytes: Option<u64>,
    /// When the memory budget last restarted this session (restarts are spaced, so a budget
    /// below what a fresh session needs cannot turn into a restart loop).
    budget_restarted: Option<Instant>,
    /// When the browser was last purged (or logged in, the start of the first interval).
    purged: Option<Instant>,
    /// Whether the current browser loaded WhatsApp Web live (not pinned).
    live_launch: bool,
    cancel: CancellationToken,
}

async fn next_event(rx: &mut Option<EventReceiver>) -> Option<EngineEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

// === impl Supervisor ===

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let cancel = self.cancel.clone();
        self.publish();
        let mut memory = self.config.memory_interval.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let deadline = self.machine.next_deadline();
            tokio::select! {
                _ = cancel.cancelled() => break,
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Input(input, reply)) => self.apply_command(input, reply).await,
                },
                event = next_event(&mut self.event_rx) => match event {
                    Some(event) => {
                        if let EngineEvent::Unsupported { missing, version } = &event {
                            tracing::error!(workspace = %self.spec.workspace, session = %self.spec.session,
                                missing = %missing.join(","), version = version.as_deref().unwrap_or("?"),
                                "WhatsApp Web lacks what the adapter needs");
                            metrics::surface_missing(missing);
                        }
                        let _ = self.events.send(SessionEvent::Engine(event.clone()));
                        let generation = self.machine.generation();
                        self.apply(Input::Event { generation, event }).await;
                    }
                    // Every sender is gone: the browser's tasks have ended (a Crashed event,
                    // if any, came before).
                    None => self.event_rx = None,
                },
                _ = sleep_until(deadline) => self.apply(Input::Tick).await,
                _ = async {
                    match memory.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending().await,
                    }
                } => self.sample_memory().await,
            }
        }
        self.close_browser().await;
        self.retire();
    }

    /// A command: answered with the status right away when it launches a browser (start and
    /// restart answer STARTING instead of waiting seconds for Chromium, or for a launch slot),
    /// and after its actions otherwise (stop and logout answer once the browser is closed and
    /// the profile deleted).
    async fn apply_command(&mut self, input: Input, reply: oneshot::Sender<SessionStatus>) {
        self.apply_inner(input, Some(reply)).await
    }

    /// Feeds the machine and carries out its actions (which may feed it again).
    async fn apply(&mut self, input: Input) {
        self.apply_inner(input, None).await
    }

    async fn apply_inner(
        &mut self,
        input: Input,
        mut reply: Option<oneshot::Sender<SessionStatus>>,
    ) {
        let restarts_before = self.machine.restarts();
        let status_before = self.machine.status();
        let is_qr = matches!(
            &input,
            Input::Event {
                event: EngineEvent::Qr { .. },
                ..
            }
        );
        let mut queue: VecDeque<Action> = self.machine.handle(input, Now::system()).into();
        if queue.iter().any(|a| matches!(a, Action::Launch { .. }))
            && let Some(reply) = reply.take()
        {
            self.publish();
            let _ = reply.send(self.status_tx.borrow().clone());
        }
        if is_qr
            && self.machine.qrs_this_launch() == 1
            && let Some(at) = self.machine.launched_at()
        {
            metrics::qr_latency(at.elapsed());
        }
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Launch { generation } => {
                    if let Err(error) = self.launch().await {
                        tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, %error, "launch failed");
                        queue.extend(self.machine.handle(
                            Input::LaunchFailed {
                                generation,
                                error: error.to_string(),
                            },
                            Now::system(),
                        ));
                    }
                }
                Action::LogoutBrowser => {
                    if let Some(browser) = &self.current
                        && let Err(e) = browser.logout().await
                    {
                        tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "logout in WhatsApp Web failed");
                    }
                }
                Action::Close => self.close_browser().await,
                Action::DeleteProfile => self.delete_profile(),
            }
        }
        for _ in restarts_before..self.machine.restarts() {
            metrics::restarted();
        }
        if status_before != Status::Working && self.machine.status() == Status::Working {
            self.on_working();
        }
        // The launch permit is held only while a browser is launching.
        if !(self.machine.status() == Status::Starting && self.machine.browser_up()) {
            self.permit = None;
        }
        self.publish();
        if let Some(reply) = reply {
            let _ = reply.send(self.status_tx.borrow().clone());
        }
    }

    /// A session reached WORKING: the adapter found everything (the surface gauge resets), and
    /// a live version is proven good (cached by the version control, off this task).
    fn on_working(&mut self) {
        metrics::surface_complete();
        let (Some(versions), Some(version), Some(browser)) = (
            self.config.versions.clone(),
            self.machine.snapshot().wa_version,
            self.current.clone(),
        ) else {
            return;
        };
        if !self.live_launch {
            return;
        }
        let (ws, s) = (self.spec.workspace.clone(), self.spec.session.clone());
        self.engine.tracker().spawn(async move {
            let html = if versions.wants_copy(&version) {
                match browser.document_html().await {
                    Ok(html) => {
                        if html.is_none() {
                            tracing::warn!(workspace = %ws, session = %s, %version, "the live index.html is no longer available; another session will cache it");
                        }
                        html
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %ws, session = %s, %version, error = %e, "reading the live index.html failed");
                        None
                    }
                }
            } else {
                None
            };
            let _ = tokio::task::spawn_blocking(move || versions.proven(&version, html)).await;
        });
    }

    async fn launch(&mut self) -> Result<(), EngineError> {
        self.close_browser().await;
        if self.permit.is_none()
            && let Some(limiter) = &self.config.limiter
        {
            // Waiting for a slot must not hold up a shutdown (a drain cancels every session).
            tokio::select! {
                // A closed semaphore cannot happen (it is never closed); treat it as unbounded.
                permit = limiter.0.clone().acquire_owned() => self.permit = permit.ok(),
                _ = self.cancel.cancelled() => return Err(EngineError::Closed),
            }
        }
        if let Some(lock) = &self.spec.lock {
            match remove_stale_singletons(
                &self.spec.profile_dir,
                &self.spec.workspace,
                lock.as_ref(),
            ) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(workspace = %self.spec.workspace, session = %self.spec.session, count = removed.len(), "removed stale Chromium locks");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "stale lock check failed")
                }
            }
        }
        // A launch is a handful of bounded steps, but chromiumoxide has had hangs in
        // `new_page` (its issue #64); the start deadline bounds the whole launch too. A launch
        // abandoned here drops its `Browser`, whose child is killed and reaped by tokio.
        let plan = match &self.config.versions {
            Some(v) => v.plan().await,
            None => super::versions::LaunchPlan::default(),
        };
        if let Some(p) = &plan.pinned {
            tracing::info!(workspace = %self.spec.workspace, session = %self.spec.session, version = %p.version, "launching on a pinned WhatsApp Web version (cached index.html)");
        }
        if let Some(note) = &plan.note {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, %note, "WhatsApp Web version");
        }
        let opts = super::driver::LaunchOptions {
            pinned_index_html: plan.pinned.as_ref().map(|p| p.index_html.clone()),
            capture_document: self.config.versions.is_some() && plan.pinned.is_none(),
        };
        let limit = self.config.timing.start_timeout;
        let launch = tokio::time::timeout(
            limit,
            self.engine.launch_with(&self.spec.profile_dir, &opts),
        );
        let browser = tokio::select! {
            launched = launch => launched.map_err(|_| EngineError::Timeout("launch"))??,
            _ = self.cancel.cancelled() => return Err(EngineError::Closed),
        };
        self.event_rx = browser.take_events();
        self.live_launch = plan.pinned.is_none();
        let generation = self.machine.generation();
        self.machine
            .set_launch_plan(generation, plan.pinned.map(|p| p.version), plan.note);
        self.current = Some(browser.clone());
        self.browser_tx.send_replace(Some(browser));
        Ok(())
    }

    async fn close_browser(&mut self) {
        if let Some(browser) = self.current.take() {
            self.browser_tx.send_replace(None);
            browser.close().await;
        }
        self.event_rx = None;
        self.memory_bytes = None;
    }

    fn delete_profile(&mut self) {
        if let Some(lock) = &self.spec.lock
            && !lock.is_held()
        {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, "workspace lock lost; profile not deleted");
            return;
        }
        if let Err(e) = delete_profile(&self.spec.profile_dir) {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "profile deletion failed");
        }
    }

    async fn sample_memory(&mut self) {
        let Some(pid) = self.current.as_ref().and_then(|b| b.pid()) else {
            return;
        };
        self.purge_if_due().await;
        let pss = tokio::task::spawn_blocking(move || super::memory::process_tree_pss(pid)).await;
        if let Ok(Ok(Some(bytes))) = pss {
            self.memory_bytes = Some(bytes);
            metrics::session_memory(
                self.spec.workspace.as_str(),
                self.spec.session.as_str(),
                bytes,
            );
            self.publish();
            let budget = self.engine.config().memory_budget_mb;
            if self.machine.status() == Status::Working
                && super::memory::over_budget(bytes, budget)
                && self
                    .budget_restarted
                    .is_none_or(|at| at.elapsed() >= BUDGET_RESTART_SPACING)
            {
                tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session,
                    pss_mib = bytes >> 20, budget_mib = budget.unwrap_or_default(),
                    "session over its memory budget: restarting it (profile kept, no QR)");
                self.budget_restarted = Some(Instant::now());
                self.apply(Input::Restart).await;
            }
        }
    }

    /// The periodic purge: a `WORKING` browser frees what it can spare every
    /// `EngineConfig::purge_interval` (measured: 18–21 % less PSS on a heap-heavy page).
    async fn purge_if_due(&mut self) {
        let Some(every) = self.engine.config().purge_interval else {
            return;
        };
        if self.machine.status() != Status::Working {
            // The interval starts when the session logs in, not at launch.
            self.purged = None;
            return;
        }
        let last = *self.purged.get_or_insert_with(Instant::now);
        if last.elapsed() < every {
            return;
        }
        self.purged = Some(Instant::now());
        if let Some(browser) = &self.current
            && let Err(e) = browser.purge_memory().await
        {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "memory purge failed");
        }
    }

    fn publish(&mut self) {
        let mut status = self.machine.snapshot();
        status.pid = self.current.as_ref().and_then(|b| b.pid());
        status.memory_bytes = self.memory_bytes;
        if self.published != Some(status.status) {
            metrics::status_moved(self.published, Some(status.status));
            self.published = Some(status.status);
        }
        // Subscribers hear of status changes, not of every memory sample.
        let notable = {
            let old = self.status_tx.borrow();
            let mut a = old.clone();
            let mut b = status.clone();
            a.memory_bytes = None;
            b.memory_bytes = None;
            a != b
        };
        self.status_tx.send_replace(status.clone());
        if notable {
            let _ = self.events.send(SessionEvent::Status(status));
        }
    }

    fn retire(&mut self) {
        metrics::status_moved(self.published.take(), None);
        metrics::session_memory(self.spec.workspace.as_str(), self.spec.session.as_str(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn for_each_bounded_never_exceeds_its_bound_and_runs_everything() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for_each_bounded(0..20, 3, |_| {
            let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Yield a few times so that other items get to start meanwhile.
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn start_answers_at_once_and_shutdown_is_not_held_up_by_a_launch_slot() {
        let engine = Engine::new(crate::engine::EngineConfig {
            chromium: "/nonexistent/chromium".into(),
            ..crate::engine::EngineConfig::default()
        });
        let limiter = LaunchLimiter::new(1);
        // Someone else holds the only launch slot for the whole test.
        let _slot = limiter.0.clone().acquire_owned().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let handle = spawn_session(
            engine.clone(),
            SessionSpec {
                workspace: WorkspaceId::new("ws").unwrap(),
                session: SessionId::new("s").unwrap(),
                profile_dir: dir.path().join("profile"),
                lock: None,
            },
            SupervisorConfig {
                limiter: Some(limiter.clone()),
                memory_interval: None,
                ..SupervisorConfig::default()
            },
            CancellationToken::new(),
        );
        let limit = Duration::from_secs(10);
        let status = tokio::time::timeout(limit, handle.start())
            .await
            .expect("start answers while the launch waits for a slot")
            .unwrap();
        assert_eq!(status.status, Status::Starting);
        tokio::time::timeout(limit, handle.shutdown())
            .await
            .expect("shutdown is not held up by the launch slot");
        assert!(matches!(
            handle.stop().await,
            Err(SessionCommandError::Gone)
        ));
        // The session never got the slot, so it is still the other holder's.
        assert_eq!(limiter.available(), 0);
    }

    #[tokio::test]
    async fn launch_limiter_hands_out_at_most_its_permits() {
        let limiter = LaunchLimiter::new(2);
        let a = limiter.0.clone().acquire_owned().await.unwrap();
        let _b = limiter.0.clone().acquire_owned().await.unwrap();
        assert_eq!(limiter.available(), 0);
        assert!(limiter.0.clone().try_acquire_owned().is_err());
        drop(a);
        assert_eq!(limiter.available(), 1);
        assert_eq!(LaunchLimiter::new(0).available(), 1, "at least one");
    }
}
