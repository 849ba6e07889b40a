//! The worker's HTTP surface (warp): health, readiness, metrics, the state endpoint and the
//! session routes of DESIGN §7 that this issue covers.
//!
//! Every answer carries `X-Wafleet-Shard: K`. A workspace route answers, in this order:
//! 400 for an invalid id, 401/403 for a bad token, 503 (`Retry-After`) while the worker is not
//! ready or fenced, 421 `not_owner` when the shard map gives the workspace to another shard,
//! 503 while the workspace's lock is being taken (handoff), then the answer itself. Handlers
//! read the published [`super::driver::Status`]; they never talk to Consul.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use warp::{Filter, Reply};

use super::driver::{Shared, Status};
use super::host::{
    DEFAULT_SESSION, DesiredState, HostError, SessionAction, SessionConfig, SessionInfo,
    WebhookConfig,
};
use super::layout::now_ms;
use super::ownership::Phase;
use crate::api::{ApiError, MAX_BODY_BYTES, recover};
use crate::auth::{AuthError, Authority};
use crate::ids::{SessionId, WorkspaceId};

/// The header naming the shard that answered.
pub const SHARD_HEADER: &str = "x-wafleet-shard";
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

/// The body of `POST /v1/workspaces/{ws}/sessions`.
// Unknown fields are ignored so clients written against a later API (engine options) keep
// working against this worker.
#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    webhook: Option<WebhookConfig>,
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pacing: Option<crate::sendq::PacingConfig>,
}

/// The answer of `GET /v1/workspaces/{ws}/sessions`.
#[derive(Debug, Serialize)]
struct SessionList {
    workspace: WorkspaceId,
    shard: u32,
    sessions: Vec<SessionInfo>,
}

/// All routes, with the JSON rejection handler and the shard header applied.
pub fn filters(api: Api) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let shard = api.shared.shard;
    let with = {
        let api = api.clone();
        warp::any().map(move || api.clone())
    };
    let auth = warp::header::optional::<String>("authorization");

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with.clone())
        .map(|api: Api| readyz(&api.shared.status.borrow()));
    let metrics = warp::path!("metrics").and(warp::get()).map(|| {
        warp::reply::with_header(
            crate::telemetry::prometheus().render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
        .into_response()
    });
    let state = warp::path!("v1" / "worker" / "state")
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(state);
    let list = warp::path!("v1" / "workspaces" / String / "sessions")
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(list_sessions);
    let create = warp::path!("v1" / "workspaces" / String / "sessions")
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(super::messaging::routes::create_session);
    let one = warp::path!("v1" / "workspaces" / String / "sessions" / String)
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(get_session);
    let delete = warp::path!("v1" / "workspaces" / String / "sessions" / String)
        .and(warp::delete())
        .and(with.clone())
        .and(auth)
        .and_then(delete_session);
    // One route per verb with a literal last segment: a filter that took the body and then
    // declined would leave none for the routes after it (messages).
    let lifecycle = |name: &'static str, action: SessionAction| {
        warp::path!("v1" / "workspaces" / String / "sessions" / String / ..)
            .and(warp::path(name))
            .and(warp::path::end())
            .and(warp::post())
            .and(with.clone())
            .and(auth)
            .and_then(move |ws, s, api, auth| session_action(ws, s, api, auth, action))
    };
    let lifecycle = lifecycle("start", SessionAction::Start)
        .or(lifecycle("stop", SessionAction::Stop))
        .unify()
        .or(lifecycle("restart", SessionAction::Restart))
        .unify()
        .or(lifecycle("logout", SessionAction::Logout))
        .unify();
    let pairing = warp::path!("v1" / "workspaces" / String / "sessions" / String / "pairing-code")
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(pairing_code);
    let qr = warp::path!("v1" / "workspaces" / String / "sessions" / String / "qr")
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and(warp::header::optional::<String>("accept"))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and_then(get_qr);

    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(state)
        .unify()
        .or(list)
        .unify()
        .or(create)
        .unify()
        .or(one)
        .unify()
        .or(delete)
        .unify()
        .or(qr)
        .unify()
        .or(lifecycle)
        .unify()
        .or(pairing)
        .unify()
        .or(super::messaging::routes::routes(api.clone()))
        .unify()
        .or(super::profile_routes::routes(api.clone()))
        .unify()
        .or(super::fleet_api::routes(api.clone()))
        .unify()
        .recover(recover)
        .unify()
        .map(move |mut resp: warp::reply::Response| {
            resp.headers_mut()
                .insert(SHARD_HEADER, HeaderValue::from(shard));
            resp
        })
}

