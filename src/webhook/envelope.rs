//! The event envelope of DESIGN §8 and the event names. Pure data: no I/O.
//!
//! The same envelope is delivered by webhook and streamed by server-sent events, and the exact
//! JSON text stored in the outbox is the body that is signed and sent (so a retry sends the same
//! bytes and the same signature input).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{SessionId, WorkspaceId};

/// Event names (DESIGN §8).
pub mod events {
    /// A session changed status (`STOPPED`, `STARTING`, `SCAN_QR_CODE`, `WORKING`, `FAILED`).
    pub const SESSION_STATUS: &str = "session.status";
    /// A new QR code is available for a session waiting to be linked.
    pub const SESSION_QR: &str = "session.qr";
    /// An inbound message.
    pub const MESSAGE: &str = "message";
    /// Every message of the session, also those sent by this account (from the phone, another
    /// device or the API). Opt-in: delivered only to a webhook that lists it.
    pub const MESSAGE_ANY: &str = "message.any";
    /// A sent message was acknowledged by the server, the device, or read.
    pub const MESSAGE_ACK: &str = "message.ack";
    /// A queued message was handed to WhatsApp.
    pub const MESSAGE_SENT: &str = "message.sent";
    /// A queued message could not be sent.
    pub const MESSAGE_FAILED: &str = "message.failed";
    /// A reaction on a message was set, changed or removed (`emoji` empty).
    pub const MESSAGE_REACTION: &str = "message.reaction";
    /// A message was edited by its sender.
    pub const MESSAGE_EDITED: &str = "message.edited";
    /// A message was deleted for everyone.
    pub const MESSAGE_REVOKED: &str = "message.revoked";
    /// An incoming call (and whether the session rejected it, `reject_calls`).
    pub const CALL: &str = "call";
    /// A contact's presence in a subscribed chat. Opt-in (frequent while someone types).
    pub const PRESENCE: &str = "presence";
    /// Group members were added, removed, promoted or demoted, left, or joined by link (by
    /// anyone, this session included).
    pub const GROUP_PARTICIPANTS: &str = "group.participants";
    /// Events a webhook gets only when it names them (not with "all").
    pub const OPT_IN: [&str; 2] = [MESSAGE_ANY, PRESENCE];
    /// Every event name, in documentation order.
    pub const ALL: [&str; 13] = [
        SESSION_STATUS,
        SESSION_QR,
        MESSAGE,
        MESSAGE_ANY,
        MESSAGE_ACK,
        MESSAGE_SENT,
        MESSAGE_FAILED,
        MESSAGE_REACTION,
        MESSAGE_EDITED,
        MESSAGE_REVOKED,
        CALL,
        PRESENCE,
        GROUP_PARTICIPANTS,
    ];
}

/// `{"id":"evt_<ulid>","event","workspace","session","shard","timestamp":<ms>,"payload","metadata"}`.
///
/// Field order is the declaration order, so the serialized JSON has exactly the documented shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// `evt_<ulid>`: unique, the receiver's deduplication key, and the SSE event id.
    pub id: String,
    /// One of [`events`].
    pub event: String,
    /// The workspace the session belongs to.
    pub workspace: WorkspaceId,
    /// The session the event is about.
    pub session: SessionId,
    /// The shard that produced the event.
    pub shard: u32,
    /// When the event happened, Unix milliseconds.
    pub timestamp: u64,
    /// Event-specific data.
    pub payload: Value,
    /// The session's metadata as given at creation (e.g. a Laravel tenant id); `{}` if none.
    pub metadata: Value,
}

impl Envelope {
    /// A new envelope with a fresh `evt_<ulid>` id.
    pub fn new(
        event: &str,
        workspace: &WorkspaceId,
        session: &SessionId,
        shard: u32,
        timestamp_ms: u64,
        payload: Value,
        metadata: Value,
    ) -> Self {
        Self {
            id: new_event_id(),
            event: event.to_owned(),
            workspace: workspace.clone(),
            session: session.clone(),
            shard,
            timestamp: timestamp_ms,
            payload,
            metadata: if metadata.is_null() {
                Value::Object(Default::default())
            } else {
                metadata
            },
        }
    }

    /// The exact JSON text that is stored, signed and sent.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings, integers and `Value`s cannot fail (no map with
        // non-string keys, no custom Serialize), so the fallback is unreachable in practice.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// A fresh event id, `evt_<ulid>`.
pub fn new_event_id() -> String {
    format!("evt_{}", ulid::Ulid::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_documented_shape_and_order() {
        let ws = WorkspaceId::new("acme").unwrap();
        let s = SessionId::new("main").unwrap();
        let e = Envelope::new(
            events::MESSAGE_SENT,
            &ws,
            &s,
            3,
            1_700_000_000_123,
            serde_json::json!({"id": "msg_1"}),
            Value::Null,
        );
        assert!(e.id.starts_with("evt_") && e.id.len() == 30, "{}", e.id);
        let json = e.to_json();
        let keys: Vec<&str> = [
            "\"id\"",
            "\"event\"",
            "\"workspace\"",
            "\"session\"",
            "\"shard\"",
            "\"timestamp\"",
            "\"payload\"",
            "\"metadata\"",
        ]
        .to_vec();
        let positions: Vec<usize> = keys.iter().map(|k| json.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
        assert!(json.contains("\"metadata\":{}"), "{json}");
        assert!(json.contains("\"timestamp\":1700000000123"), "{json}");
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
