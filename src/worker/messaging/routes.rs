//! The messaging routes of the worker (issue 5) and [`ROUTES`], the list of every route the
//! worker and the router serve (the OpenAPI contract test checks both directions against it).
//!
//! * `POST /v1/workspaces/{ws}/sessions/{s}/messages` (+ `Idempotency-Key`) → 202
//! * `GET  /v1/workspaces/{ws}/sessions/{s}/messages/{id}`
//! * `GET  /v1/workspaces/{ws}/sessions/{s}/events` (SSE, `Last-Event-ID`)
//!
//! (A workspace's dead letters are [`crate::worker::webhooks`].)
//!
//! Every route starts with the worker's gate (id validation, token, readiness, ownership) and
//! answers `503 messaging_unavailable` while the shard store is not open.

use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};
use warp::{Filter, Reply};

use super::Messaging;
use crate::api::ApiError;
use crate::ids::{SessionId, WorkspaceId};
use crate::sendq::SendRequest;
use crate::store::{
    IDEMPOTENCY_TTL, IdempotencyKey, MessageKind, request_hash, validate_idempotency_key,
};
use crate::worker::request::{Api, gate, host_error, reject, unavailable};

mod table;
pub use table::ROUTES;

/// Largest `POST …/messages` body: 16 MiB of media as base64 plus the JSON around it.
pub const MAX_MESSAGE_BODY_BYTES: u64 = 23 * 1024 * 1024;

/// Largest text message, in bytes.
pub const MAX_TEXT_BYTES: usize = 65_536;

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The messaging routes (compose them into the worker filter before its `recover`).
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    let auth = warp::header::optional::<String>("authorization");
    let send = warp::path!("v1" / "workspaces" / String / "sessions" / String / "messages")
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::body::content_length_limit(MAX_MESSAGE_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(send_message);
    let get = warp::path!("v1" / "workspaces" / String / "sessions" / String / "messages" / String)
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(get_message);
    let events = warp::path!("v1" / "workspaces" / String / "sessions" / String / "events")
        .and(warp::get())
        .and(with)
        .and(auth)
        .and(warp::header::optional::<String>("last-event-id"))
        .and_then(event_stream);
    send.or(get).unify().or(events).unify()
}

/// The messaging service and its open shard store, or `503 messaging_unavailable`.
pub(crate) fn messaging(api: &Api) -> Result<(Arc<Messaging>, Arc<super::Active>), ApiError> {
    let m = api
        .shared
        .messaging
        .get()
        .cloned()
        .ok_or_else(|| unavailable("messaging_unavailable", "messaging is not configured"))?;
    let a = m.active().ok_or_else(|| {
        unavailable(
            "messaging_unavailable",
            "the shard store is not open (worker starting, draining or fenced)",
        )
    })?;
    Ok((m, a))
}

/// The session must exist on this worker.
async fn require_session(api: &Api, ws: &WorkspaceId, s: &SessionId) -> Result<(), ApiError> {
    match api.shared.host.get_session(ws, s).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {s} in workspace {ws}"),
        )),
        Err(e) => Err(host_error(ws, e)),
    }
}

