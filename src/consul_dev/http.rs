//! The HTTP layer of the built-in agent: the accept loop (hyper through warp's service, so a
//! dropped request can close its connection without an answer), request parsing with Consul's
//! presence flags, ACL, blocking queries, Consul's plain-text errors and headers, and the
//! fault-injection admin paths under `/_dev/faults`.
//!
//! No rule of Consul lives here: every decision is a call into [`super::state::State`].

// Handlers return `Result<Resp, Resp>` so `?` can short-circuit with Consul's error answer; the
// response type is large but this is a dev agent, not a hot path.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;
use warp::reply::Reply;

use super::duration::parse_go_duration;
use super::state::{DeleteMode, MAX_KV_VALUE_BYTES, PutMode, State, StateError, Status};
use super::{Faults, Listener, PauseMode, Shared, filter, now, wire};

mod admin;
mod agent;
mod kv;
mod request;

use admin::*;
use agent::*;
use kv::*;
use request::*;

mod route;
use route::route;

/// Lets a handler close the connection it was called on without answering (fault `drop`).
#[derive(Clone, Debug)]
struct ConnHandle(CancellationToken);

type Resp = warp::reply::Response;

/// Accepts connections until `shutdown`; each connection is served by hyper with the warp
/// routes, and is torn down (socket closed) when a handler cancels its [`ConnHandle`].
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    role: Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let routes = routes(shared, role);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // E.g. too many open files: back off a little instead of spinning.
                tracing::warn!(error = %e, "consul-dev: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn_token = shutdown.child_token();
        let routes = routes.clone();
        tracker.spawn(async move {
            use warp::hyper::service::Service as _;
            let inner = hyper_util::service::TowerToHyperService::new(warp::service(routes));
            let handle = ConnHandle(conn_token.clone());
            let svc = warp::hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(handle.clone());
                inner.call(req)
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "consul-dev: connection ended with an error");
                    }
                }
                // Dropping the connection future closes the socket without a response.
                _ = conn_token.cancelled() => {}
            }
        });
    }
}

fn routes(
    shared: Arc<Shared>,
    role: Listener,
) -> impl Filter<Extract = (Resp,), Error = Infallible> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .map(move || shared.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ConnHandle>())
        .and(warp::body::stream())
        .then(
            move |shared: Arc<Shared>,
                  method,
                  path: warp::path::FullPath,
                  query: String,
                  headers,
                  conn,
                  body| async move {
                handle(
                    shared,
                    role,
                    method,
                    path.as_str().to_string(),
                    query,
                    headers,
                    conn,
                    body,
                )
                .await
            },
        )
        .or(warp::any().map(|| text(StatusCode::BAD_REQUEST, "Bad request")))
        .unify()
}

// === dispatch ===

