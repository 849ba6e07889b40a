//! `PATCH /v1/workspaces/{ws}/sessions/{s}`: changes a running session's settings in place
//! (webhook targets, metadata, pacing, per-session options) without touching its browser,
//! profile or login. The merge rules are [`super::apply_patch`]'s.

use warp::{Filter, Reply};

use crate::api::{ApiError, MAX_BODY_BYTES};
use crate::webhook::UrlPolicy;
use crate::worker::host::{ConfigUpdate, HostError, SessionConfig};
use crate::worker::request::{Api, host_error, running_session};

/// The PATCH route.
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    warp::path!("v1" / "workspaces" / String / "sessions" / String)
        .and(warp::patch())
        .and(with)
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(patch_session)
}

async fn patch_session(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    body: bytes::Bytes,
) -> Result<warp::reply::Response, warp::Rejection> {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(warp::reject::custom)?;
    let patch: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| warp::reject::custom(ApiError::bad_request("invalid_body", e.to_string())))?;
    let messaging = api.shared.messaging.get().cloned();
    let policy = messaging
        .as_ref()
        .map(|m| m.url_policy().clone())
        .unwrap_or_else(UrlPolicy::default);
    let apply = |current: &SessionConfig| {
        super::apply_patch(current, &patch, &policy).map_err(|e| HostError::Invalid {
            code: e.code(),
            message: e.to_string(),
        })
    };
    let applied = |config: &SessionConfig| {
        if let Some(m) = &messaging {
            // Webhook registry and pacing, before the answer: the next event and the next
            // message use the new settings.
            m.on_created(&ws, config);
        }
    };
    let update = ConfigUpdate {
        apply: &apply,
        applied: &applied,
    };
    match api.shared.host.update_session(&ws, &s, update).await {
        Ok(info) => {
            tracing::info!(workspace = %ws, session = %s, "session settings changed");
            Ok(warp::reply::json(&info).into_response())
        }
        Err(e) => Err(warp::reject::custom(host_error(&ws, e))),
    }
}
