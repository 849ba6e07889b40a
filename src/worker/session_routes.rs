//! Session routes (DESIGN §7): list, get, create, delete, lifecycle actions, QR and pairing
//! code. Create is served through [`create::create`] (webhook allow-list and `Idempotency-Key`
//! around [`create_session`] here).

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use warp::{Filter, Reply};

use super::host::{
    DEFAULT_SESSION, DesiredState, SessionAction, SessionConfig, SessionInfo, WebhookConfig,
};
use super::layout::now_ms;
use super::ownership::Phase;
use super::request::{
    Api, gate, host_error, not_running, parse_phone, phase, running_session, take_workspace,
};
use crate::api::{ApiError, MAX_BODY_BYTES};
use crate::ids::{SessionId, WorkspaceId};

pub mod create;

/// The body of `POST /v1/workspaces/{ws}/sessions`.
// Unknown fields are ignored so clients written against a later API (engine options) keep
// working against this worker.
#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    webhook: Option<WebhookConfig>,
    /// The target list (up to 5); `webhook` alone means a one-element list.
    #[serde(default)]
    webhooks: Option<Vec<WebhookConfig>>,
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pacing: Option<crate::sendq::PacingConfig>,
    #[serde(default)]
    reject_calls: bool,
    media_download: Option<super::host::MediaDownload>,
}

/// The answer of `GET /v1/workspaces/{ws}/sessions`.
#[derive(Debug, Serialize)]
struct SessionList {
    workspace: WorkspaceId,
    shard: u32,
    sessions: Vec<SessionInfo>,
}

/// The body of `POST …/sessions/{s}/pairing-code`.
#[derive(Debug, Deserialize)]
struct PairingBody {
    phone: String,
}

/// The session routes (without create, which [`super::http::filters`] wires through the
/// idempotency wrapper).
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    let auth = warp::header::optional::<String>("authorization");
    let list = warp::path!("v1" / "workspaces" / String / "sessions")
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(list_sessions);
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

    list.or(one)
        .unify()
        .or(delete)
        .unify()
        .or(qr)
        .unify()
        .or(lifecycle)
        .unify()
        .or(pairing)
        .unify()
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

/// Creates a session (the body of `POST /v1/workspaces/{ws}/sessions`), taking the workspace
/// first when it does not run here yet.
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
            webhooks: None,
            metadata: None,
            pacing: None,
            reject_calls: false,
            media_download: None,
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
    let webhooks = match (body.webhook, body.webhooks) {
        (Some(_), Some(_)) => {
            return Err(warp::reject::custom(ApiError::bad_request(
                "invalid_body",
                "give either webhook (one target) or webhooks (the list), not both",
            )));
        }
        (Some(w), None) => vec![w],
        (None, list) => list.unwrap_or_default(),
    };
    let policy = api
        .shared
        .messaging
        .get()
        .map(|m| m.url_policy().clone())
        .unwrap_or_default();
    super::settings::validate_targets(&webhooks, &policy)
        .map_err(|e| warp::reject::custom(ApiError::bad_request(e.code(), e.to_string())))?;
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
    let mut config = SessionConfig {
        session,
        webhook: None,
        webhooks,
        metadata: body.metadata.unwrap_or_default(),
        pacing: body.pacing,
        desired: DesiredState::Running,
        created_at_ms: now_ms(),
        reject_calls: body.reject_calls,
        media_download: body.media_download.unwrap_or_default(),
    };
    config.normalize();
    match api.shared.host.create_session(&ws, config).await {
        Ok(info) => Ok(
            warp::reply::with_status(warp::reply::json(&info), StatusCode::CREATED).into_response(),
        ),
        Err(e) => Err(warp::reject::custom(host_error(&ws, e))),
    }
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
