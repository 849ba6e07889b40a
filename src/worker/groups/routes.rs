//! The group routes (docs/api.md "Groups"), all under `/v1/workspaces/{ws}/sessions/{s}/`:
//!
//! * `GET groups` (paged), `POST groups` (create), `GET groups/{id}`;
//! * `POST groups/{id}/participants/{add|remove|promote|demote}` → WhatsApp's answer per
//!   participant;
//! * `GET groups/{id}/invite`, `POST groups/{id}/invite/reset`, `POST groups/{id}/leave`;
//! * `PUT groups/{id}/subject`, `PUT groups/{id}/description`.
//!
//! Each starts with the worker's gate for a per-session route (ids, token, readiness,
//! ownership), validates its parameters and body, then needs the session WORKING (`409
//! not_ready`, as the contact routes do).

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use warp::{Filter, Reply};

use super::{
    DEFAULT_LIMIT, MAX_LIMIT, page, parse_description, parse_participants, parse_subject,
    results_json,
};
use crate::api::{ApiError, MAX_BODY_BYTES};
use crate::engine::contacts::{SERVER_ERROR_PREFIX, UNSUPPORTED_PREFIX};
use crate::engine::groups::ParticipantAction;
use crate::engine::{EngineError, SessionCommandError, SessionHandle, Status};
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::request::{Api, parse_group_id, reject, running_session};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The query of `GET …/groups`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to [`MAX_LIMIT`].
    pub limit: Option<String>,
}

/// The group routes.
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    let auth = warp::header::optional::<String>("authorization");
    let body = warp::body::content_length_limit(MAX_BODY_BYTES).and(warp::body::bytes());
    let base = || warp::path!("v1" / "workspaces" / String / "sessions" / String / "groups" / ..);
    let list = base()
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::query::<ListQuery>())
        .and(with.clone())
        .and(auth)
        .and_then(list);
    let create = base()
        .and(warp::path::end())
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and(body)
        .and_then(create);
    let get = base()
        .and(warp::path!(String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(get);
    let participants = base()
        .and(warp::path!(String / "participants" / String))
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and(body)
        .and_then(participants);
    let get_invite = base()
        .and(warp::path!(String / "invite"))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(|ws, s, id, api, auth| invite(ws, s, id, api, auth, false));
    let reset = base()
        .and(warp::path!(String / "invite" / "reset"))
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and_then(|ws, s, id, api, auth| invite(ws, s, id, api, auth, true));
    let leave = base()
        .and(warp::path!(String / "leave"))
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and_then(leave);
    let info = base()
        .and(warp::path!(String / String))
        .and(warp::put())
        .and(with)
        .and(auth)
        .and(body)
        .and_then(info);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(participants)
        .unify()
        .or(get_invite)
        .unify()
        .or(reset)
        .unify()
        .or(leave)
        .unify()
        .or(info)
        .unify()
}

/// The handle of a WORKING session: 501 without a browser host, 404 for no such session, 409
/// `not_ready` while it is not logged in.
fn working(api: &Api, ws: &WorkspaceId, s: &SessionId) -> Result<SessionHandle, ApiError> {
    crate::worker::request::working_session(api, ws, s, "groups")
}

fn not_working(status: Status) -> ApiError {
    crate::worker::request::not_working("groups", status)
}

fn group_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "group_not_found",
        format!("this account is not in group {id} (or WhatsApp Web does not know it)"),
    )
}

/// A WhatsApp server status for the whole request, as the API answers it.
fn server_error(m: &str) -> ApiError {
    let status: u16 = m
        .strip_prefix(SERVER_ERROR_PREFIX)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    match status {
        401 | 403 => ApiError::new(
            StatusCode::FORBIDDEN,
            "not_group_admin",
            format!("WhatsApp refused: this account is not an admin of the group ({m})"),
        ),
        404 => ApiError::new(StatusCode::NOT_FOUND, "group_not_found", m.to_owned()),
        406 => ApiError::bad_request("invalid_body", m.to_owned()),
        429 => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m.to_owned()),
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "whatsapp_error", m.to_owned()),
    }
}

