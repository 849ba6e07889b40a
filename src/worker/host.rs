//! The seam between shard ownership and whatever runs a workspace's WhatsApp sessions.
//!
//! The ownership loop decides *when* a workspace may run (its Consul lock is held) and calls a
//! [`SessionHost`] to start and stop it; the host decides *how* (one Chromium per session in the
//! engine, an in-memory record in the [`placeholder`](super::placeholder)). This file holds only
//! the trait and the plain data it exchanges; it does no I/O.
//!
//! Contract every implementation keeps (the invariant "never two browsers on one profile" rests
//! on it):
//! * [`SessionHost::start_workspace`] is called only while this worker holds the workspace lock,
//!   and returns promptly: it launches the sessions (bounded, staggered restores are the
//!   caller's job) and does not wait for them to reach `WORKING`.
//! * [`SessionHost::stop_workspace`] returns only once every browser of the workspace is gone
//!   (profile flushed for [`StopMode::Graceful`]); the lock is released after it returns.
//!   With [`StopMode::Immediate`] (fencing) it must finish well inside a few seconds.
//! * Session calls (`create_session`, `list_sessions`, `get_session`) are made only for a
//!   workspace that is running on this host.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::ids::{SessionId, WorkspaceId};
use crate::shutdown::CancellationToken;

/// The session id used when a create request names none.
pub const DEFAULT_SESSION: &str = "default";

/// Proof that this worker holds a workspace's Consul lock, handed to
/// [`SessionHost::start_workspace`]. It stops being held the moment the worker is fenced (its
/// session is about to be lost) or decides to release the lock, so a host can check it before
/// anything that needs the lock — removing a stale Chromium `SingletonLock`, deleting a
/// profile — and can await [`WorkspaceLease::lost`] to kill browsers that outlive it. (The
/// engine implements its `WorkspaceLockGuard` for this type.)
#[derive(Debug, Clone)]
pub struct WorkspaceLease {
    ws: WorkspaceId,
    /// Cancelled when the lease ends (fencing, release, end of term).
    token: CancellationToken,
}

impl WorkspaceLease {
    /// A lease on `ws` that ends when `token` is cancelled (the driver creates these).
    pub fn new(ws: WorkspaceId, token: CancellationToken) -> Self {
        Self { ws, token }
    }

    /// The workspace.
    pub fn workspace(&self) -> &WorkspaceId {
        &self.ws
    }

    /// Whether the lock is still held right now.
    pub fn is_held(&self) -> bool {
        !self.token.is_cancelled()
    }

    /// Resolves when the lease ends.
    pub async fn lost(&self) {
        self.token.cancelled().await
    }
}

// The engine removes stale Chromium locks and deletes profiles only with proof of the lock; the
// lease is that proof.
impl crate::engine::WorkspaceLockGuard for WorkspaceLease {
    fn workspace(&self) -> &WorkspaceId {
        &self.ws
    }

    fn is_held(&self) -> bool {
        WorkspaceLease::is_held(self)
    }
}

/// How to stop a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Drain or handoff: close browsers cleanly so profiles are flushed.
    Graceful,
    /// Fencing: the Consul session is about to be lost; kill now, flush nothing.
    Immediate,
}

/// The status of one WhatsApp session (the names WAHA users know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    /// Not running.
    Stopped,
    /// The browser is starting or restoring the profile.
    Starting,
    /// Waiting for a QR scan or a pairing code.
    ScanQrCode,
    /// Logged in and connected.
    Working,
    /// Gave up after the restart cap, or WhatsApp Web is incompatible (`last_error` says).
    Failed,
    /// The phone must finish a passkey step before the link completes.
    PasskeyRequired,
}

impl SessionStatus {
    /// Every status, for metrics that must report zeros too.
    pub const ALL: [SessionStatus; 6] = [
        SessionStatus::Stopped,
        SessionStatus::Starting,
        SessionStatus::ScanQrCode,
        SessionStatus::Working,
        SessionStatus::Failed,
        SessionStatus::PasskeyRequired,
    ];

    /// The wire name, e.g. `SCAN_QR_CODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Stopped => "STOPPED",
            SessionStatus::Starting => "STARTING",
            SessionStatus::ScanQrCode => "SCAN_QR_CODE",
            SessionStatus::Working => "WORKING",
            SessionStatus::Failed => "FAILED",
            SessionStatus::PasskeyRequired => "PASSKEY_REQUIRED",
        }
    }
}

/// Whether a session should run when its workspace runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Start it whenever the workspace starts.
    #[default]
    Running,
    /// Keep it stopped (`POST …/stop`).
    Stopped,
}