/// Validates a recipient: a phone number of 5 to 32 digits (optionally `+`, spaces or dashes),
/// or a WhatsApp id: `<digits>@c.us`, a LID `<digits>@lid`, or a group `<digits>[-<digits>]@g.us`;
/// answers the id the engine takes.
pub fn normalize_recipient(to: &str) -> Option<String> {
    let to = to.trim();
    if let Some((user, server)) = to.split_once('@') {
        let digits = |dash: bool| {
            (5..=64).contains(&user.len())
                && user
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (dash && b == b'-'))
        };
        let ok = match server {
            "c.us" | "lid" => digits(false),
            "g.us" => digits(true),
            _ => false,
        };
        return ok.then(|| to.to_owned());
    }
    let digits: String = to
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    ((5..=32).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

async fn send_message(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    idem: Option<String>,
    raw: bytes::Bytes,
) -> Resp {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(reject)?;
    let s = SessionId::new(s).map_err(|e| reject(e.into()))?;
    let (m, active) = messaging(&api).map_err(reject)?;
    let body: serde_json::Map<String, Value> = serde_json::from_slice(&raw)
        .map_err(|e| reject(ApiError::bad_request("invalid_body", e.to_string())))?;
    let to = body
        .get("to")
        .and_then(Value::as_str)
        .ok_or_else(|| reject(ApiError::bad_request("invalid_body", "missing field `to`")))?;
    let to = normalize_recipient(to).ok_or_else(|| {
        reject(ApiError::bad_request(
            "invalid_recipient",
            "to must be a phone number (5 to 32 digits) or a WhatsApp id",
        ))
    })?;
    let key = match idem {
        None => None,
        Some(k) if validate_idempotency_key(&k) => Some(IdempotencyKey {
            workspace: ws.clone(),
            request_hash: request_hash(&[
                b"POST",
                format!("/v1/workspaces/{ws}/sessions/{s}/messages").as_bytes(),
                &raw,
            ]),
            key: k,
            expires_at: now_ms() + IDEMPOTENCY_TTL.as_millis() as u64,
        }),
        Some(_) => {
            return Err(reject(ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )));
        }
    };
    require_session(&api, &ws, &s).await.map_err(reject)?;
    // A key already answered: let the queue replay (or refuse) it without fetching media again.
    let replaying = match &key {
        Some(k) => active
            .store
            .idempotency_lookup(k, now_ms())
            .await
            .map(|r| r.is_some())
            .unwrap_or(false),
        None => false,
    };
    let parsed = super::send_types::parse(&body, &to).map_err(reject)?;
    let (kind, stored) = match parsed.media {
        None => (MessageKind::Text, Value::Object(parsed.stored)),
        Some(media) => {
            let mut stored = parsed.stored;
            let media = media_body(&m, parsed.kind, media, replaying)
                .await
                .map_err(reject)?;
            if parsed.kind == "media" {
                // A body without type: the media type comes from the mimetype.
                let t = media["mimetype"].as_str().unwrap_or_default();
                stored.insert("type".into(), json!(super::send_types::media_type_of(t)));
            }
            stored.insert("media".into(), media);
            (MessageKind::Media, Value::Object(stored))
        }
    };
    let req = SendRequest {
        workspace: ws,
        session: s,
        to,
        kind,
        body: stored,
    };
    // Held until the message is in the store, so a handoff either carries it or refuses it.
    let _open = m.admit(&req.workspace).await.map_err(reject)?;
    let sub = active
        .sendq
        .submit(req, key)
        .await
        .map_err(|e| reject(e.to_api_error()))?;
    Ok(stored_reply(sub.response, sub.replayed))
}

