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
mod engine_sender;
use engine_sender::EngineSender;
pub mod handoff;
mod hooks;
pub(crate) use hooks::validated_target;
use hooks::{hooks_of, load_hooks};
pub mod media;
pub mod payload;
pub mod routes;
pub mod send_fields;
pub mod send_types;
pub mod voice;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::host::SessionConfig;
use crate::engine::{EngineEvent, InboundMessage, SessionCommandError, SessionHandle};
use crate::ids::{SessionId, WorkspaceId};
use crate::sendq::{
    MessageSender, OutgoingMessage, PacingConfig, SendError, SendQueue, WaMessageId,
};
use crate::store::{Maintenance, MessageKind, Store, StoreError};
use crate::webhook::{DeliveryConfig, Emitter, Registry, UrlPolicy, WebhookConfig, events};

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
pub(crate) struct Active {
    /// The shard store (the webhook and create routes read it too).
    pub(crate) store: Store,
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
mod tests;
