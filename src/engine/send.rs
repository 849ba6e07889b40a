//! Every send type in a session's page (issue 12): one adapter command, `sendSpec(to, spec)`,
//! whose `spec` is the stored send body (`{"type", …}`: text with reply, mentions and link
//! preview, media, voice, sticker, location, contact, poll, reaction, edit, delete, forward).
//! The worker validated the body before it was queued; this side checks what the page can be
//! harmed by (the recipient, the media size) and that the answer carries a message id.
//!
//! Text and media without options still go through [`BrowserSession::send_text`] and
//! [`BrowserSession::send_media`] for messages queued before types existed.

use serde_json::Value;

use super::driver::{BrowserSession, EngineError, MAX_MEDIA_BYTES, SentMessage, js_string};
use super::supervisor::{SessionCommandError, SessionHandle};

/// Largest spec handed to the page: the media (base64 of [`MAX_MEDIA_BYTES`]) and the fields.
const MAX_SPEC_BYTES: usize = MAX_MEDIA_BYTES / 3 * 4 + 64 * 1024;

impl BrowserSession {
    /// Sends one message of any type; `spec` is `{"type", …}` as the worker stored it.
    pub async fn send_spec(&self, to: &str, spec: &Value) -> Result<SentMessage, EngineError> {
        super::driver::check_recipient(to)?;
        let kind = spec
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| EngineError::Invalid("the message has no type".into()))?;
        let json = spec.to_string();
        if json.len() > MAX_SPEC_BYTES {
            return Err(EngineError::Invalid(format!(
                "a {kind} message must be at most {MAX_SPEC_BYTES} bytes"
            )));
        }
        let started = std::time::Instant::now();
        let expr = format!(
            "window.__wafleetAdapter.sendSpec({}, {json})",
            js_string(to)
        );
        let value = self.call(expr, "send").await?;
        super::metrics::send_latency(started.elapsed());
        action_id(kind, &value)
    }
}

/// The id of what was sent. A reaction, edit or revoke is a message of its own on the wire, but
/// WhatsApp Web keeps it out of its message collection and does not return its key; then the
/// id is `<type>:<target key>` (never a key, so no ack of another message can match it).
fn action_id(kind: &str, value: &Value) -> Result<SentMessage, EngineError> {
    if let Some(id) = value.get("id").and_then(Value::as_str) {
        return Ok(SentMessage { id: id.to_owned() });
    }
    match (kind, value.get("target").and_then(Value::as_str)) {
        ("reaction" | "edit" | "delete", Some(target)) => Ok(SentMessage {
            id: format!("{kind}:{target}"),
        }),
        _ => Err(EngineError::Adapter("no message id in answer".into())),
    }
}

impl SessionHandle {
    /// [`BrowserSession::send_spec`] (the session must be WORKING).
    pub async fn send_spec(
        &self,
        to: &str,
        spec: &Value,
    ) -> Result<SentMessage, SessionCommandError> {
        Ok(self.working_browser()?.send_spec(to, spec).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_without_their_own_key_answer_type_and_target() {
        let t = "true_4915550002@c.us_3EB0AA";
        assert_eq!(action_id("text", &json!({"id": t})).unwrap().id, t);
        assert_eq!(
            action_id("reaction", &json!({"id": null, "target": t}))
                .unwrap()
                .id,
            format!("reaction:{t}")
        );
        assert!(action_id("forward", &json!({"target": t})).is_err());
        assert!(action_id("text", &json!({})).is_err());
    }
}
