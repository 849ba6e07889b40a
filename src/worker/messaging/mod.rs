//! Messaging on the worker (issue 5): the shard store, webhook delivery, the send queue and the
//! event pump from the session engine to the outbox, plus their HTTP routes ([`routes`]).
//!
//! It is not the engine (sessions run behind [`EngineAccess`]) and not the store or webhook
//! machinery themselves ([`crate::store`], [`crate::webhook`], [`crate::sendq`]): this module only
//! wires them into the worker's lifecycle.
//!
//! Lifecycle: the shard's SQLite is single-writer, and the shard lock is what guarantees it. So
//! [`Messaging::open`] is called by the driver right after the shard lock is acquired and
//! [`Messaging::close`] when that term ends (drain or fencing). While no term is open the
//! messaging routes answer `503 messaging_unavailable` and engine events are dropped (no session
//! runs without the shard lock anyway). When the map moves a workspace to another shard, its
//! rows in this store move with it ([`handoff`]).

pub mod activity;
pub mod handoff;
pub mod media;
pub mod payload;
pub mod routes;
pub mod send_fields;
pub mod send_types;
pub mod voice;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::host::SessionConfig;
use super::layout::session_file;
use crate::engine::{EngineEvent, InboundMessage, SessionCommandError, SessionHandle};
use crate::ids::{SessionId, WorkspaceId};
use crate::sendq::{
    MessageSender, OutgoingMessage, PacingConfig, SendError, SendQueue, WaMessageId,
};
use crate::store::{Maintenance, MessageKind, Store, StoreError};
use crate::webhook::{
    DeliveryConfig, Emitter, Registry, SessionHooks, UrlPolicy, WebhookConfig, WebhookRequest,
    events,
};

/// Why messaging could not be configured or opened.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// An environment value is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The shard store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Access to the running sessions' engine handles (implemented over the worker's engine host).
pub trait EngineAccess: Send + Sync + 'static {
    /// The handle of a session running on this worker, if any.
    fn session_handle(&self, ws: &WorkspaceId, s: &SessionId) -> Option<SessionHandle>;
}

/// How long [`Messaging::close`] waits for delivery and the dispatcher to stop.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The pieces that live while the shard lock is held.
struct Active {
    store: Store,
    emitter: Emitter,
    sendq: Arc<SendQueue<EngineSender>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// The worker's messaging state (see the module doc). Cheap to share behind an `Arc`.
pub struct Messaging {
    shard: u32,
    data: PathBuf,
    registry: Arc<Registry>,
    url_policy: UrlPolicy,
    media: media::MediaPolicy,
    delivery: DeliveryConfig,
    pacing: PacingConfig,
    engine: RwLock<Option<Arc<dyn EngineAccess>>>,
    active: RwLock<Option<Arc<Active>>>,
    /// Last status emitted per session, so repeated status reports (a new QR) emit once.
    last_status: Mutex<HashMap<(WorkspaceId, SessionId), String>>,
    /// Per-session pacing from `session.json`. Kept here, not only in the send queue, because
    /// the queue is rebuilt at every term while the sessions' configurations outlive terms.
    session_pacing: Mutex<HashMap<(WorkspaceId, SessionId), PacingConfig>>,
    /// Ends event streams when the worker stops.
    shutdown: CancellationToken,
    /// Per-workspace submission gates for the handoff ([`handoff`]).
    gates: handoff::Gates,
    /// The sessions that reject incoming calls ([`activity`]).
    calls: activity::CallPolicy,
    /// Inbound media: download, storage, eager pool, janitor.
    inbound: Arc<crate::worker::media::MediaService>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging")
            .field("shard", &self.shard)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The registry's view of a session's configuration. A webhook the policy refuses is logged
/// and left out (create refuses it before it is ever written).
fn hooks_of(ws: &WorkspaceId, config: &SessionConfig, policy: &UrlPolicy) -> SessionHooks {
    let webhooks = config
        .targets()
        .iter()
        .filter_map(|w| match validated_target(w, policy) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(workspace = %ws, session = %config.session, target = %w.id, error = %e, "session webhook refused");
                None
            }
        })
        .collect();
    let metadata = serde_json::to_value(&config.metadata).unwrap_or(Value::Null);
    let metadata = if metadata.is_object() {
        metadata
    } else {
        json!({})
    };
    SessionHooks { webhooks, metadata }
}

