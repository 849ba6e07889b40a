//! Handlers for the webhook endpoints (issue 5), ready for the worker's warp routes:
//!
//! * `GET /v1/workspaces/{ws}/webhooks/dead[?session=&after=&limit=]` → [`list_dead_letters`]
//! * `POST /v1/workspaces/{ws}/webhooks/dead/{id}/replay` → [`replay_dead_letter`] (202)
//! * `GET /v1/workspaces/{ws}/sessions/{s}/events` (+ `Last-Event-ID`) → [`event_stream`]
//!
//! Authentication and routing stay in the worker; these functions validate their own inputs and
//! return JSON values or [`ApiError`]s with the documented codes.

use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::sse::{SseStream, sse_events};
use crate::api::ApiError;
use crate::ids::{SessionId, WorkspaceId};
use crate::store::{Store, StoreError};

/// Default and maximum page sizes of the dead-letter list.
pub const DEAD_LETTER_PAGE: (u32, u32) = (100, 500);

/// Query string of the dead-letter list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Only this session's dead letters.
    pub session: Option<String>,
    /// Page after this dead letter's id (the previous page's `next_after`).
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// Whether `id` looks like an event id (`evt_` + 26 Crockford base32 characters).
pub fn is_event_id(id: &str) -> bool {
    id.strip_prefix("evt_")
        .is_some_and(|u| u.len() == 26 && ulid::Ulid::from_string(u).is_ok())
}

/// `{"dead_letters": [...], "next_after": "<id>" | null}`; `next_after` is set when the page is
/// full.
pub async fn list_dead_letters(
    store: &Store,
    ws: &WorkspaceId,
    q: &DeadLetterQuery,
) -> Result<Value, ApiError> {
    let session = q
        .session
        .as_deref()
        .map(SessionId::new)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_session", e.to_string()))?;
    if let Some(after) = &q.after
        && !is_event_id(after)
    {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "after must be an event id (evt_…)",
        ));
    }
    let limit = q.limit.unwrap_or(DEAD_LETTER_PAGE.0);
    if limit == 0 || limit > DEAD_LETTER_PAGE.1 {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {}", DEAD_LETTER_PAGE.1),
        ));
    }
    let rows = store
        .dead_letters(ws, session.as_ref(), q.after.as_deref(), limit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::bad_request("invalid_cursor", "after is not a known event id")
            }
            other => other.to_api_error(),
        })?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.event.id.clone()))
        .flatten();
    Ok(json!({
        "dead_letters": rows.iter().map(|r| r.to_api_json()).collect::<Vec<_>>(),
        "next_after": next,
    }))
}

/// Re-arms a dead letter (every target it is dead at): `{"id", "state": "pending"}` (answer 202); 404 if `ws` has no dead
/// letter `id`.
pub async fn replay_dead_letter(
    store: &Store,
    ws: &WorkspaceId,
    id: &str,
    now_ms: u64,
) -> Result<Value, ApiError> {
    if !is_event_id(id) {
        return Err(ApiError::not_found("no such dead letter"));
    }
    store
        .replay_dead(ws, id, None, now_ms)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("no such dead letter"),
            other => other.to_api_error(),
        })?;
    Ok(json!({"id": id, "state": "pending"}))
}

/// The SSE reply body for a session's events; wrap it as
/// `warp::sse::reply(warp::sse::keep_alive().stream(stream))`. An unparseable `Last-Event-ID`
/// is a 400.
pub async fn event_stream(
    store: &Store,
    ws: &WorkspaceId,
    s: &SessionId,
    last_event_id: Option<String>,
    shutdown: CancellationToken,
) -> Result<SseStream, ApiError> {
    if let Some(id) = &last_event_id
        && !is_event_id(id)
    {
        return Err(ApiError::bad_request(
            "invalid_last_event_id",
            "Last-Event-ID must be an event id (evt_…)",
        ));
    }
    sse_events(
        store.clone(),
        ws.clone(),
        s.clone(),
        last_event_id,
        shutdown,
    )
    .await
    .map_err(|e| e.to_api_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids() {
        assert!(is_event_id(&super::super::new_event_id()));
        assert!(!is_event_id("evt_"));
        assert!(!is_event_id("evt_../../etc/passwd0000000000000"));
        assert!(!is_event_id("msg_01JD8X3V7Q2W9K4M6N8P0R2T4V"));
    }
}
