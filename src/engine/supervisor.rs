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

mod task;
use task::Supervisor;

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

#[cfg(test)]
mod tests;
