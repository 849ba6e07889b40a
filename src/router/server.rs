//! The router's HTTP surface: one warp filter that classifies the path ([`super::table`]),
//! answers health, readiness, metrics and the admin routes itself, and hands workspace
//! routes to [`super::proxy`] after the token check. Every error is the JSON body of
//! [`crate::api`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use serde_json::json;
use warp::{Filter, Reply};

use crate::api::ApiError;
use crate::auth::AuthError;
use crate::ids::WorkspaceId;

use super::State;
use super::proxy::{self, BodyError, BodyStream, Incoming};
use super::table::{Route, parse_route};

/// The router's whole surface as one filter.
pub fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let raw_query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(raw_query)
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: Option<String>,
                  headers: HeaderMap,
                  remote: Option<SocketAddr>,
                  body| {
                let state = state.clone();
                let body = box_body(body);
                async move {
                    handle(
                        &state,
                        Incoming {
                            method,
                            path: path.as_str().to_owned(),
                            query,
                            headers,
                            remote,
                            body,
                        },
                    )
                    .await
                }
            },
        )
        // Only warp's own extraction can reject (it never does for these filters); keep
        // the JSON error body even then.
        .recover(crate::api::recover)
}

/// Turns warp's body stream into owned chunks.
fn box_body<S, B>(body: S) -> BodyStream
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    body.map_ok(|mut b| {
        let n = b.remaining();
        b.copy_to_bytes(n)
    })
    .map_err(|e| BodyError::Read(e.to_string()))
    .boxed()
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Unauthorized => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
        AuthError::Forbidden => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not access this resource",
        ),
        AuthError::Config(m) => {
            tracing::error!(error = %m, "auth configuration");
            ApiError::internal("authentication is misconfigured")
        }
    }
}

fn authorize(state: &State, headers: &HeaderMap, ws: Option<&WorkspaceId>) -> Result<(), ApiError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .authority
        .authorize(h, ws)
        .map(|_| ())
        .map_err(auth_error)
}

fn only_get(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        ))
    }
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn not_ready() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "the router has not loaded a shard map yet",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Answers one request (the router's accept loop calls this directly for workspace routes).
pub(super) async fn handle(state: &State, req: Incoming) -> warp::reply::Response {
    let rid = proxy::request_id(&req.headers);
    let started = Instant::now();
    let (shard, result) = dispatch(state, req, &rid).await;
    let mut resp = result.unwrap_or_else(ApiError::into_response);
    resp.headers_mut()
        .entry("x-request-id")
        .or_insert_with(|| rid.clone());
    if let Some(k) = shard {
        state.metrics.record(k, resp.status(), started.elapsed());
    }
    resp
}

/// Routes a request; returns the shard it concerned (for metrics) and the answer.
async fn dispatch(
    state: &State,
    req: Incoming,
    rid: &HeaderValue,
) -> (Option<u32>, Result<warp::reply::Response, ApiError>) {
    match parse_route(&req.path) {
        Route::Healthz => (
            None,
            Ok(json_reply(StatusCode::OK, &json!({"status": "ok"}))),
        ),
        Route::Readyz => {
            let version = state.maps.borrow().as_ref().map(|m| m.version);
            let r = match version {
                Some(v) => Ok(json_reply(
                    StatusCode::OK,
                    &json!({"ready": true, "version": v}),
                )),
                None => Err(not_ready()),
            };
            (None, r)
        }
        Route::Metrics => {
            let body = crate::telemetry::prometheus().render();
            let mut r = warp::reply::Response::new(Bytes::from(body).into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            (None, Ok(r))
        }
        Route::NotFound => (None, Err(ApiError::not_found("no such route"))),
        Route::Shards => (None, admin_shards(state, &req.method, &req.headers).await),
        Route::RouteOf(ws) => (
            None,
            admin_route(state, &req.method, &req.headers, ws).await,
        ),
        Route::Workspace(Err(e)) => (None, Err(ApiError::from(e))),
        Route::Workspace(Ok(ws)) => {
            if let Err(e) = authorize(state, &req.headers, Some(&ws)) {
                return (None, Err(e));
            }
            let owner = state.maps.borrow().as_ref().map(|m| m.owner(&ws));
            let shard = match owner {
                None => return (None, Err(not_ready())),
                // A validated map always has an owner; None cannot come from the feed.
                Some(None) => {
                    return (
                        None,
                        Err(ApiError::internal("no shard can own this workspace")),
                    );
                }
                Some(Some(k)) => k,
            };
            (
                Some(shard),
                proxy::forward(state, &ws, shard, req, rid).await,
            )
        }
    }
}

async fn admin_route(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    ws: Result<WorkspaceId, crate::ids::IdError>,
) -> Result<warp::reply::Response, ApiError> {
    only_get(method)?;
    authorize(state, headers, None)?;
    let ws = ws?;
    let map = state.maps.borrow().clone().ok_or_else(not_ready)?;
    let shard = map
        .owner(&ws)
        .ok_or_else(|| ApiError::internal("no shard can own this workspace"))?;
    let instances = state.endpoints.get(shard).await.ok().unwrap_or_default();
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "workspace": ws,
            "shard": shard,
            "pinned": map.pins.contains_key(&ws),
            "version": map.version,
            "instances": &*instances,
        }),
    ))
}

async fn admin_shards(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
) -> Result<warp::reply::Response, ApiError> {
    only_get(method)?;
    authorize(state, headers, None)?;
    let map = state.maps.borrow().clone().ok_or_else(not_ready)?;
    let mut shards = Vec::with_capacity(map.shards.len());
    for s in &map.shards {
        let resolved = state.endpoints.get(s.id).await;
        let entry = state.endpoints.cached(s.id);
        let instances = resolved.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        shards.push(json!({
            "id": s.id,
            "weight": s.weight,
            "draining": map.is_draining(s.id),
            "healthy": !instances.is_empty(),
            "instances": instances,
            "resolved_ms_ago": entry.as_ref().map(|e| e.resolved_at.elapsed().as_millis() as u64),
            "error": entry.and_then(|e| e.error).or_else(|| resolved.err().map(|e| e.to_string())),
        }));
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({"version": map.version, "map": &*map, "shards": shards}),
    ))
}