/// Validates one stored or requested target against the URL policy (as on create).
pub(crate) fn validated_target(
    w: &crate::worker::host::WebhookConfig,
    policy: &UrlPolicy,
) -> Result<WebhookConfig, crate::webhook::ConfigError> {
    let req = WebhookRequest {
        url: w.url.clone(),
        secret: w.secret.clone(),
        events: (!w.events.is_empty()).then(|| w.events.clone()),
        headers: (!w.headers.is_empty()).then(|| w.headers.clone()),
    };
    WebhookConfig::from_request(&req, policy).map(|c| c.with_id(w.id.clone()))
}

/// Reads a session's hooks from its `session.json`, for events whose session is not restored
/// yet (see [`crate::webhook::Registry`]). Unreadable or corrupt files count as no session.
fn load_hooks(
    data: &Path,
    ws: &WorkspaceId,
    s: &SessionId,
    policy: &UrlPolicy,
) -> Option<SessionHooks> {
    let path = session_file(data, ws, s);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "reading a session configuration for its webhooks failed");
            return None;
        }
    };
    match serde_json::from_slice::<SessionConfig>(&bytes) {
        Ok(config) => Some(hooks_of(ws, &config, policy)),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "corrupt session configuration");
            None
        }
    }
}

// === impl Messaging ===

