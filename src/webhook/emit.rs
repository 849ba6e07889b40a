//! [`Emitter`]: builds envelopes for a shard (shard number, session metadata, timestamp) and
//! appends them to the outbox. What the worker calls for `session.status` (stored together with
//! the session's status row), `session.qr` and inbound `message` events.

use std::sync::Arc;

use serde_json::Value;

use super::config::Registry;
use super::envelope::{Envelope, events};
use crate::ids::{SessionId, WorkspaceId};
use crate::store::{Store, StoreError};

/// Appends events of one shard to its outbox.
#[derive(Debug, Clone)]
pub struct Emitter {
    store: Store,
    registry: Arc<Registry>,
    shard: u32,
}

impl Emitter {
    /// An emitter for `shard` writing to `store`, taking session metadata from `registry`.
    pub fn new(store: Store, registry: Arc<Registry>, shard: u32) -> Self {
        Self {
            store,
            registry,
            shard,
        }
    }

    /// The envelope for `event` with `payload`, timestamped `now_ms` (not yet stored).
    pub fn envelope(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        event: &str,
        payload: Value,
        now_ms: u64,
    ) -> Envelope {
        Envelope::new(
            event,
            ws,
            s,
            self.shard,
            now_ms,
            payload,
            self.registry.metadata(ws, s),
        )
    }

    /// Builds and appends an event; returns it (its `id` is the webhook and SSE id).
    pub async fn emit(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        event: &str,
        payload: Value,
        now_ms: u64,
    ) -> Result<Envelope, StoreError> {
        let env = self.envelope(ws, s, event, payload, now_ms);
        self.store.record_event(&env, now_ms).await?;
        Ok(env)
    }

    /// Records the session's new status and its `session.status` event `{"status": <STOPPED|
    /// STARTING|SCAN_QR_CODE|WORKING|FAILED>, ...extra}` in one transaction.
    pub async fn session_status(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        status: &str,
        extra: Value,
        now_ms: u64,
    ) -> Result<Envelope, StoreError> {
        let mut payload = match extra {
            Value::Object(m) => m,
            _ => Default::default(),
        };
        payload.insert("status".into(), Value::String(status.to_owned()));
        let env = self.envelope(
            ws,
            s,
            events::SESSION_STATUS,
            Value::Object(payload),
            now_ms,
        );
        // The status row and its event commit together.
        self.store
            .set_session_status(ws, s, status, Some(&env), now_ms)
            .await?;
        Ok(env)
    }
}