/// One place a session's events are delivered (DESIGN §8); a session has up to
/// [`crate::webhook::MAX_TARGETS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    /// The target's id within the session (`[A-Za-z0-9_-]{1,32}`); assigned (`wh1`, `wh2`, …)
    /// when a request names none. Deliveries and dead letters name their target by it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The receiver's URL.
    pub url: String,
    /// The signing secret; never echoed back by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Event names to deliver; empty means all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Extra request headers sent with every delivery (e.g. the receiver's own auth header).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl WebhookConfig {
    /// The configuration as the API shows it: no secret, and header values replaced, because
    /// extra headers usually carry the receiver's credentials.
    pub fn redacted(&self) -> Self {
        Self {
            id: self.id.clone(),
            url: self.url.clone(),
            secret: None,
            events: self.events.clone(),
            headers: self
                .headers
                .keys()
                .map(|k| (k.clone(), "<redacted>".to_owned()))
                .collect(),
        }
    }
}

/// A session's configuration: what `session.json` holds (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// The session id (also the directory name).
    pub session: SessionId,
    /// The first webhook target, kept for workers and clients that know one webhook only:
    /// read when `webhooks` is absent, written as `webhooks[0]` (see [`SessionConfig::normalize`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Every webhook target (at most 5, ids unique).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
    /// Free-form metadata echoed in every webhook.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// The session's own send pacing and typing/seen behaviour; `None`: the worker's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<crate::sendq::PacingConfig>,
    /// Whether it should run.
    #[serde(default)]
    pub desired: DesiredState,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Reject every incoming call through WhatsApp Web (the `call` event then says
    /// `rejected: true`).
    #[serde(default)]
    pub reject_calls: bool,
    /// When inbound media is downloaded: on the first `GET …/media` (default) or as soon as
    /// the message arrives.
    #[serde(default)]
    pub media_download: MediaDownload,
}

impl SessionConfig {
    /// The webhook targets, from `webhooks`, or from the single `webhook` of a configuration
    /// written before lists existed; targets without an id get one (see [`assign_target_ids`]).
    pub fn targets(&self) -> Vec<WebhookConfig> {
        let mut list = if self.webhooks.is_empty() {
            self.webhook.clone().into_iter().collect()
        } else {
            self.webhooks.clone()
        };
        assign_target_ids(&mut list);
        list
    }

    /// The targets as the API shows them ([`WebhookConfig::redacted`]).
    pub fn redacted_targets(&self) -> Vec<WebhookConfig> {
        self.targets().iter().map(WebhookConfig::redacted).collect()
    }

    /// Brings both webhook fields in line: `webhooks` the full list with ids, `webhook` its
    /// first element. Called before every write of `session.json`.
    pub fn normalize(&mut self) {
        self.webhooks = self.targets();
        self.webhook = self.webhooks.first().cloned();
    }
}

/// Gives every target without an id the first free one of `wh1`, `wh2`, … (deterministic, so
/// a configuration read twice names its targets the same).
pub fn assign_target_ids(list: &mut [WebhookConfig]) {
    let mut n = 0;
    for i in 0..list.len() {
        if !list[i].id.is_empty() {
            continue;
        }
        let id = loop {
            n += 1;
            let id = format!("wh{n}");
            if !list.iter().any(|t| t.id == id) {
                break id;
            }
        };
        list[i].id = id;
    }
}

/// When a session's inbound media is downloaded (docs/api.md "Inbound media").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaDownload {
    /// On the first request for the file.
    #[default]
    Lazy,
    /// As soon as the message arrives, in the background (a bounded pool; delivery of the
    /// event never waits for it).
    Eager,
}

/// What the API reports about one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The session id.
    pub session: SessionId,
    /// Current status.
    pub status: SessionStatus,
    /// The linked phone (`<digits>@c.us`) once logged in.
    pub me: Option<String>,
    /// The shard serving it.
    pub shard: u32,
    /// What should happen when the workspace starts.
    pub desired: DesiredState,
    /// The first webhook target (for clients that know one webhook only), redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Every webhook target, redacted (no secret, header values replaced).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The session's own send pacing, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<crate::sendq::PacingConfig>,
    /// Metadata from the create call.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Last status change, Unix milliseconds.
    pub updated_at_ms: u64,
    /// WhatsApp Web's version (`Debug.VERSION`) once the page reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_version: Option<String>,
    /// The last error (kept after a recovery, for operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Browser relaunches so far (watchdog, crash, restart).
    #[serde(default)]
    pub restarts: u64,
    /// Last PSS sample of the session's Chromium process tree, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// A lifecycle command on one session (`POST …/sessions/{s}/<action>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    /// Run it (desired state running, persisted).
    Start,
    /// Stop it; the profile stays (desired state stopped, persisted).
    Stop,
    /// Close and relaunch the browser.
    Restart,
    /// Unlink the device and delete the profile; the session stays, stopped.
    Logout,
}

/// The QR a session shows right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionQr {
    /// The raw QR string.
    pub value: String,
    /// When WhatsApp rotates it away, Unix milliseconds (estimate).
    pub expires_at: u64,
}

