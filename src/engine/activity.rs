//! What happens around messages besides new ones (issue #12, item 1): reactions, edits, revokes
//! ("delete for everyone"), incoming calls and contacts' presence. The adapter's `events.js`
//! reports them (`reaction`, `edited`, `revoked`, `call`, `presence`); this module parses those
//! untrusted reports into the engine's events (pure), and adds the two page commands the worker
//! needs: rejecting a call and subscribing to a chat's presence.
//!
//! Every id is length-capped and every field has one type; a report that breaks that is dropped
//! with a log line (see [`super::events::parse_report`]), never passed on half-checked.

use serde::{Deserialize, Serialize};

use super::driver::{BrowserSession, EngineError, js_string};
use super::supervisor::{SessionCommandError, SessionHandle};

/// Longest id (message key, Wid, call id) kept from a report.
pub const MAX_ID_LEN: usize = 256;
/// Longest reaction text kept (an emoji with modifiers is a few code points).
pub const MAX_EMOJI_BYTES: usize = 64;
/// Longest edited text kept (WhatsApp's own limit is 64 KiB).
pub const MAX_TEXT_BYTES: usize = 65_536;

/// A reaction was set, changed or removed (`emoji` empty) on a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reaction {
    /// The reaction's own message key.
    pub wa_id: String,
    /// The key of the message reacted to.
    pub target_wa_id: String,
    /// The reaction text; `""` when the reaction was removed.
    pub emoji: String,
    /// Who reacted (in a group: the group; see `author`).
    pub from: Option<String>,
    /// The reactor's phone-number Wid when `from`/`author` is a LID and the mapping is known.
    pub from_pn: Option<String>,
    /// The reactor within a group.
    pub author: Option<String>,
    /// The chat of the message reacted to.
    pub chat: Option<String>,
    /// Whether this account reacted (from the phone or this device).
    pub from_me: bool,
    /// Seconds since the epoch.
    pub timestamp: Option<i64>,
}

/// A message was edited by its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edit {
    /// The key of the edited (original) message.
    pub wa_id: String,
    /// Its chat.
    pub chat: Option<String>,
    /// Its sender.
    pub from: Option<String>,
    /// The new text (or caption).
    pub text: String,
    /// The text before, when this page had seen it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_text: Option<String>,
    /// Seconds since the epoch (of the edit).
    pub timestamp: Option<i64>,
}

/// A message was deleted for everyone (by its sender or a group admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revoke {
    /// The key of the revoked message.
    pub wa_id: String,
    /// Its chat.
    pub chat: Option<String>,
    /// Its sender.
    pub from: Option<String>,
    /// Its author within a group.
    pub author: Option<String>,
    /// Whether the revoked message was this account's.
    pub from_me: bool,
    /// Seconds since the epoch (of the revoke).
    pub timestamp: Option<i64>,
}

/// An incoming call offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    /// WhatsApp's call id (what a reject names).
    pub call_id: String,
    /// The caller (PN or LID Wid).
    pub from: Option<String>,
    /// The caller's phone-number Wid when `from` is a LID and the mapping is known.
    pub from_pn: Option<String>,
    /// A video call.
    pub video: bool,
    /// A group call.
    pub group: bool,
    /// Seconds since the epoch (the offer).
    pub timestamp: Option<i64>,
}

/// The presence states of the `presence` event.
pub const PRESENCE_STATES: [&str; 5] =
    ["available", "unavailable", "typing", "recording", "paused"];

/// A contact's presence in a subscribed chat changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// The chat the presence is for (a person, or a group).
    pub chat: String,
    /// Whose presence (the person; in a group the participant).
    pub from: Option<String>,
    /// One of [`PRESENCE_STATES`].
    pub state: String,
    /// Last seen, seconds since the epoch, when the contact shares it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
}

// === reports (the adapter's JSON) ===

/// `{"t":"reaction", …}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct ReactionReport {
    id: String,
    target: String,
    #[serde(default)]
    emoji: Option<String>,
    from: Option<String>,
    from_pn: Option<String>,
    author: Option<String>,
    chat: Option<String>,
    #[serde(default)]
    from_me: bool,
    /// WhatsApp stamps reactions in milliseconds.
    timestamp_ms: Option<f64>,
}

/// `{"t":"edited", …}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct EditReport {
    id: String,
    chat: Option<String>,
    from: Option<String>,
    text: Option<String>,
    previous: Option<String>,
    timestamp: Option<f64>,
}

/// `{"t":"revoked", …}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct RevokeReport {
    id: String,
    chat: Option<String>,
    from: Option<String>,
    author: Option<String>,
    #[serde(default)]
    from_me: bool,
    timestamp: Option<f64>,
}