/// The stored media: the bytes inline as base64 (fetched from `url` when given), a voice note
/// converted to OGG/Opus mono unless it is already, a sticker checked to be WebP.
async fn media_body(
    m: &Messaging,
    kind: &str,
    media: super::send_types::MediaInput,
    replaying: bool,
) -> Result<Value, ApiError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (data, ctype): (bytes::Bytes, Option<String>) = match (media.url, media.data) {
        (Some(_), None) if replaying => (Vec::new().into(), None),
        (Some(url), None) => m.media.fetch(&url).await?,
        (None, Some(data)) => {
            let bytes = b64.decode(data.trim()).map_err(|e| {
                ApiError::bad_request("invalid_media", format!("media.data is not base64: {e}"))
            })?;
            if bytes.len() > m.media.max_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "media_too_large",
                    format!("media is larger than {} bytes", m.media.max_bytes),
                ));
            }
            (bytes.into(), None)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_media",
                "give exactly one of media.url and media.data",
            ));
        }
    };
    if data.is_empty() && !replaying {
        return Err(ApiError::bad_request("invalid_media", "media is empty"));
    }
    let given = media
        .mimetype
        .or(ctype)
        .filter(|t| t.contains('/') && t.len() <= 255);
    let (data, mimetype) = match kind {
        "voice" if replaying => (data, super::voice::VOICE_MIMETYPE.to_owned()),
        "voice" if super::voice::is_ogg_opus_mono(&data) => {
            (data, super::voice::VOICE_MIMETYPE.to_owned())
        }
        "voice" => {
            let out = super::voice::to_ogg_opus(data.to_vec(), m.media.max_bytes)
                .await
                .map_err(|e| match e {
                    super::voice::VoiceError::Convert(_) | super::voice::VoiceError::Timeout => {
                        ApiError::bad_request("invalid_media", format!("voice: {e}"))
                    }
                    super::voice::VoiceError::TooLarge(_) => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "media_too_large",
                        e.to_string(),
                    ),
                    other => {
                        tracing::warn!(error = %other, "voice note conversion");
                        ApiError::internal(other.to_string())
                    }
                })?;
            (out.into(), super::voice::VOICE_MIMETYPE.to_owned())
        }
        "sticker" => {
            if !replaying && !super::send_types::is_webp(&data) {
                return Err(ApiError::bad_request(
                    "invalid_media",
                    "a sticker must be a WebP image (RIFF…WEBP)",
                ));
            }
            (data, "image/webp".to_owned())
        }
        _ => (
            data,
            given.ok_or_else(|| {
                ApiError::bad_request("invalid_media", "media.mimetype (type/subtype) is required")
            })?,
        ),
    };
    Ok(json!({
        "data": b64.encode(&data),
        "mimetype": mimetype,
        "filename": media.filename,
    }))
}

async fn get_message(ws: String, s: String, id: String, api: Api, auth: Option<String>) -> Resp {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(reject)?;
    let s = SessionId::new(s).map_err(|e| reject(e.into()))?;
    let (_, active) = messaging(&api).map_err(reject)?;
    let not_found = || {
        reject(ApiError::new(
            StatusCode::NOT_FOUND,
            "message_not_found",
            "no such message in this session",
        ))
    };
    if !id.starts_with("msg_") || id.len() > 64 {
        return Err(not_found());
    }
    let msg = active
        .store
        .message(&id)
        .await
        .map_err(|e| reject(e.to_api_error()))?
        .filter(|msg| msg.workspace == ws && msg.session == s)
        .ok_or_else(not_found)?;
    Ok(warp::reply::json(&json!({
        "id": msg.id,
        "workspace": msg.workspace,
        "session": msg.session,
        "to": msg.to,
        // The send type (issue 12); rows from before types were `text` or `media`.
        "type": msg.body.get("type").and_then(Value::as_str).unwrap_or(msg.kind.as_str()),
        "status": msg.status.as_str(),
        "reason": msg.reason,
        "wa_id": msg.wa_id,
        "attempts": msg.attempts,
        "created_at": msg.created_at,
        "updated_at": msg.updated_at,
        "sent_at": msg.sent_at,
    }))
    .into_response())
}

async fn event_stream(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    last_event_id: Option<String>,
) -> Resp {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(reject)?;
    let s = SessionId::new(s).map_err(|e| reject(e.into()))?;
    let (m, active) = messaging(&api).map_err(reject)?;
    let stream = crate::webhook::api::event_stream(
        &active.store,
        &ws,
        &s,
        last_event_id.filter(|v| !v.is_empty()),
        // Streams end when the term closes or the worker stops; clients reconnect.
        active.stop.clone(),
    )
    .await
    .map_err(reject)?;
    let _ = m;
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response())
}

/// A stored answer as the reply, marked `Idempotent-Replayed` when it is a repeat.
pub(crate) fn stored_reply(
    stored: crate::store::StoredResponse,
    replayed: bool,
) -> warp::reply::Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = warp::reply::with_status(stored.body, status).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

fn now_ms() -> u64 {
    super::now_ms()
}

#[cfg(test)]
mod tests;
