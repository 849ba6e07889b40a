//! [`EngineSender`]: the send queue's [`MessageSender`] over the engine's session handles (the
//! typing pause, the body → engine command choice, and engine errors → send-queue errors).
//!
//! Apart from `mod.rs` because it is the outbound half: the queue calls it, nothing else does.

use base64::Engine as _;

use super::*;

/// [`MessageSender`] over the engine's session handles.
pub(super) struct EngineSender {
    pub(super) engine: Option<Arc<dyn EngineAccess>>,
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
