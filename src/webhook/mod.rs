//! Webhooks: the event envelope, signing, per-session targets, durable delivery with retries
//! and dead letters, and the server-sent-event stream of the same events.
//!
//! Events are written to the shard store's outbox by the state change that causes them
//! ([`crate::store`]); this module reads the outbox. It does not decide which events exist
//! (the worker and the send queue do) and does not persist webhook configuration (the worker
//! keeps it in `session.json` and loads it into a [`Registry`]).
//!
//! * [`Envelope`], [`events`]: the DESIGN §8 envelope and event names.
//! * [`sign`]: the spatie `Signature` and the Standard Webhooks headers (pure).
//! * [`WebhookConfig`], [`Registry`], [`UrlPolicy`]: validated targets, global default.
//! * [`delivery::run`]: the delivery task; [`delivery::classify`] and [`delivery::backoff`] are
//!   its pure policy.
//! * [`Emitter`]: builds and appends `session.status`, `session.qr` and inbound `message` events.
//! * [`sse::sse_events`]: `GET …/events` with `Last-Event-ID` resume.
//! * [`api`]: handlers for the dead-letter list, replay and the event stream.

pub mod api;
mod config;
pub mod delivery;
mod emit;
mod envelope;
pub mod sign;
pub mod sse;

pub use config::{
    ConfigError, DEFAULT_TARGET_ID, EventFilter, MAX_TARGETS, Registry, SessionHooks, UrlPolicy,
    WebhookConfig, WebhookRequest, is_target_id,
};
pub use delivery::{DeliveryConfig, WebhookError};
pub use emit::Emitter;
pub use envelope::{Envelope, events, new_event_id};
pub use sign::{SecretError, WebhookSecret};
