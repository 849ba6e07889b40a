//! `POST /v1/workspaces/{ws}/sessions/{s}/presence/subscribe` with `{"chat": "<wid>"}` →
//! `200 {"chat", "subscribed": true}` (docs/api.md "Presence").
//!
//! The worker's gate for a per-session route first (ids, token, readiness, ownership), then the
//! body (at most [`MAX_BODY_BYTES`], a chat Wid), then the session must be WORKING (`409
//! not_ready`, as for every command to a session that is not logged in).

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use warp::{Filter, Reply};

use crate::api::ApiError;
use crate::engine::activity::valid_chat;
use crate::engine::{EngineError, SessionCommandError, SessionHandle, Status};
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::request::{Api, running_session};

/// Largest subscribe body.
pub const MAX_BODY_BYTES: u64 = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    chat: String,
}

/// The presence routes.
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    warp::path!("v1" / "workspaces" / String / "sessions" / String / "presence" / "subscribe")
        .and(warp::post())
        .and(with)
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(subscribe)
}

/// Parses the body: `{"chat": "<user>@c.us|lid|g.us"}`.
fn parse_body(body: &[u8]) -> Result<String, ApiError> {
    let b: SubscribeBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    if !valid_chat(&b.chat) {
        return Err(ApiError::bad_request(
            "invalid_chat",
            "chat is a WhatsApp id: <digits>@c.us, <digits>@lid or <id>@g.us",
        ));
    }
    Ok(b.chat)
}

fn not_working(status: Status) -> ApiError {
    crate::worker::request::not_working("presence", status)
}

fn working(api: &Api, ws: &WorkspaceId, s: &SessionId) -> Result<SessionHandle, ApiError> {
    crate::worker::request::working_session(api, ws, s, "presence")
}

async fn subscribe(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    body: bytes::Bytes,
) -> Result<warp::reply::Response, warp::Rejection> {
    let reject = warp::reject::custom;
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let chat = parse_body(&body).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    match handle.subscribe_presence(&chat).await {
        Ok(subscribed) => {
            Ok(warp::reply::json(&json!({"chat": subscribed, "subscribed": true})).into_response())
        }
        Err(SessionCommandError::WrongStatus(st)) => Err(reject(not_working(st))),
        Err(SessionCommandError::Gone | SessionCommandError::Engine(EngineError::Closed)) => {
            Err(reject(not_working(Status::Stopped)))
        }
        Err(SessionCommandError::Engine(EngineError::Invalid(m))) => {
            Err(reject(ApiError::bad_request("invalid_chat", m)))
        }
        Err(e) => {
            tracing::warn!(workspace = %ws, session = %s, error = %e, "presence subscribe failed");
            Err(reject(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "whatsapp_error",
                format!("the subscription failed in WhatsApp Web: {e}"),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked() {
        assert_eq!(
            parse_body(br#"{"chat":"4915550002@c.us"}"#).unwrap(),
            "4915550002@c.us"
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"chat":"x"}"#,
            br#"{"chat":"1@c.us","more":1}"#,
            b"nope",
        ] {
            assert!(parse_body(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