impl Messaging {
    /// Messaging for `shard` over `<data>/shards/<k>/wafleet.db`, configured through `lookup`:
    /// the global default webhook (`WAFLEET_WEBHOOK_URL`, `_SECRET`, `_EVENTS`), the webhook
    /// allow-list (`WAFLEET_WEBHOOK_ALLOW`), delivery tuning (`WAFLEET_WEBHOOK_*`) and the media
    /// fetch policy ([`media::MediaPolicy::from_lookup`]).
    pub fn from_lookup(
        shard: u32,
        data: PathBuf,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, MessagingError> {
        let registry = Arc::new(Registry::new());
        let default = WebhookConfig::default_from_lookup(&lookup)
            .map_err(|e| MessagingError::Config(format!("default webhook: {e}")))?;
        registry.set_default(default);
        let url_policy = match lookup("WAFLEET_WEBHOOK_ALLOW").filter(|v| !v.trim().is_empty()) {
            Some(list) => UrlPolicy::parse(&list)
                .map_err(|e| MessagingError::Config(format!("WAFLEET_WEBHOOK_ALLOW: {e}")))?,
            None => UrlPolicy::default(),
        };
        let delivery = DeliveryConfig::from_lookup(&lookup)
            .map_err(|e| MessagingError::Config(e.to_string()))?;
        let media = media::MediaPolicy::from_lookup(&lookup).map_err(MessagingError::Config)?;
        let inbound = crate::worker::media::MediaConfig::from_lookup(&lookup)
            .map_err(MessagingError::Config)
            .and_then(|c| {
                crate::worker::media::MediaService::new(shard, data.clone(), c)
                    .map_err(|e| MessagingError::Config(e.to_string()))
            })?;
        {
            let (data, policy) = (data.clone(), url_policy.clone());
            registry.set_loader(Arc::new(move |ws, s| load_hooks(&data, ws, s, &policy)));
        }
        Ok(Self {
            shard,
            data,
            registry,
            url_policy,
            media,
            delivery,
            pacing: PacingConfig::default(),
            engine: RwLock::new(None),
            active: RwLock::new(None),
            last_status: Mutex::default(),
            session_pacing: Mutex::default(),
            shutdown: CancellationToken::new(),
            gates: handoff::Gates::default(),
            calls: activity::CallPolicy::default(),
            inbound: Arc::new(inbound),
        })
    }

    /// Inbound media (the `…/messages/{wa_id}/media` route and eager downloads).
    pub fn inbound_media(&self) -> &Arc<crate::worker::media::MediaService> {
        &self.inbound
    }

    /// Connects the engine whose sessions send the queued messages.
    pub fn set_engine(&self, engine: Arc<dyn EngineAccess>) {
        {
            let engine = engine.clone();
            self.inbound
                .set_sessions(Arc::new(move |ws, s| engine.session_handle(ws, s)));
        }
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Some(engine);
    }

    /// The webhook registry (targets and metadata per session).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The webhook URL allow-list applied to session webhooks.
    pub fn url_policy(&self) -> &UrlPolicy {
        &self.url_policy
    }

    /// Whether the store is open (a term holds the shard lock).
    pub fn is_open(&self) -> bool {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn active(&self) -> Option<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the shard store and starts webhook delivery, the send-queue dispatcher and store
    /// maintenance. Call only while the shard lock is held. Opening twice is a no-op.
    pub async fn open(&self) -> Result<(), MessagingError> {
        if self.is_open() {
            return Ok(());
        }
        let store = Store::open_shard(&self.data, self.shard).await?;
        let sender = Arc::new(EngineSender {
            engine: self
                .engine
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        });
        let sendq = SendQueue::new(
            store.clone(),
            sender,
            self.registry.clone(),
            self.shard,
            self.pacing.clone(),
        );
        for ((ws, s), cfg) in self
            .session_pacing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            sendq.set_pacing(ws, s, Some(cfg.clone()));
        }
        let stop = self.shutdown.child_token();
        let tasks = TaskTracker::new();
        {
            let (store, registry, config, stop) = (
                store.clone(),
                self.registry.clone(),
                self.delivery.clone(),
                stop.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = crate::webhook::delivery::run(store, registry, config, stop).await {
                    warn!(error = %e, "webhook delivery stopped");
                }
            });
        }
        tasks.spawn(sendq.clone().run(stop.clone()));
        tasks.spawn(crate::store::run_maintenance(
            store.clone(),
            Maintenance::default(),
            stop.clone(),
        ));
        self.inbound.open(store.clone(), &tasks, stop.clone());
        let emitter = Emitter::new(store.clone(), self.registry.clone(), self.shard);
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Active {
            store,
            emitter,
            sendq,
            stop,
            tasks,
        }));
        info!(
            shard = self.shard,
            "messaging open (shard store, delivery, send queue)"
        );
        Ok(())
    }

    /// Stops delivery, the dispatcher and maintenance and closes the store (drain or fencing).
    pub async fn close(&self) {
        let active = self
            .active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(active) = active else { return };
        self.inbound.close();
        active.stop.cancel();
        active.tasks.close();
        // Bounded so a drain stays inside Nomad's kill timeout; an attempt cut short leaves its
        // event pending, delivered again after the restart (at-least-once).
        if tokio::time::timeout(CLOSE_WAIT, active.tasks.wait())
            .await
            .is_err()
        {
            warn!("messaging tasks did not stop in time; closing the store anyway");
        }
        active.store.close().await;
        self.last_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        info!(shard = self.shard, "messaging closed");
    }

    /// Ends every event stream (worker shutdown).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A session was created or restored: its webhook and metadata go into the registry.
    /// A webhook the policy refuses is logged and ignored (create refuses it earlier).
    pub fn on_created(&self, ws: &WorkspaceId, config: &SessionConfig) {
        self.registry
            .set_session(ws, &config.session, hooks_of(ws, config, &self.url_policy));
        self.set_session_pacing(ws, &config.session, config.pacing.clone());
        self.calls.set(ws, &config.session, config.reject_calls);
        self.inbound
            .set_mode(ws, &config.session, config.media_download);
    }

    /// Sets (or, with `None`, clears) a session's own pacing, now and for later terms.
    fn set_session_pacing(&self, ws: &WorkspaceId, s: &SessionId, cfg: Option<PacingConfig>) {
        {
            let mut map = self
                .session_pacing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let key = (ws.clone(), s.clone());
            match &cfg {
                Some(c) => map.insert(key, c.clone()),
                None => map.remove(&key),
            };
        }
        if let Some(a) = self.active() {
            a.sendq.set_pacing(ws, s, cfg);
        }
    }

    /// The pacing the send queue applies to a session: its own, or the worker's default.
    pub fn session_pacing(&self, ws: &WorkspaceId, s: &SessionId) -> PacingConfig {
        self.session_pacing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(ws.clone(), s.clone()))
            .cloned()
            .unwrap_or_else(|| self.pacing.clone())
    }

    /// A session was deleted: forget its webhook; its queued messages fail.
    pub async fn on_deleted(&self, ws: &WorkspaceId, s: &SessionId) {
        if let Some(a) = self.active()
            && let Err(e) = a.sendq.cancel_session(ws, s, "session deleted").await
        {
            warn!(workspace = %ws, session = %s, error = %e, "failing queued messages");
        }
        self.registry.remove_session(ws, s);
        self.set_session_pacing(ws, s, None);
        self.calls.set(ws, s, false);
        self.inbound.delete_session(ws, s).await;
        self.last_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ws.clone(), s.clone()));
    }

    /// A session's status report: a `session.status` event when the status changed (with
    /// `me`, and `reason` when the status says something went wrong); wakes the send queue on
    /// `WORKING`.
    pub async fn on_status(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        status: &str,
        me: Option<&str>,
        reason: Option<&str>,
    ) {
        let Some(a) = self.active() else { return };
        {
            let mut last = self.last_status.lock().unwrap_or_else(|p| p.into_inner());
            let key = (ws.clone(), s.clone());
            if last.get(&key).map(String::as_str) == Some(status) {
                return;
            }
            last.insert(key, status.to_owned());
        }
        let mut extra = serde_json::Map::new();
        if let Some(me) = me {
            extra.insert("me".into(), json!(me));
        }
        if let Some(reason) = reason {
            extra.insert("reason".into(), json!(reason));
        }
        let extra = Value::Object(extra);
        if let Err(e) = a
            .emitter
            .session_status(ws, s, status, extra, now_ms())
            .await
        {
            warn!(workspace = %ws, session = %s, error = %e, "recording session.status");
        }
        if status == "WORKING" {
            a.sendq.session_ready();
        }
    }

    /// An engine event: QR → `session.qr`, a message → `message` / `message.any`, ack → the send
    /// queue.
    pub async fn on_engine(&self, ws: &WorkspaceId, s: &SessionId, event: &EngineEvent) {
        let Some(a) = self.active() else { return };
        let r = match event {
            EngineEvent::Qr { value } => a
                .emitter
                .emit(
                    ws,
                    s,
                    events::SESSION_QR,
                    json!({"value": value, "expires_at": now_ms() + 20_000}),
                    now_ms(),
                )
                .await
                .map(drop),
            EngineEvent::Message(m) => self.on_message(&a, ws, s, m).await,
            EngineEvent::Ack { id, ack } => {
                a.sendq.on_ack(ws, s, id, i64::from(*ack)).await.map(drop)
            }
            EngineEvent::GroupParticipants(c) => a
                .emitter
                .emit(
                    ws,
                    s,
                    events::GROUP_PARTICIPANTS,
                    crate::worker::groups::change_payload(c),
                    now_ms(),
                )
                .await
                .map(drop),
            other => self.on_activity(&a, ws, s, other).await.map(drop),
        };
        if let Err(e) = r {
            warn!(workspace = %ws, session = %s, error = %e, "recording an engine event");
        }
    }
}