/// `{"t":"call", …}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct CallReport {
    id: String,
    from: Option<String>,
    from_pn: Option<String>,
    #[serde(default)]
    video: bool,
    #[serde(default)]
    group: bool,
    timestamp: Option<f64>,
}

/// `{"t":"presence", …}`: `state` is WhatsApp's chat state type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct PresenceReport {
    chat: String,
    from: Option<String>,
    state: String,
    last_seen: Option<f64>,
}

/// An id that is non-empty and at most [`MAX_ID_LEN`] bytes without control characters.
fn id(field: &str, v: String) -> Result<String, String> {
    if v.is_empty() || v.len() > MAX_ID_LEN || v.chars().any(char::is_control) {
        return Err(format!("{field} is not an id"));
    }
    Ok(v)
}

/// An optional id: a malformed one is dropped (it is informational).
fn opt_id(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control))
}

/// Whole seconds; the cast saturates on nonsense, non-finite values are dropped.
fn secs(v: Option<f64>) -> Option<i64> {
    v.filter(|t| t.is_finite() && *t >= 0.0).map(|t| t as i64)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn capped(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

pub(super) fn reaction(r: ReactionReport) -> Result<Reaction, String> {
    let emoji = r.emoji.unwrap_or_default();
    if emoji.len() > MAX_EMOJI_BYTES {
        return Err("reaction text too long".into());
    }
    Ok(Reaction {
        wa_id: id("id", r.id)?,
        target_wa_id: id("target", r.target)?,
        emoji,
        from: opt_id(r.from),
        from_pn: opt_id(r.from_pn),
        author: opt_id(r.author),
        chat: opt_id(r.chat),
        from_me: r.from_me,
        timestamp: secs(r.timestamp_ms.map(|ms| ms / 1000.0)),
    })
}

pub(super) fn edit(r: EditReport) -> Result<Edit, String> {
    Ok(Edit {
        wa_id: id("id", r.id)?,
        chat: opt_id(r.chat),
        from: opt_id(r.from),
        text: capped(r.text.unwrap_or_default(), MAX_TEXT_BYTES),
        previous_text: r.previous.map(|p| capped(p, MAX_TEXT_BYTES)),
        timestamp: secs(r.timestamp),
    })
}

pub(super) fn revoke(r: RevokeReport) -> Result<Revoke, String> {
    Ok(Revoke {
        wa_id: id("id", r.id)?,
        chat: opt_id(r.chat),
        from: opt_id(r.from),
        author: opt_id(r.author),
        from_me: r.from_me,
        timestamp: secs(r.timestamp),
    })
}

pub(super) fn call(r: CallReport) -> Result<Call, String> {
    Ok(Call {
        call_id: id("id", r.id)?,
        from: opt_id(r.from),
        from_pn: opt_id(r.from_pn),
        video: r.video,
        group: r.group,
        timestamp: secs(r.timestamp),
    })
}

/// Our presence state for WhatsApp's chat state type (`WAWebChangePresenceHandlerAction`:
/// `available`, `unavailable`, `typing`, `recording_audio`, `idle`).
pub fn presence_state(wa: &str) -> Option<&'static str> {
    Some(match wa {
        "available" => "available",
        "unavailable" => "unavailable",
        "typing" | "composing" => "typing",
        "recording_audio" | "recording" => "recording",
        "idle" | "paused" => "paused",
        _ => return None,
    })
}

pub(super) fn presence(r: PresenceReport) -> Result<Presence, String> {
    let state = presence_state(&r.state).ok_or_else(|| {
        format!(
            "presence state {:?}",
            r.state.chars().take(32).collect::<String>()
        )
    })?;
    Ok(Presence {
        chat: id("chat", r.chat)?,
        from: opt_id(r.from),
        state: state.to_owned(),
        last_seen: secs(r.last_seen),
    })
}

// === commands ===

/// Whether `chat` looks like a Wid a page command may name: `<user>@<server>` without quotes or
/// control characters, at most [`MAX_ID_LEN`] bytes.
pub fn valid_chat(chat: &str) -> bool {
    let Some((user, server)) = chat.split_once('@') else {
        return false;
    };
    chat.len() <= MAX_ID_LEN
        && !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
        && matches!(server, "c.us" | "lid" | "g.us" | "s.whatsapp.net")
}

impl BrowserSession {
    /// Rejects an incoming call through WhatsApp Web's own call stack.
    pub async fn reject_call(&self, call_id: &str) -> Result<(), EngineError> {
        if call_id.is_empty() || call_id.len() > MAX_ID_LEN {
            return Err(EngineError::Invalid("bad call id".into()));
        }
        let expr = format!("window.__wafleetAdapter.rejectCall({})", js_string(call_id));
        self.call(expr, "call reject").await.map(drop)
    }

    /// Subscribes to a chat's presence (WhatsApp sends presence only for subscribed chats).
    /// Returns the id WhatsApp subscribed: a person's LID (a phone-number chat is mapped), or
    /// the group.
    pub async fn subscribe_presence(&self, chat: &str) -> Result<String, EngineError> {
        if !valid_chat(chat) {
            return Err(EngineError::Invalid(format!("bad chat {chat:?}")));
        }
        let expr = format!(
            "window.__wafleetAdapter.subscribePresence({})",
            js_string(chat)
        );
        let answer = self.call(expr, "presence subscribe").await?;
        match answer.get("chat").and_then(|c| c.as_str()) {
            Some(c) if valid_chat(c) => Ok(c.to_owned()),
            _ => Err(EngineError::Adapter(format!(
                "unexpected presence answer: {answer}"
            ))),
        }
    }
}

impl SessionHandle {
    /// [`BrowserSession::reject_call`] (the session must be WORKING).
    pub async fn reject_call(&self, call_id: &str) -> Result<(), SessionCommandError> {
        Ok(self.working_browser()?.reject_call(call_id).await?)
    }

    /// [`BrowserSession::subscribe_presence`] (the session must be WORKING).
    pub async fn subscribe_presence(&self, chat: &str) -> Result<String, SessionCommandError> {
        Ok(self.working_browser()?.subscribe_presence(chat).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::{EngineEvent, parse_report};

    #[test]
    fn reactions_edits_and_revokes_are_parsed_and_checked() {
        let r = parse_report(
            r#"{"t":"reaction","id":"false_491@c.us_R1","target":"true_491@c.us_M1","emoji":"👍","from":"491@c.us","chat":"491@c.us","from_me":false,"timestamp_ms":1700000000123}"#,
        )
        .unwrap();
        let [EngineEvent::Reaction(r)] = r.as_slice() else {
            panic!("{r:?}")
        };
        assert_eq!(r.target_wa_id, "true_491@c.us_M1");
        assert_eq!(r.emoji, "👍");
        assert_eq!(r.timestamp, Some(1_700_000_000));
        // Removed: no emoji at all is "".
        let gone = parse_report(r#"{"t":"reaction","id":"a","target":"b"}"#).unwrap();
        let [EngineEvent::Reaction(g)] = gone.as_slice() else {
            panic!("{gone:?}")
        };
        assert_eq!(g.emoji, "");
        assert!(parse_report(r#"{"t":"reaction","id":"","target":"b"}"#).is_err());
        let long = format!(
            r#"{{"t":"reaction","id":"a","target":"b","emoji":"{}"}}"#,
            "x".repeat(65)
        );
        assert!(parse_report(&long).is_err());

        let e = parse_report(
            r#"{"t":"edited","id":"false_491@c.us_M1","text":"new","previous":"old","timestamp":1700000001}"#,
        )
        .unwrap();
        let [EngineEvent::Edited(e)] = e.as_slice() else {
            panic!("{e:?}")
        };
        assert_eq!(
            (e.text.as_str(), e.previous_text.as_deref()),
            ("new", Some("old"))
        );

        let v = parse_report(
            r#"{"t":"revoked","id":"false_491@c.us_M1","chat":"491@c.us","from_me":false,"timestamp":-5}"#,
        )
        .unwrap();
        let [EngineEvent::Revoked(v)] = v.as_slice() else {
            panic!("{v:?}")
        };
        assert_eq!(v.timestamp, None, "a negative time is dropped");
        let ctrl = "a\u{0007}b";
        assert!(parse_report(&serde_json::json!({"t":"revoked","id": ctrl}).to_string()).is_err());
    }

    #[test]
    fn calls_and_presence_are_parsed_and_checked() {
        let c = parse_report(
            r#"{"t":"call","id":"CALL1","from":"491@c.us","video":true,"timestamp":1700000000}"#,
        )
        .unwrap();
        let [EngineEvent::Call(c)] = c.as_slice() else {
            panic!("{c:?}")
        };
        assert!(c.video && !c.group);
        for (wa, ours) in [
            ("available", "available"),
            ("unavailable", "unavailable"),
            ("typing", "typing"),
            ("recording_audio", "recording"),
            ("idle", "paused"),
        ] {
            let p = parse_report(&format!(
                r#"{{"t":"presence","chat":"1@lid","state":"{wa}"}}"#
            ))
            .unwrap();
            let [EngineEvent::Presence(p)] = p.as_slice() else {
                panic!("{p:?}")
            };
            assert_eq!(p.state, ours);
        }
        assert!(parse_report(r#"{"t":"presence","chat":"1@lid","state":"dancing"}"#).is_err());
        assert!(super::valid_chat("4915550002@c.us"));
        assert!(super::valid_chat("123-456@g.us"));
        assert!(!super::valid_chat("49');alert(1)//@c.us"));
        assert!(!super::valid_chat("4915550002@example.com"));
    }
}