fn readyz(status: &Status) -> warp::reply::Response {
    let body = serde_json::json!({
        "ready": status.ready,
        "fenced": status.fenced,
        "draining": status.draining,
        "map_version": status.map_version,
        "reason": status.reason,
    });
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

pub(crate) fn unavailable(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).with_header(
        http::header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER_SECS),
    )
}

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

fn phase(api: &Api, ws: &WorkspaceId) -> Option<Phase> {
    api.shared.status.borrow().workspaces.get(ws).copied()
}

fn exists_on_disk(api: &Api, ws: &WorkspaceId) -> bool {
    api.shared
        .data
        .join("workspaces")
        .join(ws.as_str())
        .is_dir()
}

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
fn not_running(api: &Api, ws: &WorkspaceId) -> Option<ApiError> {
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

async fn state(api: Api, auth: Option<String>) -> Result<warp::reply::Response, warp::Rejection> {
    api.authority
        .authorize(auth.as_deref(), None)
        .map_err(|e| warp::reject::custom(auth_error(e)))?;
    let status = api.shared.status.borrow().clone();
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    body["shard"] = serde_json::json!(api.shared.shard);
    Ok(warp::reply::json(&body).into_response())
}

async fn list_sessions(
    ws: String,
    api: Api,
    auth: Option<String>,
) -> Result<warp::reply::Response, warp::Rejection> {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(warp::reject::custom)?;
    let sessions = if phase(&api, &ws) == Some(Phase::Running) {
        api.shared
            .host
            .list_sessions(&ws)
            .await
            .map_err(|e| warp::reject::custom(host_error(&ws, e)))?
    } else if let Some(e) = not_running(&api, &ws) {
        return Err(warp::reject::custom(e));
    } else {
        Vec::new()
    };
    Ok(warp::reply::json(&SessionList {
        workspace: ws,
        shard: api.shared.shard,
        sessions,
    })
    .into_response())
}

async fn get_session(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
) -> Result<warp::reply::Response, warp::Rejection> {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(warp::reject::custom)?;
    let s = SessionId::new(s).map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    if phase(&api, &ws) != Some(Phase::Running) {
        return Err(warp::reject::custom(not_running(&api, &ws).unwrap_or_else(
            || ApiError::not_found(format!("workspace {ws} has no sessions")),
        )));
    }
    match api.shared.host.get_session(&ws, &s).await {
        Ok(Some(info)) => Ok(warp::reply::json(&info).into_response()),
        Ok(None) => Err(warp::reject::custom(ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {s} in workspace {ws}"),
        ))),
        Err(e) => Err(warp::reject::custom(host_error(&ws, e))),
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

pub(crate) async fn create_session(
    ws: String,
    api: Api,
    auth: Option<String>,
    body: bytes::Bytes,
) -> Result<warp::reply::Response, warp::Rejection> {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(warp::reject::custom)?;
    let body: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody {
            session: None,
            webhook: None,
            metadata: None,
            pacing: None,
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            warp::reject::custom(ApiError::bad_request("invalid_body", e.to_string()))
        })?
    };
    let session = SessionId::new(body.session.unwrap_or_else(|| DEFAULT_SESSION.to_owned()))
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    if let Some(w) = &body.webhook
        && url::Url::parse(&w.url).is_err()
    {
        return Err(warp::reject::custom(ApiError::bad_request(
            "invalid_webhook",
            "webhook.url is not a valid URL",
        )));
    }
    if let Some(Err(why)) = body
        .pacing
        .as_ref()
        .map(crate::sendq::PacingConfig::validate)
    {
        return Err(warp::reject::custom(ApiError::bad_request(
            "invalid_pacing",
            format!("pacing: {why}"),
        )));
    }
    take_workspace(&api, &ws)
        .await
        .map_err(warp::reject::custom)?;
    let config = SessionConfig {
        session,
        webhook: body.webhook,
        metadata: body.metadata.unwrap_or_default(),
        pacing: body.pacing,
        desired: DesiredState::Running,
        created_at_ms: now_ms(),
    };
    match api.shared.host.create_session(&ws, config).await {
        Ok(info) => Ok(
            warp::reply::with_status(warp::reply::json(&info), StatusCode::CREATED).into_response(),
        ),
        Err(e) => Err(warp::reject::custom(host_error(&ws, e))),
    }
}