impl Messaging {
    /// A message the session saw: `message` for one that arrived (not sent by this account),
    /// `message.any` for every message, including those sent from the phone, but only when the
    /// session's webhook lists it (it doubles the events of a busy session).
    async fn on_message(
        &self,
        a: &Active,
        ws: &WorkspaceId,
        s: &SessionId,
        m: &InboundMessage,
    ) -> Result<(), StoreError> {
        let mut payload = payload::message_payload(m);
        if payload::with_media_url(&mut payload, ws, s) && !m.from_me {
            self.inbound.on_message(ws, s, &m.id);
        }
        if !m.from_me {
            a.emitter
                .emit(ws, s, events::MESSAGE, payload.clone(), now_ms())
                .await?;
        }
        let wants_any = self
            .registry
            .targets(ws, s)
            .iter()
            .any(|t| t.events.matches(events::MESSAGE_ANY));
        if wants_any {
            a.emitter
                .emit(ws, s, events::MESSAGE_ANY, payload, now_ms())
                .await?;
        }
        Ok(())
    }
}

// === impl EngineSender ===

/// [`MessageSender`] over the engine's session handles.
struct EngineSender {
    engine: Option<Arc<dyn EngineAccess>>,
}

impl MessageSender for EngineSender {
    async fn send(&self, msg: OutgoingMessage) -> Result<WaMessageId, SendError> {
        let handle = self
            .engine
            .as_ref()
            .and_then(|e| e.session_handle(&msg.workspace, &msg.session))
            .ok_or_else(|| SendError::NotReady("session is not running".into()))?;
        let status = handle.status().status;
        if status != crate::engine::Status::Working {
            return Err(SendError::NotReady(format!(
                "session is {}",
                status.as_str()
            )));
        }
        // A person types before sending; the pacing config decides how long.
        if let Some(t) = msg.presence.typing {
            tokio::time::sleep(t.min(Duration::from_secs(10))).await;
        }
        let r = match msg.kind {
            // Every body since issue 12 names its type: the page adapter sends it as it is.
            _ if msg.body.get("type").is_some() => handle.send_spec(&msg.to, &msg.body).await,
            MessageKind::Media => {
                let media = media_of(&msg.body).map_err(SendError::Rejected)?;
                handle.send_media(&msg.to, &media).await
            }
            _ => {
                let text = msg.body.get("text").and_then(Value::as_str).unwrap_or("");
                handle.send_text(&msg.to, text).await
            }
        };
        r.map(|m| WaMessageId(m.id)).map_err(|e| match e {
            SessionCommandError::WrongStatus(st) => {
                SendError::NotReady(format!("session is {}", st.as_str()))
            }
            SessionCommandError::Gone => SendError::NotReady("session stopped".into()),
            SessionCommandError::Engine(
                e @ (crate::engine::EngineError::Invalid(_)
                | crate::engine::EngineError::Adapter(_)),
            ) => SendError::Rejected(e.to_string()),
            SessionCommandError::Engine(e) => SendError::Transient(e.to_string()),
        })
    }
}

