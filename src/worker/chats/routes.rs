//! The chat routes (docs/api.md "Chats"), all under `/v1/workspaces/{ws}/sessions/{s}/`:
//!
//! * `GET chats?limit=&cursor=` → `{"chats": [...], "next_cursor"}`, in WhatsApp's order;
//! * `GET chats/{chat}/messages?before=&limit=` → `{"messages": [...], "next_before"}`, newest
//!   first, each in the `message` event's payload shape;
//! * `POST chats/{chat}/read` and `POST chats/{chat}/seen` (read receipts, unread count to 0),
//!   `POST chats/{chat}/archive`, `POST chats/{chat}/unarchive`,
//!   `POST chats/{chat}/presence` `{"state": "typing"|"recording"|"paused"}`.
//!
//! Each starts with the worker's gate for a per-session route (ids, token, readiness,
//! ownership), validates its parameters, then needs the session WORKING (`409 not_ready`, as the
//! contact routes do).

use std::collections::HashMap;

use http::StatusCode;
use serde_json::{Value, json};
use warp::{Filter, Reply};

use super::{decode_chat_cursor, encode_chat_cursor, parse_limit};
use crate::api::ApiError;
use crate::engine::chats::{
    CHAT_NOT_FOUND_PREFIX, CONTACT_NOT_FOUND_PREFIX, ChatState, ChatSummary,
    MESSAGE_NOT_FOUND_PREFIX,
};
use crate::engine::{EngineError, SessionCommandError};
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::contacts::routes::{lookup_error, working};
use crate::worker::messaging::payload::message_payload;
use crate::worker::request::{Api, parse_chat_id, reject, running_session};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// Largest body of a chat action (`{"state": "recording"}` needs far less).
pub const MAX_ACTION_BODY_BYTES: u64 = 1024;
/// Longest `before` anchor (a serialized message key), in bytes.
const MAX_KEY_BYTES: usize = 256;

/// The documented error for a failed chat or contact command: the page's "not found" answers
/// are 404s, the rest as for contact lookups ([`lookup_error`]).
pub(crate) fn command_error(ws: &WorkspaceId, s: &SessionId, e: SessionCommandError) -> ApiError {
    if let SessionCommandError::Engine(EngineError::Adapter(m)) = &e {
        for (prefix, code) in [
            (CHAT_NOT_FOUND_PREFIX, "chat_not_found"),
            (MESSAGE_NOT_FOUND_PREFIX, "message_not_found"),
            (CONTACT_NOT_FOUND_PREFIX, "contact_not_found"),
        ] {
            if let Some(what) = m.strip_prefix(prefix) {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    code,
                    format!("WhatsApp Web has no {}", what.trim()),
                );
            }
        }
    }
    lookup_error(ws, s, e)
}

/// The chat routes.
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    let auth = warp::header::optional::<String>("authorization");
    let query = warp::query::<HashMap<String, String>>();
    let list = warp::path!("v1" / "workspaces" / String / "sessions" / String / "chats")
        .and(warp::get())
        .and(query)
        .and(with.clone())
        .and(auth)
        .and_then(list_chats);
    let history = warp::path!(
        "v1" / "workspaces" / String / "sessions" / String / "chats" / String / "messages"
    )
    .and(warp::get())
    .and(query)
    .and(with.clone())
    .and(auth)
    .and_then(history);
    let action =
        warp::path!("v1" / "workspaces" / String / "sessions" / String / "chats" / String / String)
            .and(warp::post())
            .and(warp::body::content_length_limit(MAX_ACTION_BODY_BYTES))
            .and(warp::body::bytes())
            .and(with)
            .and(auth)
            .and_then(action);
    list.or(history).unify().or(action).unify()
}

fn chat_json(c: &ChatSummary) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "unread_count": c.unread_count,
        "last_message": c.last_message.as_deref().map(message_payload),
        "archived": c.archived,
        "pinned": c.pinned,
        "muted": c.muted,
        "is_group": c.is_group,
        "timestamp": c.timestamp,
    })
}

async fn list_chats(
    ws: String,
    s: String,
    query: HashMap<String, String>,
    api: Api,
    auth: Option<String>,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let limit = parse_limit(&query).map_err(reject)?;
    let after = match query.get("cursor") {
        Some(c) => Some(decode_chat_cursor(c).map_err(reject)?),
        None => None,
    };
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let page = handle
        .list_chats(after.as_ref(), limit)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?;
    let next = page
        .more
        .then(|| page.chats.last().map(|c| encode_chat_cursor(&c.cursor())))
        .flatten();
    let chats: Vec<Value> = page.chats.iter().map(chat_json).collect();
    Ok(warp::reply::json(&json!({ "chats": chats, "next_cursor": next })).into_response())
}

