//! The worker's shared request layer: what every route module starts with. The handler state
//! ([`Api`]), the gate (id, token, fencing, readiness, shard ownership), the mapping of session
//! host errors to the documented JSON errors, and the "workspace runs here" checks.
//!
//! Kept apart from the route modules so that they depend on it and not on each other (or on
//! the composition root, [`super::http`]).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};

use super::driver::Shared;
use super::host::HostError;
use super::ownership::Phase;
use crate::api::ApiError;
use crate::auth::{AuthError, Authority};
use crate::engine::{SessionHandle, Status};
use crate::ids::{SessionId, WorkspaceId};

/// `Retry-After` sent with 503 answers, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;
/// How long a create waits for the workspace lock before answering 503.
pub const CREATE_WAIT_SECS: u64 = 10;

/// What the handlers need.
#[derive(Clone)]
pub struct Api {
    /// Shared worker state.
    pub shared: Arc<Shared>,
    /// Token checks.
    pub authority: Arc<Authority>,
    /// Largest profile upload accepted (`PUT …/sessions/{s}/profile`).
    pub profile_max_bytes: u64,
}

impl Api {
    /// The Chromium-backed host, when this worker runs one (`None` with the placeholder).
    pub fn engine(&self) -> Option<Arc<super::engine_host::EngineHost>> {
        self.shared.host.engine_host()
    }
}

/// An API error as a warp rejection (the worker's `recover` turns it back into its JSON).
pub(crate) fn reject(e: ApiError) -> warp::Rejection {
    warp::reject::custom(e)
}

/// A 503 with `Retry-After`: the caller should retry (not ready, fenced, handing over).
pub(crate) fn unavailable(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).with_header(
        http::header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER_SECS),
    )
}

/// 401/403 for a token the authority refused.
pub(crate) fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
        AuthError::Unauthorized => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
        }
        AuthError::Config(m) => ApiError::internal(m),
    }
}

/// The checks every workspace route starts with; returns the validated workspace.
pub(crate) fn gate(api: &Api, ws: &str, auth: Option<&str>) -> Result<WorkspaceId, ApiError> {
    let ws = WorkspaceId::new(ws)?;
    api.authority
        .authorize(auth, Some(&ws))
        .map_err(auth_error)?;
    let shard = api.shared.shard;
    {
        let status = api.shared.status.borrow();
        if status.fenced {
            return Err(
                unavailable("fenced", "this worker lost its Consul session").with_shard(shard)
            );
        }
        if !status.ready {
            return Err(unavailable("not_ready", "this worker is not serving").with_shard(shard));
        }
    }
    let map = api
        .shared
        .current_map()
        .ok_or_else(|| unavailable("not_ready", "no shard map yet").with_shard(shard))?;
    match map.owner(&ws) {
        Some(owner) if owner == shard => Ok(ws),
        Some(owner) => Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_owner",
            format!("workspace {ws} belongs to shard {owner}"),
        )
        .with_shard(owner)),
        None => Err(unavailable(
            "no_owner",
            "the shard map gives this workspace to no shard",
        )),
    }
}

/// The workspace's phase on this worker, if it has one.
pub(crate) fn phase(api: &Api, ws: &WorkspaceId) -> Option<Phase> {
    api.shared.status.borrow().workspaces.get(ws).copied()
}

fn exists_on_disk(api: &Api, ws: &WorkspaceId) -> bool {
    api.shared
        .data
        .join("workspaces")
        .join(ws.as_str())
        .is_dir()
}

/// The documented JSON error for a session host error.
pub(crate) fn host_error(ws: &WorkspaceId, e: HostError) -> ApiError {
    match e {
        HostError::Exists(s) => ApiError::new(
            StatusCode::CONFLICT,
            "session_exists",
            format!("session {s} already exists"),
        ),
        HostError::NotFound(s) => ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {s} in workspace {ws}"),
        ),
        HostError::Invalid { code, message } => ApiError::bad_request(code, message),
        HostError::WrongStatus { code, message } => {
            let status = if code == "invalid" {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::CONFLICT
            };
            ApiError::new(status, code, message)
        }
        HostError::Unsupported(what) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            format!("{what} is not supported by this worker's session host"),
        ),
        HostError::NotRunning(_) => unavailable(
            "workspace_unavailable",
            &format!("workspace {ws} is being handed over; retry"),
        ),
        other => {
            tracing::error!(workspace = %ws, error = %other, "session host");
            ApiError::internal("session host error")
        }
    }
}

/// For a workspace that is not running here: 503 while it is being taken (and make sure the
/// runner knows it), `None` when it does not exist at all.
pub(crate) fn not_running(api: &Api, ws: &WorkspaceId) -> Option<ApiError> {
    if api.shared.is_known(ws) || exists_on_disk(api, ws) {
        api.shared.ensure(ws);
        Some(unavailable(
            "workspace_unavailable",
            &format!("workspace {ws} is starting or being handed over; retry"),
        ))
    } else {
        None
    }
}

/// Takes the workspace (lock, start) if it is not running here yet and waits for it, up to
/// [`CREATE_WAIT_SECS`]; 503 `workspace_unavailable` when the lock is held elsewhere.
pub(crate) async fn take_workspace(api: &Api, ws: &WorkspaceId) -> Result<(), ApiError> {
    api.shared.ensure(ws);
    let mut rx = api.shared.status.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(CREATE_WAIT_SECS);
    loop {
        if rx.borrow_and_update().workspaces.get(ws) == Some(&Phase::Running) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(unavailable(
                    "workspace_unavailable",
                    &format!("workspace {ws} could not be taken yet (lock held elsewhere); retry"),
                ));
            }
        }
    }
}

