//! The per-session send queue: persistent FIFO in the shard store, paced by a jittered token
//! bucket, with backpressure, handing messages one at a time to the WhatsApp engine.
//!
//! * [`pacing`] is the pure part: [`PacingConfig`] (documented defaults), [`TokenBucket`].
//! * [`SendQueue::submit`] is what the API calls for `POST …/messages`: idempotency, the queue
//!   cap (→ 429 with `Retry-After`), one transaction.
//! * [`SendQueue::run`] is the dispatcher: one task per session with queued messages, strictly in
//!   order, calling [`MessageSender::send`] (implemented by the engine) and recording
//!   `queued → sent` or `failed` with the `message.sent` / `message.failed` events in the same
//!   transaction.
//! * [`SendQueue::on_ack`] is what the engine calls for WhatsApp acks: `sent → server → device →
//!   read` with `message.ack` events.
//!
//! A send in flight when the process dies is not resent after the restart: it fails with reason
//! `interrupted` (a duplicate message to a contact is worse than a reported failure; the client
//! decides whether to send again).

pub mod pacing;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use pacing::{PacingConfig, TokenBucket};

use crate::api::ApiError;
use crate::ids::{SessionId, WorkspaceId};
use crate::store::{
    EnqueueRequest, Enqueued, IdempotencyKey, Message, MessageKind, MessageStatus, NewMessage,
    QueuedMessage, Store, StoreError, StoredResponse,
};
use crate::webhook::{Envelope, Registry, events};

mod dispatch;

/// The WhatsApp message id the engine returns for a sent message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WaMessageId(pub String);

/// Why the engine could not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is not connected (not `WORKING`): the message stays queued and is retried
    /// after `retry_delay_ms` without counting an attempt (until it expires).
    #[error("session not ready: {0}")]
    NotReady(String),
    /// A failure that may pass (page busy, timeout): retried up to `max_attempts`.
    #[error("transient send failure: {0}")]
    Transient(String),
    /// A final refusal (invalid recipient, media rejected): the message fails at once.
    #[error("send rejected: {0}")]
    Rejected(String),
}

/// What the engine does to simulate a person before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresencePlan {
    /// Mark the chat as seen first.
    pub send_seen: bool,
    /// Show "typing…" for this long first.
    pub typing: Option<Duration>,
}

/// A message handed to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// wafleet's message id.
    pub id: String,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Session that sends.
    pub session: SessionId,
    /// Recipient.
    pub to: String,
    /// Text or media.
    pub kind: MessageKind,
    /// The request body (e.g. `{"to","text"}` or the media fields).
    pub body: Value,
    /// Seen / typing simulation to perform before sending.
    pub presence: PresencePlan,
}

/// The engine side: sends one message of a session and returns WhatsApp's id for it.
pub trait MessageSender: Send + Sync + 'static {
    /// Sends `msg` (performing its presence plan first). Called for one session at a time in
    /// queue order; calls for different sessions may run concurrently.
    fn send(
        &self,
        msg: OutgoingMessage,
    ) -> impl Future<Output = Result<WaMessageId, SendError>> + Send;
}

/// A send request after API validation.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Session.
    pub session: SessionId,
    /// Recipient.
    pub to: String,
    /// Text or media.
    pub kind: MessageKind,
    /// The request body to keep and hand to the engine.
    pub body: Value,
}

/// The answer to a submission: status and body of the 202 (or of the first answer, replayed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The message id (for a replay: parsed from the stored body, if it has one).
    pub id: Option<String>,
    /// The response to send.
    pub response: StoredResponse,
    /// Whether this is a replay of an earlier answer under the same `Idempotency-Key`.
    pub replayed: bool,
}

/// Errors of the send queue, each mapped to an API answer by [`SendqError::to_api_error`].
#[derive(Debug, thiserror::Error)]
pub enum SendqError {
    /// The session's queue is full: 429 with `Retry-After`.
    #[error("the send queue of this session is full; retry in {retry_after_secs} s")]
    QueueFull {
        /// Suggested wait.
        retry_after_secs: u64,
    },
    /// The `Idempotency-Key` was used with another request: 422.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// Store failure: 500.
    #[error(transparent)]
    Store(StoreError),
}

impl SendqError {
    /// The API answer: 429 `queue_full` with `Retry-After`, 422 `idempotency_conflict`, or 500.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            SendqError::QueueFull { retry_after_secs } => ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                self.to_string(),
            )
            .with_header(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(*retry_after_secs),
            ),
            SendqError::IdempotencyConflict => ApiError::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_conflict",
                self.to_string(),
            ),
            SendqError::Store(_) => ApiError::internal("storage error"),
        }
    }
}