/// The engine's media from a stored body `{"media": {"data" (base64), "mimetype", …}}`.
fn media_of(body: &Value) -> Result<crate::engine::Media, String> {
    let m = body.get("media").ok_or("no media in the message")?;
    let data = m
        .get("data")
        .and_then(Value::as_str)
        .ok_or("no media data")?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("media data: {e}"))?;
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(crate::engine::Media {
        data: data.into(),
        mimetype: s("mimetype").unwrap_or_else(|| "application/octet-stream".into()),
        filename: s("filename"),
        caption: s("caption"),
    })
}

// === the engine host adapter ===

impl EngineAccess for super::engine_host::EngineHost {
    fn session_handle(&self, ws: &WorkspaceId, s: &SessionId) -> Option<SessionHandle> {
        self.handle(ws, s)
    }
}

/// Feeds the engine host's events into messaging until `shutdown`: `Created` / `Deleted` keep
/// the webhook registry current, `Status` and `Engine` become outbox events and acks. A lagging
/// receiver logs how many events it missed and goes on (statuses are re-sent on change).
pub async fn pump(
    messaging: Arc<Messaging>,
    mut events: tokio::sync::broadcast::Receiver<super::engine_host::HostEvent>,
    shutdown: CancellationToken,
) {
    use super::engine_host::HostEvent;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => ev,
        };
        match ev {
            Ok(HostEvent::Created {
                workspace, config, ..
            }) => messaging.on_created(&workspace, &config),
            Ok(HostEvent::Deleted { workspace, session }) => {
                messaging.on_deleted(&workspace, &session).await
            }
            Ok(HostEvent::Status {
                workspace,
                session,
                status,
            }) => {
                messaging
                    .on_status(
                        &workspace,
                        &session,
                        status.status.as_str(),
                        status.me.as_deref(),
                        status_reason(&status),
                    )
                    .await
            }
            Ok(HostEvent::Engine {
                workspace,
                session,
                event,
            }) => messaging.on_engine(&workspace, &session, &event).await,
            Err(RecvError::Lagged(n)) => {
                warn!(missed = n, "messaging fell behind the session events")
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Why a session is FAILED, or STOPPED by the QR time limit: its `last_error`. (`last_error`
/// outlives recoveries, so it is only news with those two.)
fn status_reason(status: &crate::engine::SessionStatus) -> Option<&str> {
    use crate::engine::Status;
    let e = status.last_error.as_deref()?;
    match status.status {
        Status::Failed => Some(e),
        Status::Stopped if e.starts_with(crate::engine::QR_TIMEOUT_ERROR) => Some(e),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::worker::host::DesiredState;

    #[test]
    fn status_reason_only_for_failed_and_qr_timeout_stops() {
        use crate::engine::Status;
        let mut st = crate::engine::state::Machine::new(
            crate::engine::state::Timing::default(),
            crate::engine::state::Now::system(),
        )
        .snapshot();
        let with = |mut st: crate::engine::SessionStatus, status, error: Option<&str>| {
            st.status = status;
            st.last_error = error.map(str::to_owned);
            st
        };
        let qr = "qr_timeout: not linked within 300 s; start the session again for a new QR";
        st = with(st, Status::Stopped, Some(qr));
        assert_eq!(status_reason(&st), Some(qr));
        st = with(st, Status::Failed, Some("crashed: oom"));
        assert_eq!(status_reason(&st), Some("crashed: oom"));
        // An old error is not news for a stop by command or a recovered session.
        st = with(st, Status::Stopped, Some("crashed: oom"));
        assert_eq!(status_reason(&st), None);
        st = with(st, Status::Working, Some(qr));
        assert_eq!(status_reason(&st), None);
        st = with(st, Status::Failed, None);
        assert_eq!(status_reason(&st), None);
    }

    fn config(s: &str, pacing: Option<PacingConfig>) -> SessionConfig {
        SessionConfig {
            session: SessionId::new(s).unwrap(),
            webhook: None,
            webhooks: Vec::new(),
            metadata: BTreeMap::new(),
            pacing,
            desired: DesiredState::Running,
            created_at_ms: 0,
            reject_calls: false,
            media_download: Default::default(),
        }
    }

    /// A session's own pacing reaches the send queue, also when it was set before the store
    /// opened (sessions are restored before a term opens it), and goes away with the session.
    #[tokio::test]
    async fn session_pacing_reaches_the_send_queue_across_terms() {
        let dir = tempfile::tempdir().unwrap();
        let m = Messaging::from_lookup(0, dir.path().to_path_buf(), |_| None).unwrap();
        let ws = WorkspaceId::new("acme").unwrap();
        let own = PacingConfig {
            interval_ms: 9_000,
            typing: false,
            ..PacingConfig::default()
        };
        m.on_created(&ws, &config("paced", Some(own.clone())));
        m.on_created(&ws, &config("plain", None));
        let paced = SessionId::new("paced").unwrap();
        let plain = SessionId::new("plain").unwrap();

        m.open().await.unwrap();
        let queue = m.active().unwrap().sendq.clone();
        assert_eq!(queue.pacing(&ws, &paced), own);
        assert_eq!(queue.pacing(&ws, &plain), PacingConfig::default());

        m.on_deleted(&ws, &paced).await;
        assert_eq!(queue.pacing(&ws, &paced), PacingConfig::default());
        assert_eq!(m.session_pacing(&ws, &paced), PacingConfig::default());
        m.close().await;
    }

    /// The rolling-restart loss (cluster issue, item 8): a worker restarted mid-send finds the
    /// previous process's events in the outbox as soon as it opens the store, before it has
    /// restored (and so registered) their sessions. Those events are delivered to the
    /// session's own webhook from `session.json`, with its metadata, not skipped as "no
    /// webhook".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_of_sessions_not_restored_yet_reach_their_webhook() {
        use warp::Filter;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let route = warp::post()
            .and(warp::path!("hook"))
            .and(warp::body::json())
            .map(move |body: Value| {
                let _ = tx.send(body);
                warp::reply()
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        {
            let stop = stop.clone();
            tokio::spawn(
                warp::serve(route)
                    .incoming(listener)
                    .graceful(async move { stop.cancelled().await })
                    .run(),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::new("acme").unwrap();
        let s = SessionId::new("default").unwrap();
        let mut cfg = config("default", None);
        cfg.webhook = Some(crate::worker::host::WebhookConfig {
            id: String::new(),
            url: format!("http://{addr}/hook"),
            secret: None,
            events: Vec::new(),
            headers: BTreeMap::new(),
        });
        cfg.metadata.insert("tenant".into(), json!("t-42"));
        let file = session_file(dir.path(), &ws, &s);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, serde_json::to_vec(&cfg).unwrap()).unwrap();

        let m = Messaging::from_lookup(0, dir.path().to_path_buf(), |_| None).unwrap();
        m.open().await.unwrap();
        // No on_created: the session is not restored yet.
        m.active()
            .unwrap()
            .emitter
            .emit(
                &ws,
                &s,
                events::MESSAGE_SENT,
                json!({"id": "msg_1"}),
                now_ms(),
            )
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the event reaches the session's webhook")
            .unwrap();
        assert_eq!(got["event"], events::MESSAGE_SENT);
        assert_eq!(got["payload"]["id"], "msg_1");
        assert_eq!(got["metadata"]["tenant"], "t-42");
        m.close().await;
        stop.cancel();
    }
}
