//! The events around messages (issue #12): reactions, edits, revokes, calls and presence, from
//! the engine's reports to the outbox (`message.reaction`, `message.edited`, `message.revoked`,
//! `call`, `presence`; payloads in docs/webhooks.md).
//!
//! Calls are the one event the worker acts on: a session created with `reject_calls: true` has
//! every incoming call rejected through WhatsApp Web before the `call` event is recorded, so the
//! event says what happened (`state: "rejected"`, `rejected: true`) rather than what was asked.
//! Presence is opt-in ([`events::PRESENCE`] is in [`events::OPT_IN`]): it is recorded only when
//! the session's webhook names it, since a typing contact produces one every few seconds.

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::{Value, json};
use tracing::warn;

use super::{Active, Messaging, now_ms};
use crate::engine::EngineEvent;
use crate::ids::{SessionId, WorkspaceId};
use crate::store::StoreError;
use crate::webhook::events;

/// The sessions that reject calls (`reject_calls` of their `session.json`).
#[derive(Debug, Default)]
pub(super) struct CallPolicy(Mutex<HashSet<(WorkspaceId, SessionId)>>);

impl CallPolicy {
    /// Sets whether a session rejects calls.
    pub(super) fn set(&self, ws: &WorkspaceId, s: &SessionId, reject: bool) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (ws.clone(), s.clone());
        if reject {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Whether a session rejects calls.
    pub(super) fn rejects(&self, ws: &WorkspaceId, s: &SessionId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(ws.clone(), s.clone()))
    }
}

/// The `call` payload: the offer, its state and whether it was rejected (with the reason when
/// a requested reject failed).
pub fn call_payload(call: &crate::engine::activity::Call, outcome: CallOutcome) -> Value {
    let mut v = serde_json::to_value(call).unwrap_or_else(|_| json!({}));
    let (state, rejected, error) = match outcome {
        CallOutcome::Offered => ("offer", false, None),
        CallOutcome::Rejected => ("rejected", true, None),
        CallOutcome::RejectFailed(e) => ("offer", false, Some(e)),
    };
    if let Some(m) = v.as_object_mut() {
        m.insert("state".into(), json!(state));
        m.insert("rejected".into(), json!(rejected));
        if let Some(e) = error {
            m.insert("reject_error".into(), json!(e));
        }
    }
    v
}

/// What became of an incoming call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Left ringing (the session does not reject calls).
    Offered,
    /// Rejected through WhatsApp Web.
    Rejected,
    /// The session rejects calls, but the reject failed (the reason).
    RejectFailed(String),
}

impl Messaging {
    /// Records one of the events of this module; `Ok(false)` when `event` is not one of them.
    pub(super) async fn on_activity(
        &self,
        a: &Active,
        ws: &WorkspaceId,
        s: &SessionId,
        event: &EngineEvent,
    ) -> Result<bool, StoreError> {
        let (name, payload) = match event {
            EngineEvent::Reaction(r) => (events::MESSAGE_REACTION, to_value(r)),
            EngineEvent::Edited(e) => (events::MESSAGE_EDITED, to_value(e)),
            EngineEvent::Revoked(r) => (events::MESSAGE_REVOKED, to_value(r)),
            EngineEvent::Presence(p) => {
                let wanted = self
                    .registry
                    .targets(ws, s)
                    .iter()
                    .any(|t| t.events.matches(events::PRESENCE));
                if !wanted {
                    return Ok(true);
                }
                (events::PRESENCE, to_value(p))
            }
            EngineEvent::Call(c) => {
                let outcome = if self.calls.rejects(ws, s) {
                    self.reject(ws, s, &c.call_id).await
                } else {
                    CallOutcome::Offered
                };
                (events::CALL, call_payload(c, outcome))
            }
            _ => return Ok(false),
        };
        a.emitter.emit(ws, s, name, payload, now_ms()).await?;
        Ok(true)
    }

    async fn reject(&self, ws: &WorkspaceId, s: &SessionId, call_id: &str) -> CallOutcome {
        let handle = self
            .engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|e| e.session_handle(ws, s));
        let Some(handle) = handle else {
            return CallOutcome::RejectFailed("session is not running".into());
        };
        match handle.reject_call(call_id).await {
            Ok(()) => CallOutcome::Rejected,
            Err(e) => {
                warn!(workspace = %ws, session = %s, error = %e, "rejecting a call failed");
                CallOutcome::RejectFailed(e.to_string())
            }
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::activity::Call;

    #[test]
    fn call_payloads_say_what_happened() {
        let call = Call {
            call_id: "C1".into(),
            from: Some("491@c.us".into()),
            from_pn: None,
            video: false,
            group: false,
            timestamp: Some(1),
        };
        let offered = call_payload(&call, CallOutcome::Offered);
        assert_eq!(offered["state"], "offer");
        assert_eq!(offered["rejected"], false);
        assert_eq!(offered["call_id"], "C1");
        let rejected = call_payload(&call, CallOutcome::Rejected);
        assert_eq!(
            (rejected["state"].as_str(), rejected["rejected"].as_bool()),
            (Some("rejected"), Some(true))
        );
        let failed = call_payload(&call, CallOutcome::RejectFailed("no voip".into()));
        assert_eq!(failed["state"], "offer");
        assert_eq!(failed["reject_error"], "no voip");
    }

    #[test]
    fn the_call_policy_is_per_session() {
        let p = CallPolicy::default();
        let ws = WorkspaceId::new("acme").unwrap();
        let (a, b) = (SessionId::new("a").unwrap(), SessionId::new("b").unwrap());
        p.set(&ws, &a, true);
        assert!(p.rejects(&ws, &a) && !p.rejects(&ws, &b));
        p.set(&ws, &a, false);
        assert!(!p.rejects(&ws, &a));
    }
}
