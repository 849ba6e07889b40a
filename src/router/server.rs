//! The router's HTTP surface: one warp filter that classifies the path ([`super::table`]),
//! answers health, readiness, metrics, the dashboard ([`super::ui`]) and the admin routes
//! itself ([`super::fleet`], [`super::shards_api`]), and hands workspace routes to
//! [`super::proxy`] after the token check. Every error is the JSON body of
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
        Err(method_not_allowed())
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
        Route::Shards if req.method == Method::PUT => (None, admin_apply(state, req).await),
        Route::Shards => (None, admin_shards(state, &req.method, &req.headers).await),
        Route::ShardsPlan => (None, admin_plan(state, req).await),
        Route::Pin(ws) => (None, admin_pin(state, req, ws).await),
        Route::Sessions => (
            None,
            admin_sessions(state, &req.method, &req.headers, req.query.as_deref()).await,
        ),
        Route::Ui => (
            None,
            super::ui::serve(&req.method, &req.path, req.query.as_deref(), &req.headers),
        ),
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

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Reads a small JSON request body (admin routes), refusing one over the body cap.
async fn small_body(state: &State, req: Incoming) -> Result<Bytes, ApiError> {
    proxy::collect(req.body, state.config.max_body_bytes).await
}

fn ok_json(body: &serde_json::Value) -> warp::reply::Response {
    json_reply(StatusCode::OK, body)
}

/// `PUT /v1/shards`: applies a change planned against a version (CAS; 409 when stale).
async fn admin_apply(state: &State, req: Incoming) -> Result<warp::reply::Response, ApiError> {
    authorize(state, &req.headers, None)?;
    let body = small_body(state, req).await?;
    super::shards_api::apply(state.shard_admin.as_ref(), &body)
        .await
        .map(|v| ok_json(&v))
}

/// `POST /v1/shards/plan`: the movement plan of a change; writes nothing.
async fn admin_plan(state: &State, req: Incoming) -> Result<warp::reply::Response, ApiError> {
    if req.method != Method::POST {
        return Err(method_not_allowed());
    }
    authorize(state, &req.headers, None)?;
    let body = small_body(state, req).await?;
    super::shards_api::plan(state.shard_admin.as_ref(), &body)
        .await
        .map(|v| ok_json(&v))
}

/// `PUT`/`DELETE /v1/shards/pins/{ws}`.
async fn admin_pin(
    state: &State,
    req: Incoming,
    ws: Result<WorkspaceId, crate::ids::IdError>,
) -> Result<warp::reply::Response, ApiError> {
    let method = req.method.clone();
    if method != Method::PUT && method != Method::DELETE {
        return Err(method_not_allowed());
    }
    authorize(state, &req.headers, None)?;
    let ws = ws?;
    let admin = state.shard_admin.as_ref();
    let v = if method == Method::PUT {
        let body = small_body(state, req).await?;
        super::shards_api::pin(admin, ws, &body).await?
    } else {
        super::shards_api::unpin(admin, ws).await?
    };
    Ok(ok_json(&v))
}

/// `GET /v1/sessions`: every shard's sessions, merged (partial when a shard is down).
// Takes the parts, not `&Incoming`: its body stream is not `Sync`, so a reference to it would
// make this future not `Send`.
async fn admin_sessions(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<warp::reply::Response, ApiError> {
    only_get(method)?;
    authorize(state, headers, None)?;
    let map = state.maps.borrow().clone().ok_or_else(not_ready)?;
    let body = super::fleet::list(state, &map, headers, query).await?;
    Ok(ok_json(&body))
}