impl From<StoreError> for SendqError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyConflict => SendqError::IdempotencyConflict,
            other => SendqError::Store(other),
        }
    }
}

type SessionKey = (WorkspaceId, SessionId);

/// The shard's send queue: submission, pacing state and the dispatcher.
pub struct SendQueue<S> {
    store: Store,
    sender: Arc<S>,
    registry: Arc<Registry>,
    shard: u32,
    defaults: PacingConfig,
    overrides: RwLock<HashMap<SessionKey, PacingConfig>>,
    /// Token buckets outlive the per-session tasks so pacing holds across idle gaps.
    buckets: Mutex<HashMap<SessionKey, TokenBucket>>,
    /// Wakes sessions waiting on a `NotReady` session (see [`SendQueue::session_ready`]).
    ready: Notify,
    /// Acks that arrived before the send was recorded (WhatsApp can ack within milliseconds,
    /// before the dispatcher has stored the WhatsApp id): applied right after it is.
    early_acks: Mutex<HashMap<(SessionKey, String), EarlyAcks>>,
}

/// Acks kept for a WhatsApp id not yet known, and when the first arrived.
#[derive(Debug, Default)]
struct EarlyAcks {
    acks: Vec<i64>,
    since_ms: u64,
}

/// Early acks are kept this long, for at most this many messages.
const EARLY_ACK_TTL_MS: u64 = 120_000;
const EARLY_ACK_CAP: usize = 10_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// === impl SendQueue ===