/// Validates a phone number: digits only (a leading `+`, spaces and dashes are dropped), 5 to
/// 20 of them. Answers the digits.
pub fn parse_phone(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim().trim_start_matches('+');
    let mut digits = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' => {}
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_phone",
                    "phone must be digits (international format, no letters)",
                ));
            }
        }
    }
    if !(5..=20).contains(&digits.len()) {
        return Err(ApiError::bad_request(
            "invalid_phone",
            "phone must have 5 to 20 digits",
        ));
    }
    Ok(digits)
}

/// Validates a group id from a path or body: `<digits>-<digits>@g.us` or `<digits>@g.us`
/// (each part 1 to 32 digits; `@` may arrive as `%40`). Answers the id.
pub fn parse_group_id(raw: &str) -> Result<String, ApiError> {
    let id = raw.trim().replace("%40", "@");
    if crate::engine::groups::is_group_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            "invalid_group_id",
            "group id must be <digits>-<digits>@g.us or <digits>@g.us",
        ))
    }
}

/// Gate, session id and "the workspace runs here" in one: what every per-session route needs.
pub(crate) fn running_session(
    api: &Api,
    ws: &str,
    s: &str,
    auth: Option<&str>,
) -> Result<(WorkspaceId, SessionId), ApiError> {
    let ws = gate(api, ws, auth)?;
    let s = SessionId::new(s)?;
    if phase(api, &ws) != Some(Phase::Running) {
        return Err(not_running(api, &ws).unwrap_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "session_not_found",
                format!("no session {s} in workspace {ws}"),
            )
        }));
    }
    Ok((ws, s))
}

/// `409 not_ready`: the session is `status`, and `what` (a feature, e.g. "groups") needs it
/// `WORKING`.
pub(crate) fn not_working(what: &str, status: Status) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_ready",
        format!(
            "session is {}; {what} need it WORKING (logged in)",
            status.as_str()
        ),
    )
}

/// The session's engine handle when it is `WORKING`: what every route that talks to WhatsApp
/// needs. A host without an engine answers `501` naming `what`; a session the engine does not
/// run is `404 session_not_found`; any other status `409 not_ready`.
pub(crate) fn working_session(
    api: &Api,
    ws: &WorkspaceId,
    s: &SessionId,
    what: &'static str,
) -> Result<SessionHandle, ApiError> {
    let engine = api
        .engine()
        .ok_or_else(|| host_error(ws, HostError::Unsupported(what)))?;
    let handle = engine.handle(ws, s).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {s} in workspace {ws}"),
        )
    })?;
    let status = handle.status().status;
    if status != Status::Working {
        return Err(not_working(what, status));
    }
    Ok(handle)
}

/// Validates a chat id parameter: `<digits>@c.us`, `<digits>@lid` or a group id
/// (`<digits>@g.us`, `<digits>-<digits>@g.us`); `@` may arrive as `%40`. Answers the id.
pub fn parse_chat_id(raw: &str) -> Result<String, ApiError> {
    let decoded = raw.replace("%40", "@");
    if crate::engine::chats::is_chat_id(&decoded) {
        Ok(decoded)
    } else {
        Err(ApiError::bad_request(
            "invalid_chat_id",
            "chat must be <digits>@c.us, <digits>@lid or a group id <digits>@g.us",
        ))
    }
}

/// Validates a contact id parameter: `<digits>@c.us`, `<digits>@lid`, or bare digits (a phone
/// number, answered as `<digits>@c.us`); `@` may arrive as `%40`.
pub fn parse_contact_id(raw: &str) -> Result<String, ApiError> {
    let decoded = raw.replace("%40", "@");
    if crate::engine::chats::is_contact_id(&decoded) {
        return Ok(decoded);
    }
    if !decoded.contains('@')
        && decoded.bytes().all(|b| b.is_ascii_digit())
        && let Ok(digits) = parse_phone(&decoded)
    {
        return Ok(format!("{digits}@c.us"));
    }
    Err(ApiError::bad_request(
        "invalid_contact_id",
        "contact must be <digits>@c.us, <digits>@lid or a phone number",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_have_two_forms() {
        assert_eq!(
            parse_group_id("4915550001-1700000000%40g.us").unwrap(),
            "4915550001-1700000000@g.us"
        );
        assert!(parse_group_id("120363012345678901@g.us").is_ok());
        for bad in ["", "x@g.us", "49-1@c.us", "../49@g.us", "49-1-2@g.us"] {
            assert!(parse_group_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_are_digits_only() {
        assert_eq!(parse_phone("+49 1555-0001").unwrap(), "4915550001");
        for bad in [
            "",
            "1234",
            "49a15550001",
            "1".repeat(21).as_str(),
            "../1234567",
        ] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_and_contact_ids() {
        assert_eq!(
            parse_chat_id("4915550001%40c.us").unwrap(),
            "4915550001@c.us"
        );
        assert_eq!(
            parse_chat_id("120363025246125486@g.us").unwrap(),
            "120363025246125486@g.us"
        );
        assert_eq!(parse_contact_id("4915550001").unwrap(), "4915550001@c.us");
        assert_eq!(
            parse_contact_id("123456789012345@lid").unwrap(),
            "123456789012345@lid"
        );
        for bad in ["", "x@c.us", "4915550001@g", "..%2F@c.us", "1234@c.us"] {
            assert!(parse_chat_id(bad).is_err(), "{bad}");
        }
        for bad in ["120363025246125486@g.us", "12ab", "1234"] {
            assert!(parse_contact_id(bad).is_err(), "{bad}");
        }
    }
}