// === session lifecycle, QR and pairing (DESIGN §7) ===

/// The body of `POST …/sessions/{s}/pairing-code`.
#[derive(Debug, Deserialize)]
struct PairingBody {
    phone: String,
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

async fn delete_session(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
) -> Result<warp::reply::Response, warp::Rejection> {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(warp::reject::custom)?;
    match api.shared.host.delete_session(&ws, &s).await {
        Ok(()) => Ok(warp::reply::json(&serde_json::json!({
            "workspace": ws, "session": s, "deleted": true
        }))
        .into_response()),
        Err(e) => Err(warp::reject::custom(host_error(&ws, e))),
    }
}

async fn session_action(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    action: SessionAction,
) -> Result<warp::reply::Response, warp::Rejection> {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(warp::reject::custom)?;
    match api.shared.host.session_action(&ws, &s, action).await {
        Ok(info) => Ok(warp::reply::json(&info).into_response()),
        Err(e) => Err(warp::reject::custom(host_error(&ws, e))),
    }
}

async fn pairing_code(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    body: bytes::Bytes,
) -> Result<warp::reply::Response, warp::Rejection> {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(warp::reject::custom)?;
    let body: PairingBody = serde_json::from_slice(&body)
        .map_err(|e| warp::reject::custom(ApiError::bad_request("invalid_body", e.to_string())))?;
    let phone = parse_phone(&body.phone).map_err(warp::reject::custom)?;
    match api.shared.host.pairing_code(&ws, &s, &phone).await {
        Ok(code) => Ok(warp::reply::json(&serde_json::json!({ "code": code })).into_response()),
        Err(e) => Err(warp::reject::custom(host_error(&ws, e))),
    }
}

async fn get_qr(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    accept: Option<String>,
    query: std::collections::HashMap<String, String>,
) -> Result<warp::reply::Response, warp::Rejection> {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(warp::reject::custom)?;
    let format = match query.get("format").map(String::as_str) {
        Some("raw") => "raw",
        Some("json") => "json",
        Some("png") => "png",
        Some(other) => {
            return Err(warp::reject::custom(ApiError::bad_request(
                "invalid_format",
                format!("format {other:?}: expected png, json or raw"),
            )));
        }
        None if accept
            .as_deref()
            .is_some_and(|a| a.contains("application/json")) =>
        {
            "json"
        }
        None => "png",
    };
    let qr = api
        .shared
        .host
        .qr(&ws, &s)
        .await
        .map_err(|e| warp::reject::custom(host_error(&ws, e)))?;
    let no_store = |r: warp::reply::Response| {
        let mut r = r;
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        r
    };
    match format {
        "raw" => Ok(no_store(
            warp::reply::with_header(qr.value, "content-type", "text/plain; charset=utf-8")
                .into_response(),
        )),
        "json" => Ok(no_store(warp::reply::json(&qr).into_response())),
        _ => {
            let png = crate::engine::qr_png(&qr.value).map_err(|e| {
                tracing::error!(workspace = %ws, session = %s, error = %e, "QR rendering");
                warp::reject::custom(ApiError::internal("QR rendering failed"))
            })?;
            Ok(no_store(
                warp::reply::with_header(png, "content-type", "image/png").into_response(),
            ))
        }
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

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
}