impl<S: MessageSender> SendQueue<S> {
    /// A send queue over `store`, sending through `sender`; envelopes carry `shard` and the
    /// session metadata from `registry`; sessions without their own settings use `defaults`.
    pub fn new(
        store: Store,
        sender: Arc<S>,
        registry: Arc<Registry>,
        shard: u32,
        defaults: PacingConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sender,
            registry,
            shard,
            defaults,
            overrides: RwLock::default(),
            buckets: Mutex::default(),
            ready: Notify::new(),
            early_acks: Mutex::default(),
        })
    }

    /// Sets (or with `None` clears) a session's own pacing (validate it first).
    pub fn set_pacing(&self, ws: &WorkspaceId, s: &SessionId, cfg: Option<PacingConfig>) {
        let mut map = self.overrides.write().unwrap_or_else(|p| p.into_inner());
        match cfg {
            Some(c) => map.insert((ws.clone(), s.clone()), c),
            None => map.remove(&(ws.clone(), s.clone())),
        };
    }

    /// The session's pacing.
    pub fn pacing(&self, ws: &WorkspaceId, s: &SessionId) -> PacingConfig {
        self.overrides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(ws.clone(), s.clone()))
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    /// Tells waiting dispatchers that a session became ready (call on `WORKING`), so messages
    /// held back by [`SendError::NotReady`] go without waiting out the retry delay.
    pub fn session_ready(&self) {
        self.ready.notify_waiters();
    }

    /// Queues a message (`POST …/messages`). With an idempotency key: the same request again
    /// replays the first answer, another request under the key is [`SendqError::IdempotencyConflict`].
    /// A full queue is [`SendqError::QueueFull`]. The answer is 202 `{"id","status":"queued"}`.
    pub async fn submit(
        &self,
        req: SendRequest,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Submitted, SendqError> {
        let cfg = self.pacing(&req.workspace, &req.session);
        let id = format!("msg_{}", ulid::Ulid::new());
        let response = StoredResponse {
            status: 202,
            body: json!({"id": id, "status": "queued"})
                .to_string()
                .into_bytes(),
        };
        let msg = NewMessage {
            id: id.clone(),
            workspace: req.workspace,
            session: req.session,
            to: req.to,
            kind: req.kind,
            body: req.body,
        };
        let r = self
            .store
            .enqueue_message(EnqueueRequest {
                message: &msg,
                idempotency: idempotency.as_ref().map(|k| (k, &response)),
                queue_cap: cfg.queue_cap,
                event: None,
                now_ms: now_ms(),
            })
            .await;
        match r {
            Ok(Enqueued::Queued { .. }) => Ok(Submitted {
                id: Some(id),
                response,
                replayed: false,
            }),
            Ok(Enqueued::Replay(stored)) => Ok(Submitted {
                id: serde_json::from_slice::<Value>(&stored.body)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned)),
                response: stored,
                replayed: true,
            }),
            Err(StoreError::QueueFull { .. }) => Err(SendqError::QueueFull {
                retry_after_secs: cfg.retry_after_secs(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a WhatsApp ack for the session's message `wa_id` (`ack` as in WhatsApp Web: 1
    /// server, 2 device, 3 read, 4 played, -1 error) with its `message.ack` (or
    /// `message.failed`) event. Acks that do not move the status forward are ignored
    /// (`Ok(None)`). An ack for a WhatsApp id not (yet) recorded is kept for two minutes and
    /// applied if a send with that id is recorded meanwhile (acks can overtake the dispatcher's
    /// write); acks of messages sent from the phone simply expire.
    pub async fn on_ack(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        wa_id: &str,
        ack: i64,
    ) -> Result<Option<Message>, StoreError> {
        let Some(to) = MessageStatus::from_ack(ack) else {
            return Ok(None);
        };
        let Some(msg) = self.store.message_by_wa_id(ws, s, wa_id).await? else {
            self.stash_ack(ws, s, wa_id, ack);
            return Ok(None);
        };
        let reason = (to == MessageStatus::Failed).then_some("error ack from WhatsApp");
        self.store
            .update_message_status(&msg.id, to, reason, None, now_ms(), |m| {
                Some(self.status_event(m))
            })
            .await
    }

    fn stash_ack(&self, ws: &WorkspaceId, s: &SessionId, wa_id: &str, ack: i64) {
        let now = now_ms();
        let mut map = self.early_acks.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= EARLY_ACK_CAP {
            map.retain(|_, e| now.saturating_sub(e.since_ms) < EARLY_ACK_TTL_MS);
            if map.len() >= EARLY_ACK_CAP {
                return;
            }
        }
        let entry = map
            .entry(((ws.clone(), s.clone()), wa_id.to_owned()))
            .or_insert_with(|| EarlyAcks {
                acks: Vec::new(),
                since_ms: now,
            });
        if entry.acks.len() < 8 {
            entry.acks.push(ack);
        }
    }

    /// Applies acks that arrived before the send of `wa_id` was recorded.
    async fn apply_early_acks(&self, key: &SessionKey, wa_id: &str) {
        let early = self
            .early_acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(key.clone(), wa_id.to_owned()));
        let Some(early) = early else { return };
        if now_ms().saturating_sub(early.since_ms) >= EARLY_ACK_TTL_MS {
            return;
        }
        for ack in early.acks {
            if let Err(e) = self.on_ack(&key.0, &key.1, wa_id, ack).await {
                warn!(wa_id, error = %e, "applying an early ack failed");
            }
        }
    }

    /// Fails every queued message of a session that is not being sent right now, with `reason`
    /// and a `message.failed` event each (call when a session is deleted or logged out).
    /// Returns how many.
    pub async fn cancel_session(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let ids = self.store.queued_unclaimed(ws, s).await?;
        let mut n = 0;
        for id in ids {
            let done = self
                .store
                .update_message_status(
                    &id,
                    MessageStatus::Failed,
                    Some(reason),
                    None,
                    now_ms(),
                    |m| Some(self.status_event(m)),
                )
                .await?;
            n += u64::from(done.is_some());
        }
        Ok(n)
    }

    /// The event for a message's current status.
    fn status_event(&self, m: &Message) -> Envelope {
        let (event, payload) = match m.status {
            MessageStatus::Failed => (
                events::MESSAGE_FAILED,
                json!({"id": m.id, "to": m.to, "status": "failed", "reason": m.reason, "wa_id": m.wa_id}),
            ),
            MessageStatus::Sent => (
                events::MESSAGE_SENT,
                json!({"id": m.id, "to": m.to, "status": "sent", "wa_id": m.wa_id}),
            ),
            st => (
                events::MESSAGE_ACK,
                json!({"id": m.id, "to": m.to, "status": st.as_str(), "ack": st.ack(), "wa_id": m.wa_id}),
            ),
        };
        Envelope::new(
            event,
            &m.workspace,
            &m.session,
            self.shard,
            now_ms(),
            payload,
            self.registry.metadata(&m.workspace, &m.session),
        )
    }

    /// Fails messages whose send was in flight when `cause` (a restart, a handoff) cut it
    /// short, with reason `interrupted` and a `message.failed` event each: whether WhatsApp got
    /// them is unknown, and a duplicate to a contact is worse than a reported failure. Errors
    /// are logged; returns how many were failed.
    pub async fn fail_interrupted(&self, ids: &[String], cause: &str) -> usize {
        let mut n = 0;
        for id in ids {
            warn!(message = %id, cause, "send interrupted; marking it failed");
            match self.fail(id, "interrupted").await {
                Ok(()) => n += 1,
                Err(e) => warn!(message = %id, error = %e, "marking an interrupted send failed"),
            }
        }
        n
    }

    async fn fail(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        self.store
            .update_message_status(
                id,
                MessageStatus::Failed,
                Some(reason),
                None,
                now_ms(),
                |m| Some(self.status_event(m)),
            )
            .await?;
        Ok(())
    }
}