#[allow(clippy::too_many_arguments)]
async fn handle<S, B>(
    shared: Arc<Shared>,
    role: Listener,
    method: Method,
    raw_path: String,
    raw_query: String,
    headers: HeaderMap,
    conn: Option<ConnHandle>,
    body: S,
) -> Resp
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let path = percent_decode(&raw_path);
    let query: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let is_admin = path.starts_with("/_dev/");
    let limit = if path.starts_with("/v1/kv/") {
        MAX_KV_VALUE_BYTES + 1
    } else {
        shared.cfg.max_body_bytes
    };
    let is_kv_put = path.starts_with("/v1/kv/") && method == Method::PUT;
    let body = match read_body(body, limit).await {
        Ok(b) => b,
        Err(_) if is_kv_put => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "Request body too large, max size: {MAX_KV_VALUE_BYTES} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size."
                ),
            );
        }
        Err(resp) => return resp,
    };
    let req = Req {
        method,
        path,
        query,
        headers,
        body,
    };
    if is_admin {
        return admin(&shared, &req);
    }
    shared.count_request(role, req.method.as_str(), &req.path);
    // A restarting agent (fault `agent/restart`) does not answer at all. Only the local agent
    // restarts: the remote listener is another agent of the datacenter.
    if role == Listener::Local && shared.agent_down() {
        return refuse(conn.as_ref()).await;
    }
    if role == Listener::Remote && req.path.starts_with("/v1/agent/") {
        // Another agent's `/v1/agent/` endpoints act on *its* node, which this single-node
        // stand-in does not have: refuse clearly rather than act on the local node's state.
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "consul-dev: the remote listener plays another agent of the datacenter; its /v1/agent/ endpoints are not modelled (use the local listener)",
        );
    }
    // Faults, in the order a client would meet them: the connection is dropped, the agent is
    // paused, the agent answers errors.
    if let Some(conn) = &conn
        && should_drop(&shared.faults(), &req)
    {
        tracing::debug!(path = %req.path, "consul-dev: dropping a request (fault)");
        conn.0.cancel();
        // The connection task drops this future together with the connection.
        return std::future::pending().await;
    }
    if let Some(resp) = honour_pause(&shared).await {
        return resp;
    }
    let injected = {
        let mut f = shared.faults();
        match f.errors {
            Some((status, n)) if n > 0 && req.path.starts_with(f.errors_path.as_str()) => {
                f.errors = if n > 1 { Some((status, n - 1)) } else { None };
                Some((status, f.errors_message.clone()))
            }
            _ => None,
        }
    };
    if let Some((status, message)) = injected {
        let msg = message.unwrap_or_else(|| {
            match status {
                429 => "rate limit exceeded (injected fault)",
                503 => "No cluster leader (injected fault)",
                _ => "injected fault",
            }
            .to_string()
        });
        let mut resp = text(status_code(status), &msg);
        if msg.contains("No cluster leader") {
            resp.headers_mut()
                .insert("x-consul-knownleader", HeaderValue::from_static("false"));
        }
        return resp;
    }
    let acl = shared.cfg.acl_token.is_some();
    let resp = match route(&shared, &req).await {
        Ok(r) | Err(r) => r,
    };
    // Slow answers (fault `delay`): the work is done, the answer is late.
    let delay = shared
        .faults()
        .delay
        .as_ref()
        .filter(|(_, prefix)| req.path.starts_with(prefix.as_str()))
        .map(|(d, _)| *d);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    // A request in flight when the agent went down (a parked blocking query) loses its
    // connection, as the agent's process exited.
    if role == Listener::Local && shared.agent_down() {
        return refuse(conn.as_ref()).await;
    }
    // A request that was in flight (e.g. a parked blocking query) when the agent got paused
    // is held or refused too, as a paused Consul would.
    if let Some(resp) = honour_pause(&shared).await {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let mut resp = http::Response::from_parts(parts, body);
    resp.headers_mut().insert(
        "x-consul-default-acl-policy",
        HeaderValue::from_static(if acl { "deny" } else { "allow" }),
    );
    resp
}

/// Closes the connection without an answer (a stopped agent); 503 when there is no connection
/// handle to close.
async fn refuse(conn: Option<&ConnHandle>) -> Resp {
    match conn {
        Some(c) => {
            c.0.cancel();
            // The connection task drops this future together with the connection.
            std::future::pending().await
        }
        None => text(StatusCode::SERVICE_UNAVAILABLE, "agent restarting"),
    }
}

/// While paused: `hang` waits for the resume, `unavailable` answers 503.
async fn honour_pause(shared: &Shared) -> Option<Resp> {
    loop {
        let mut rx = shared.faults_changed.subscribe();
        let pause = shared.faults().pause;
        match pause {
            None => return None,
            Some(PauseMode::Unavailable) => {
                return Some(text(StatusCode::SERVICE_UNAVAILABLE, "No cluster leader"));
            }
            Some(PauseMode::Hang) => {
                if rx.changed().await.is_err() {
                    return Some(text(StatusCode::SERVICE_UNAVAILABLE, "agent shutting down"));
                }
            }
        }
    }
}

fn should_drop(f: &Faults, req: &Req) -> bool {
    if f.drop_sessions.is_empty() && f.drop_tokens.is_empty() {
        return false;
    }
    if let Some(t) = req.token()
        && f.drop_tokens.contains(&t)
    {
        return true;
    }
    f.drop_sessions.iter().any(|s| {
        req.path.contains(s.as_str())
            || req.query.iter().any(|(_, v)| v == s)
            || (!req.body.is_empty() && req.body.windows(s.len().max(1)).any(|w| w == s.as_bytes()))
    })
}

fn check_acl(shared: &Shared, req: &Req) -> Result<(), Resp> {
    let Some(expected) = &shared.cfg.acl_token else {
        return Ok(());
    };
    if req.path.starts_with("/v1/status/") {
        return Ok(());
    }
    match req.token() {
        None => Err(text(StatusCode::FORBIDDEN, "Permission denied")),
        Some(t)
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                t.as_bytes(),
                expected.as_bytes(),
            )) =>
        {
            Ok(())
        }
        Some(_) => Err(text(StatusCode::FORBIDDEN, "ACL not found")),
    }
}

fn method_not_allowed(req: &Req) -> Resp {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {} not allowed", req.method),
    )
}

fn get_only(req: &Req) -> Result<(), Resp> {
    if req.method == Method::GET || req.method == Method::HEAD {
        Ok(())
    } else {
        Err(method_not_allowed(req))
    }
}

#[cfg(test)]
mod unit;