/// The documented error for a failed group command.
fn command_error(ws: &WorkspaceId, s: &SessionId, e: SessionCommandError) -> ApiError {
    match e {
        SessionCommandError::WrongStatus(status) => not_working(status),
        SessionCommandError::Engine(EngineError::Closed) | SessionCommandError::Gone => {
            not_working(Status::Stopped)
        }
        SessionCommandError::Engine(EngineError::Invalid(m)) => {
            ApiError::bad_request("invalid_body", m)
        }
        SessionCommandError::Engine(EngineError::Adapter(m))
            if m.starts_with(UNSUPPORTED_PREFIX) =>
        {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported", m)
        }
        SessionCommandError::Engine(EngineError::Adapter(m))
            if m.starts_with(SERVER_ERROR_PREFIX) =>
        {
            server_error(&m)
        }
        SessionCommandError::Engine(EngineError::Timeout(what)) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "whatsapp_timeout",
            format!("WhatsApp Web did not answer the {what} in time"),
        ),
        other => {
            tracing::warn!(workspace = %ws, session = %s, error = %other, "group command failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "whatsapp_error",
                format!("the group command failed in WhatsApp Web: {other}"),
            )
        }
    }
}

fn json_body(raw: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "body must be an object",
        ));
    }
    Ok(v)
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(r) => r
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_limit", format!("limit is 1 to {MAX_LIMIT}"))
            }),
    }
}

async fn list(ws: String, s: String, q: ListQuery, api: Api, auth: Option<String>) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let limit = parse_limit(q.limit.as_deref()).map_err(reject)?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            parse_group_id(c)
                .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor is a group id"))
        })
        .transpose()
        .map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let groups = handle
        .list_groups()
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?;
    let (groups, next) = page(groups, cursor.as_deref(), limit);
    Ok(warp::reply::json(&json!({"groups": groups, "next_cursor": next})).into_response())
}

async fn create(ws: String, s: String, api: Api, auth: Option<String>, raw: Bytes) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let body = json_body(&raw).map_err(reject)?;
    let subject = parse_subject(body.get("subject")).map_err(reject)?;
    let participants = parse_participants(body.get("participants")).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let created = handle
        .create_group(&subject, &participants)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?;
    let failed: Vec<_> = created
        .participants
        .iter()
        .filter(|p| p.code != 200)
        .cloned()
        .collect();
    let body = json!({
        "id": created.id,
        "subject": created.subject,
        "owner": created.owner,
        "created_at": created.created_at,
        "participants": results_json(&created.participants),
        "failed_participants": results_json(&failed),
    });
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

async fn get(ws: String, s: String, id: String, api: Api, auth: Option<String>) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let id = parse_group_id(&id).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let group = handle
        .get_group(&id)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?
        .ok_or_else(|| reject(group_not_found(&id)))?;
    Ok(warp::reply::json(&group).into_response())
}

async fn participants(
    ws: String,
    s: String,
    id: String,
    action: String,
    api: Api,
    auth: Option<String>,
    raw: Bytes,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let id = parse_group_id(&id).map_err(reject)?;
    let Some(action) = ParticipantAction::parse(&action) else {
        return Err(reject(ApiError::not_found("no such route")));
    };
    let body = json_body(&raw).map_err(reject)?;
    let participants = parse_participants(body.get("participants")).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let results = handle
        .modify_participants(&id, action, &participants)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?
        .ok_or_else(|| reject(group_not_found(&id)))?;
    let body = json!({
        "group": id,
        "action": action.as_str(),
        "participants": results_json(&results),
    });
    Ok(warp::reply::json(&body).into_response())
}

async fn invite(
    ws: String,
    s: String,
    id: String,
    api: Api,
    auth: Option<String>,
    reset: bool,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let id = parse_group_id(&id).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let code = handle
        .group_invite(&id, reset)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?
        .ok_or_else(|| reject(group_not_found(&id)))?;
    let body = json!({"code": code, "url": format!("https://chat.whatsapp.com/{code}")});
    Ok(warp::reply::json(&body).into_response())
}

async fn leave(ws: String, s: String, id: String, api: Api, auth: Option<String>) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let id = parse_group_id(&id).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    if !handle
        .leave_group(&id)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?
    {
        return Err(reject(group_not_found(&id)));
    }
    Ok(warp::reply::json(&json!({"group": id, "left": true})).into_response())
}

async fn info(
    ws: String,
    s: String,
    id: String,
    field: String,
    api: Api,
    auth: Option<String>,
    raw: Bytes,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let id = parse_group_id(&id).map_err(reject)?;
    if field != "subject" && field != "description" {
        return Err(reject(ApiError::not_found("no such route")));
    }
    let body = json_body(&raw).map_err(reject)?;
    let value = if field == "subject" {
        parse_subject(body.get("subject"))
    } else {
        parse_description(body.get("description"))
    }
    .map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let found = if field == "subject" {
        handle.set_group_subject(&id, &value).await
    } else {
        handle.set_group_description(&id, &value).await
    }
    .map_err(|e| reject(command_error(&ws, &s, e)))?;
    if !found {
        return Err(reject(group_not_found(&id)));
    }
    Ok(warp::reply::json(&json!({"group": id, field: value})).into_response())
}