/// A `before` anchor: a serialized message key (`true|false_<chat>_<id>[_<participant>]`) of
/// this chat, as `wa_id` carries it.
fn parse_before(chat: &str, raw: &str) -> Result<String, ApiError> {
    let raw = raw.replace("%40", "@");
    let ok = raw.len() <= MAX_KEY_BYTES
        && ["true_", "false_"].iter().any(|p| {
            raw.strip_prefix(p)
                .and_then(|rest| rest.strip_prefix(chat))
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|rest| {
                    let id = rest.split('_').next().unwrap_or_default();
                    (1..=64).contains(&id.len())
                        && id.bytes().all(|b| b.is_ascii_alphanumeric())
                        && rest.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'.' | b'-')
                        })
                })
        });
    if ok {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            "invalid_before",
            "before must be the wa_id of a message of this chat",
        ))
    }
}

async fn history(
    ws: String,
    s: String,
    chat: String,
    query: HashMap<String, String>,
    api: Api,
    auth: Option<String>,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let chat = parse_chat_id(&chat).map_err(reject)?;
    let limit = parse_limit(&query).map_err(reject)?;
    let before = match query.get("before") {
        Some(b) => Some(parse_before(&chat, b).map_err(reject)?),
        None => None,
    };
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let page = handle
        .chat_messages(&chat, before.as_deref(), limit)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?;
    let next = page
        .more
        .then(|| page.messages.last().map(|m| m.id.clone()))
        .flatten();
    let messages: Vec<Value> = page.messages.iter().map(message_payload).collect();
    Ok(warp::reply::json(&json!({ "messages": messages, "next_before": next })).into_response())
}

fn presence_state(body: &[u8]) -> Result<ChatState, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_body",
            "body must be {\"state\": \"typing\" | \"recording\" | \"paused\"}",
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    v.get("state")
        .and_then(Value::as_str)
        .and_then(ChatState::parse)
        .ok_or_else(invalid)
}

async fn action(
    ws: String,
    s: String,
    chat: String,
    verb: String,
    body: bytes::Bytes,
    api: Api,
    auth: Option<String>,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    if !matches!(
        verb.as_str(),
        "read" | "seen" | "archive" | "unarchive" | "presence"
    ) {
        return Err(warp::reject::not_found());
    }
    let chat = parse_chat_id(&chat).map_err(reject)?;
    let state = if verb == "presence" {
        Some(presence_state(&body).map_err(reject)?)
    } else {
        None
    };
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let fail = |e| reject(command_error(&ws, &s, e));
    let answer = match (verb.as_str(), state) {
        ("read" | "seen", _) => {
            let unread = handle.mark_chat_read(&chat).await.map_err(fail)?;
            json!({ "chat": chat, "unread_count": unread })
        }
        ("archive" | "unarchive", _) => {
            let archived = handle
                .set_chat_archive(&chat, verb == "archive")
                .await
                .map_err(fail)?;
            json!({ "chat": chat, "archived": archived })
        }
        (_, Some(state)) => {
            handle.send_chat_state(&chat, state).await.map_err(fail)?;
            json!({ "chat": chat, "state": state.as_str() })
        }
        _ => return Err(warp::reject::not_found()),
    };
    Ok(warp::reply::json(&answer).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_anchors_are_keys_of_the_chat() {
        let chat = "4915550002@c.us";
        assert!(parse_before(chat, "false_4915550002@c.us_3EB0AB12").is_ok());
        assert!(parse_before(chat, "true_4915550002%40c.us_3EB0AB12").is_ok());
        let group = "120363025246125486@g.us";
        assert!(parse_before(group, "false_120363025246125486@g.us_ABC_4915550002@c.us").is_ok());
        for bad in [
            "",
            "3EB0AB12",
            "false_4915550003@c.us_3EB0AB12",
            "false_4915550002@c.us_",
            "false_4915550002@c.us_3EB0/../x",
            "maybe_4915550002@c.us_3EB0AB12",
        ] {
            assert!(parse_before(chat, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presence_bodies_are_checked() {
        assert_eq!(
            presence_state(br#"{"state": "recording"}"#).unwrap(),
            ChatState::Recording
        );
        for bad in [&b""[..], b"{}", br#"{"state": "composing"}"#, b"[1]"] {
            assert!(presence_state(bad).is_err());
        }
    }
}