/// Why a host call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The session already exists (create).
    #[error("session {0} already exists")]
    Exists(SessionId),
    /// The workspace is not running on this host.
    #[error("workspace {0} is not running here")]
    NotRunning(WorkspaceId),
    /// Reading or writing the workspace directory failed.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// A stored `session.json` could not be parsed.
    #[error("corrupt {path}: {source}")]
    Corrupt {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// No such session in the workspace.
    #[error("session {0} not found")]
    NotFound(SessionId),
    /// The session is not in a status that allows this (`not_scanning`, `not_working`, …).
    #[error("{message}")]
    WrongStatus {
        /// Machine-readable code for the API (`not_scanning`).
        code: &'static str,
        /// Human-readable text.
        message: String,
    },
    /// This host does not support the call (the placeholder has no QR).
    #[error("not supported by this session host: {0}")]
    Unsupported(&'static str),
    /// A settings change refused (`PATCH …/sessions/{s}`): answered 400 with `code`; nothing
    /// was changed.
    #[error("{message}")]
    Invalid {
        /// Machine-readable code for the API (`invalid_webhook_url`, `invalid_pacing`, …).
        code: &'static str,
        /// Human-readable text.
        message: String,
    },
    /// Anything the implementation wants to report (browser launch failed, …).
    #[error("{0}")]
    Other(String),
}

/// A settings change handed to [`SessionHost::update_session`].
pub struct ConfigUpdate<'a> {
    /// The new configuration from the current one, or why it is refused.
    pub apply: &'a (dyn Fn(&SessionConfig) -> Result<SessionConfig, HostError> + Send + Sync),
    /// Told the new configuration once it is durable, before any later update of the session
    /// (the worker updates its webhook registry and pacing here, so they follow the file's
    /// order).
    pub applied: &'a (dyn Fn(&SessionConfig) + Send + Sync),
}

impl std::fmt::Debug for ConfigUpdate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigUpdate").finish_non_exhaustive()
    }
}

/// Runs the sessions of the workspaces this worker holds locks for. See the module docs for the
/// contract; the engine replaces [`placeholder::PlaceholderHost`](super::placeholder::PlaceholderHost)
/// with a Chromium-backed implementation of this trait.
///
/// Object safe (used as `Arc<dyn SessionHost>`), hence boxed futures instead of `async fn`.
pub trait SessionHost: Send + Sync + 'static {
    /// Starts every session of `ws` whose desired state is running (sessions found in
    /// `<data>/workspaces/<ws>/*/session.json`). Called with the workspace lock held; `lease`
    /// says for how long (keep it to check before lock-protected operations).
    fn start_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        lease: WorkspaceLease,
    ) -> BoxFuture<'a, Result<(), HostError>>;

    /// Stops every session of `ws`; returns once no browser of it is left.
    fn stop_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        mode: StopMode,
    ) -> BoxFuture<'a, Result<(), HostError>>;

    /// Creates a session in a running workspace, persists its config and starts it.
    fn create_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        config: SessionConfig,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>>;

    /// Lists the sessions of a running workspace.
    fn list_sessions<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, HostError>>;

    /// One session of a running workspace, `None` if it does not exist.
    fn get_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionInfo>, HostError>>;

    /// Runs a lifecycle command on one session and answers with its state afterwards.
    fn session_action<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        action: SessionAction,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        let _ = (ws, session, action);
        Box::pin(async { Err(HostError::Unsupported("session lifecycle")) })
    }

    /// Changes a session's settings in place (`PATCH …/sessions/{s}`): `apply` computes the
    /// new configuration from the current one (or refuses it: nothing changes), the host writes
    /// it durably to `session.json`, keeps it, and calls `applied` with it before answering —
    /// all serialized with other updates and the delete of the same session. The browser, the
    /// profile and the login are untouched.
    fn update_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        update: ConfigUpdate<'a>,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        let _ = (ws, session, update);
        Box::pin(async { Err(HostError::Unsupported("settings update")) })
    }

    /// Stops a session and deletes its directory (config and profile).
    fn delete_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        let _ = (ws, session);
        Box::pin(async { Err(HostError::Unsupported("delete")) })
    }

    /// The QR the session shows (`WrongStatus` when it is not scanning).
    fn qr<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<SessionQr, HostError>> {
        let _ = (ws, session);
        Box::pin(async { Err(HostError::Unsupported("qr")) })
    }

    /// Requests a pairing code for `phone` (digits); answers `ABCD-EFGH`.
    fn pairing_code<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<String, HostError>> {
        let _ = (ws, session, phone);
        Box::pin(async { Err(HostError::Unsupported("pairing code")) })
    }

    /// The Chromium-backed host behind this trait object, if it is one (for routes that need
    /// the engine itself: sending, events).
    fn engine_host(&self) -> Option<std::sync::Arc<super::engine_host::EngineHost>> {
        None
    }

    /// How many times a start found another live process running the same workspace (must stay
    /// 0; the placeholder detects it with an owner marker file, the engine with Chromium's
    /// `SingletonLock`). Exposed on the worker state endpoint for tests and the chaos suite.
    fn overlaps(&self) -> u64 {
        0
    }
}
