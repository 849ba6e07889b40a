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

// === request ===

/// A parsed request.
struct Req {
    method: Method,
    /// Percent-decoded path.
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    /// Presence flag: any value counts (`?recurse=false` is a recurse).
    fn has(&self, k: &str) -> bool {
        self.query.iter().any(|(n, _)| n == k)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn token(&self) -> Option<String> {
        if let Some(t) = self
            .headers
            .get("x-consul-token")
            .and_then(|v| v.to_str().ok())
        {
            return Some(t.to_string());
        }
        if let Some(t) = self
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return Some(t.trim().to_string());
        }
        self.get("token").map(str::to_string)
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept literally, as Go's path handling does for
/// raw paths it cannot decode is not reached here: hyper already rejected malformed URIs).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_body<S, B>(body: S, limit: usize) -> Result<Bytes, Resp>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            text(
                StatusCode::BAD_REQUEST,
                &format!("Failed to read request body: {e}"),
            )
        })?;
        while chunk.has_remaining() {
            let part = chunk.chunk();
            if out.len() + part.len() > limit {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("Request body too large, max size: {limit} bytes"),
                ));
            }
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

// === responses ===

fn text(status: StatusCode, body: &str) -> Resp {
    let mut resp = http::Response::new(body.as_bytes().to_vec());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.into_response()
}

fn status_code(n: u16) -> StatusCode {
    StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn state_error(e: &StateError) -> Resp {
    text(status_code(e.status()), &e.to_string())
}

fn json_resp(status: StatusCode, v: &Value, pretty: bool) -> Resp {
    let body = if pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    }
    .unwrap_or_else(|_| b"null".to_vec());
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.into_response()
}

fn empty_ok() -> Resp {
    http::Response::new(Vec::new()).into_response()
}

/// Adds `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`.
fn with_meta(mut resp: Resp, index: u64) -> Resp {
    let h = resp.headers_mut();
    h.insert("x-consul-index", HeaderValue::from(index));
    h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    resp
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

async fn route(shared: &Arc<Shared>, req: &Req) -> Result<Resp, Resp> {
    check_acl(shared, req)?;
    if let Some(dc) = req.get("dc")
        && !dc.is_empty()
        && dc != shared.cfg.datacenter
    {
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
        ));
    }
    let path = req.path.as_str();
    let pretty = req.has("pretty");
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return kv(shared, req, key).await;
    }
    if path == "/v1/kv" {
        return kv(shared, req, "").await;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = &req.method;
    match segs.as_slice() {
        ["v1", "txn"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            txn(shared, req, pretty)
        }
        ["v1", "session", "create"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let create = wire::decode_session_create(&req.body)
                .map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            let now = now();
            let id = shared
                .mutate(|st| st.session_create(create, now))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(StatusCode::OK, &json!({"ID": id}), pretty))
        }
        ["v1", "session", "renew", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            let s = shared
                .mutate(|st| st.session_renew(id, now))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(
                StatusCode::OK,
                &json!([wire::session_json(&s)]),
                pretty,
            ))
        }
        ["v1", "session", "destroy", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            let ok = shared.mutate(|st| st.session_destroy(id, now));
            Ok(json_resp(StatusCode::OK, &json!(ok), pretty))
        }
        ["v1", "session", "info", id] => {
            get_only(req)?;
            let id = id.to_string();
            blocking_json(shared, req, move |st| {
                let (s, idx) = st.session_info(&id);
                (
                    Value::Array(s.into_iter().map(wire::session_json).collect()),
                    idx,
                )
            })
            .await
        }
        ["v1", "session", "list"] => {
            get_only(req)?;
            blocking_json(shared, req, |st| {
                let (s, idx) = st.session_list();
                (
                    Value::Array(s.into_iter().map(wire::session_json).collect()),
                    idx,
                )
            })
            .await
        }
        ["v1", "session", "node", node] => {
            get_only(req)?;
            let node = node.to_string();
            blocking_json(shared, req, move |st| {
                let (s, idx) = st.session_list();
                (
                    Value::Array(
                        s.into_iter()
                            .filter(|s| s.node == node)
                            .map(wire::session_json)
                            .collect(),
                    ),
                    idx,
                )
            })
            .await
        }
        ["v1", "agent", "service", "register"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let mut reg = wire::decode_service_registration(&req.body)
                .map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            reg.replace_existing_checks = req.has("replace-existing-checks");
            let now = now();
            shared
                .mutate(|st| st.register_service(reg, now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        ["v1", "agent", "service", "deregister", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            shared.mutate(|st| st.deregister_service(id, now));
            Ok(empty_ok())
        }
        ["v1", "agent", "services"] => {
            get_only(req)?;
            let st = shared.state();
            let map: serde_json::Map<String, Value> = st
                .services()
                .map(|s| {
                    (
                        s.id.clone(),
                        wire::agent_service_json(s, &shared.cfg.datacenter),
                    )
                })
                .collect();
            Ok(json_resp(StatusCode::OK, &Value::Object(map), pretty))
        }
        ["v1", "agent", "service", id] => {
            get_only(req)?;
            agent_service(shared, req, id).await
        }
        ["v1", "agent", "checks"] => {
            get_only(req)?;
            let st = shared.state();
            let node = st.config().node.clone();
            let map: serde_json::Map<String, Value> = st
                .checks()
                .map(|c| (c.id.clone(), wire::check_json(c, &node)))
                .collect();
            Ok(json_resp(StatusCode::OK, &Value::Object(map), pretty))
        }
        [
            "v1",
            "agent",
            "check",
            verb @ ("pass" | "warn" | "fail"),
            id,
        ] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let status = match *verb {
                "pass" => Status::Passing,
                "warn" => Status::Warning,
                _ => Status::Critical,
            };
            let note = req.get("note").unwrap_or("").to_string();
            let now = now();
            shared
                .mutate(|st| st.update_ttl_check(id, status, &note, now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        ["v1", "agent", "check", "register"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let (def, sid) = wire::decode_check_registration(&req.body)
                .map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            let now = now();
            shared
                .mutate(|st| st.register_check(def, sid.as_deref(), now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        ["v1", "agent", "check", "deregister", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            shared.mutate(|st| st.deregister_check(id, now));
            Ok(empty_ok())
        }
        ["v1", "agent", "check", "update", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let v: Value = serde_json::from_slice(&req.body).map_err(|e| {
                text(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {e}"),
                )
            })?;
            let status_text = v.get("Status").and_then(Value::as_str).unwrap_or("");
            let Some(status) = Status::parse(status_text) else {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid check status: '{status_text}'"),
                ));
            };
            let output = v
                .get("Output")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let now = now();
            shared
                .mutate(|st| st.update_ttl_check(id, status, &output, now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        [
            "v1",
            "agent",
            "health",
            "service",
            by @ ("id" | "name"),
            what,
        ] => {
            get_only(req)?;
            agent_health(shared, req, by == &"id", what)
        }
        ["v1", "health", "node", node] => {
            get_only(req)?;
            let node = node.to_string();
            blocking_json(shared, req, move |st| {
                let cfg_node = st.config().node.clone();
                let list: Vec<Value> = if node == cfg_node {
                    std::iter::once(st.serf_check())
                        .chain(st.checks().cloned())
                        .map(|c| wire::check_json(&c, &cfg_node))
                        .collect()
                } else {
                    Vec::new()
                };
                (Value::Array(list), st.catalog_index())
            })
            .await
        }
        ["v1", "agent", "self"] => {
            get_only(req)?;
            let st = shared.state();
            let cfg = st.config();
            Ok(json_resp(
                StatusCode::OK,
                &json!({
                    "Config": {"Datacenter": cfg.datacenter, "NodeName": cfg.node, "NodeID": cfg.node_id, "Server": true, "Version": "1.16.6-wafleet-dev"},
                    "Member": {"Name": cfg.node, "Addr": cfg.address, "Status": 1},
                }),
                pretty,
            ))
        }
        ["v1", "health", "service", name] => {
            get_only(req)?;
            health_service(shared, req, name).await
        }
        ["v1", "health", "state", state] => {
            get_only(req)?;
            let wanted = match *state {
                "any" => None,
                s => match Status::parse(s) {
                    Some(st) => Some(st),
                    None => return Err(text(StatusCode::BAD_REQUEST, "Invalid state")),
                },
            };
            blocking_json(shared, req, move |st| {
                let node = st.config().node.clone();
                let list: Vec<Value> = std::iter::once(st.serf_check())
                    .chain(st.checks().cloned())
                    .filter(|c| wanted.is_none_or(|w| c.status == w))
                    .map(|c| wire::check_json(&c, &node))
                    .collect();
                (Value::Array(list), st.catalog_index())
            })
            .await
        }
        ["v1", "health", "checks", name] => {
            get_only(req)?;
            let name = name.to_string();
            blocking_json(shared, req, move |st| {
                let node = st.config().node.clone();
                let (_, idx) = st.health_service(&name);
                let list: Vec<Value> = st
                    .checks()
                    .filter(|c| c.service_name == name)
                    .map(|c| wire::check_json(c, &node))
                    .collect();
                (Value::Array(list), idx)
            })
            .await
        }
        ["v1", "catalog", "services"] => {
            get_only(req)?;
            blocking_json(shared, req, |st| {
                let (map, idx) = st.catalog_services();
                (json!(map), idx)
            })
            .await
        }
        ["v1", "catalog", "service", name] => {
            get_only(req)?;
            let name = name.to_string();
            let tags: Vec<String> = req.all("tag").into_iter().map(str::to_string).collect();
            blocking_json(shared, req, move |st| {
                let (entries, idx) = st.health_service(&name);
                let cfg = st.config();
                let list: Vec<Value> = entries
                    .iter()
                    .filter(|e| tags.iter().all(|t| e.service.tags.contains(t)))
                    .map(|e| {
                        let s = &e.service;
                        json!({
                            "ID": cfg.node_id, "Node": cfg.node, "Address": cfg.address,
                            "Datacenter": cfg.datacenter,
                            "TaggedAddresses": {"lan": cfg.address, "wan": cfg.address},
                            "NodeMeta": {},
                            "ServiceID": s.id, "ServiceName": s.name, "ServiceTags": s.tags,
                            "ServiceAddress": s.address, "ServicePort": s.port,
                            "ServiceMeta": s.meta, "ServiceTaggedAddresses": {},
                            "ServiceEnableTagOverride": s.enable_tag_override,
                            "ServiceWeights": {"Passing": s.weights.0, "Warning": s.weights.1},
                            "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
                        })
                    })
                    .collect();
                (Value::Array(list), idx)
            })
            .await
        }
        ["v1", "catalog", "datacenters"] => {
            get_only(req)?;
            Ok(json_resp(
                StatusCode::OK,
                &json!([shared.cfg.datacenter]),
                pretty,
            ))
        }
        ["v1", "catalog", "nodes"] => {
            get_only(req)?;
            let st = shared.state();
            let idx = st.catalog_index();
            let node = wire::node_json(&st);
            Ok(with_meta(
                json_resp(StatusCode::OK, &json!([node]), pretty),
                idx,
            ))
        }
        ["v1", "status", "leader"] => {
            Ok(json_resp(StatusCode::OK, &json!("127.0.0.1:8300"), pretty))
        }
        ["v1", "status", "peers"] => Ok(json_resp(
            StatusCode::OK,
            &json!(["127.0.0.1:8300"]),
            pretty,
        )),
        _ => Err(text(StatusCode::NOT_FOUND, "404 page not found")),
    }
}

fn get_only(req: &Req) -> Result<(), Resp> {
    if req.method == Method::GET || req.method == Method::HEAD {
        Ok(())
    } else {
        Err(method_not_allowed(req))
    }
}

// === blocking queries ===

/// `index` and `wait` of a blocking query.
struct Blocking {
    min_index: u64,
    wait: Duration,
}

fn parse_blocking(shared: &Shared, req: &Req) -> Result<Blocking, Resp> {
    let wait = match req.get("wait") {
        None | Some("") => shared.cfg.default_wait,
        Some(w) => parse_go_duration(w)
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Invalid wait time"))?
            .min(shared.cfg.max_wait),
    };
    let min_index = match req.get("index") {
        None | Some("") => 0,
        Some(i) => i
            .parse::<u64>()
            .map_err(|_| text(StatusCode::BAD_REQUEST, "Invalid index"))?,
    };
    Ok(Blocking { min_index, wait })
}

/// Runs `query` until its index exceeds the request's `index` or the wait (plus up to
/// wait/16 of jitter) expires; returns the result and the index to report (lowered once when
/// the `index-backwards` fault is armed).
async fn block_on<T>(
    shared: &Shared,
    req: &Req,
    query: impl Fn(&State) -> (T, u64),
) -> Result<(T, u64), Resp> {
    let b = parse_blocking(shared, req)?;
    let jitter_ms = u64::try_from(b.wait.as_millis() / 16).unwrap_or(0);
    let jitter = Duration::from_millis(if jitter_ms > 0 {
        rand::random_range(0..=jitter_ms)
    } else {
        0
    });
    let deadline = tokio::time::Instant::now() + b.wait + jitter;
    let mut changed = shared.changed.subscribe();
    let mut faults = shared.faults_changed.subscribe();
    loop {
        changed.borrow_and_update();
        faults.borrow_and_update();
        let (value, idx) = query(&shared.state());
        let backwards = {
            let mut f = shared.faults();
            match &f.index_backwards {
                Some(prefix) if req.path.starts_with(prefix.as_str()) => {
                    f.index_backwards = None;
                    true
                }
                _ => false,
            }
        };
        if backwards {
            return Ok((value, idx / 2));
        }
        if b.min_index == 0 || idx > b.min_index || tokio::time::Instant::now() >= deadline {
            return Ok((value, idx));
        }
        drop(value);
        let _parked = Parked::new(&shared.parked);
        tokio::select! {
            r = changed.changed() => { if r.is_err() { return Ok((query(&shared.state()).0, idx)); } }
            r = faults.changed() => { if r.is_err() { return Ok((query(&shared.state()).0, idx)); } }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Counts a parked blocking query for as long as it lives (also when the request is dropped).
struct Parked<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Parked<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Parked(counter)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn blocking_json(
    shared: &Shared,
    req: &Req,
    query: impl Fn(&State) -> (Value, u64),
) -> Result<Resp, Resp> {
    let (v, idx) = block_on(shared, req, query).await?;
    Ok(with_meta(
        json_resp(StatusCode::OK, &v, req.has("pretty")),
        idx,
    ))
}

// === KV ===

/// Parses `flags`/`cas` like Go's `strconv.ParseUint`; Consul returns that error as is, so a
/// bad value is a 500 with Go's text (an empty value is an error too).
fn parse_u64(req: &Req, name: &str) -> Result<Option<u64>, Resp> {
    let Some(v) = req.get(name) else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(n) if !v.starts_with('+') => Ok(Some(n)),
        _ => {
            let why = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("strconv.ParseUint: parsing {v:?}: {why}"),
            ))
        }
    }
}

/// Consul's `conflictingFlags` answer: the query re-encoded with sorted keys, like Go's
/// `url.Values.Encode`.
fn conflicting_flags(req: &Req) -> Resp {
    let mut pairs: Vec<(&str, &str)> = req
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    text(
        StatusCode::BAD_REQUEST,
        &format!("Conflicting flags: {encoded}\n"),
    )
}

async fn kv(shared: &Arc<Shared>, req: &Req, key: &str) -> Result<Resp, Resp> {
    // Consul's CVE-2025-11392 fix refuses traversal sequences in the path.
    if key.contains("../") || key.contains("..\\") || key.split('/').any(|s| s == "..") {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "URL path contains invalid traversal sequence",
        ));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(text(StatusCode::BAD_REQUEST, "Invalid key name"));
    }
    let pretty = req.has("pretty");
    match req.method {
        Method::GET | Method::HEAD => {
            if req.has("keys") {
                let sep = req
                    .get("separator")
                    .or_else(|| req.get("seperator"))
                    .map(str::to_string);
                let prefix = key.to_string();
                let (keys, idx) =
                    block_on(shared, req, |st| st.kv_keys(&prefix, sep.as_deref())).await?;
                if keys.is_empty() && !prefix.is_empty() {
                    return Err(with_meta(text(StatusCode::NOT_FOUND, ""), idx));
                }
                return Ok(with_meta(
                    json_resp(StatusCode::OK, &json!(keys), pretty),
                    idx,
                ));
            }
            if req.has("recurse") {
                let prefix = key.to_string();
                let (list, idx) = block_on(shared, req, |st| {
                    let (entries, idx) = st.kv_list(&prefix);
                    (
                        entries
                            .into_iter()
                            .map(|e| wire::kv_json(e, true))
                            .collect::<Vec<_>>(),
                        idx,
                    )
                })
                .await?;
                if list.is_empty() {
                    return Err(with_meta(text(StatusCode::NOT_FOUND, ""), idx));
                }
                return Ok(with_meta(
                    json_resp(StatusCode::OK, &Value::Array(list), pretty),
                    idx,
                ));
            }
            if key.is_empty() {
                return Err(text(StatusCode::BAD_REQUEST, "Missing key name"));
            }
            let k = key.to_string();
            let (entry, idx) = block_on(shared, req, |st| {
                let (e, idx) = st.kv_get(&k);
                (e.cloned(), idx)
            })
            .await?;
            let Some(entry) = entry else {
                return Err(with_meta(text(StatusCode::NOT_FOUND, ""), idx));
            };
            if req.has("raw") {
                let mut resp = http::Response::new(entry.value.clone());
                let h = resp.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                h.insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    "content-security-policy",
                    HeaderValue::from_static("sandbox"),
                );
                return Ok(with_meta(resp.into_response(), idx));
            }
            Ok(with_meta(
                json_resp(
                    StatusCode::OK,
                    &json!([wire::kv_json(&entry, true)]),
                    pretty,
                ),
                idx,
            ))
        }
        Method::PUT => {
            let modes = ["cas", "acquire", "release"]
                .iter()
                .filter(|f| req.has(f))
                .count();
            if key.is_empty() {
                return Err(text(StatusCode::BAD_REQUEST, "Missing key name"));
            }
            if modes > 1 {
                return Err(conflicting_flags(req));
            }
            let flags = parse_u64(req, "flags")?.unwrap_or(0);
            let mode = if req.has("cas") {
                PutMode::Cas(parse_u64(req, "cas")?.unwrap_or(0))
            } else if req.has("acquire") {
                PutMode::Acquire(req.get("acquire").unwrap_or("").to_string())
            } else if req.has("release") {
                PutMode::Release(req.get("release").unwrap_or("").to_string())
            } else {
                PutMode::Set
            };
            let value = req.body.to_vec();
            let now = now();
            let ok = shared
                .mutate(|st| st.kv_put(key, value, flags, mode, now))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(StatusCode::OK, &json!(ok), pretty))
        }
        Method::DELETE => {
            if req.has("recurse") && req.has("cas") {
                return Err(conflicting_flags(req));
            }
            let mode = if req.has("recurse") {
                DeleteMode::Tree
            } else if req.has("cas") {
                DeleteMode::Cas(parse_u64(req, "cas")?.unwrap_or(0))
            } else {
                DeleteMode::Single
            };
            let ok = shared
                .mutate(|st| st.kv_delete(key, mode))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(StatusCode::OK, &json!(ok), pretty))
        }
        _ => Err(method_not_allowed(req)),
    }
}

fn txn(shared: &Arc<Shared>, req: &Req, pretty: bool) -> Result<Resp, Resp> {
    let ops =
        wire::decode_txn(&req.body).map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
    if ops.len() > wire::MAX_TXN_OPS {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Transaction contains too many operations ({} > {})",
                ops.len(),
                wire::MAX_TXN_OPS
            ),
        ));
    }
    let now = now();
    match shared.mutate(|st| st.txn(&ops, now)) {
        Ok(results) => Ok(json_resp(
            StatusCode::OK,
            &wire::txn_results_json(&results),
            pretty,
        )),
        Err(errors) => Err(json_resp(
            StatusCode::CONFLICT,
            &json!({
                "Results": Value::Null,
                "Errors": errors.iter().map(|e| json!({"OpIndex": e.op_index, "What": e.what})).collect::<Vec<_>>(),
            }),
            pretty,
        )),
    }
}

// === health and agent service ===

/// Go's `strconv.ParseBool`, with a bare `?passing` meaning true.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "" | "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

async fn health_service(shared: &Arc<Shared>, req: &Req, name: &str) -> Result<Resp, Resp> {
    let passing = match req.get("passing") {
        None => false,
        Some(v) => parse_go_bool(v)
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"))?,
    };
    let expr = match req.get("filter") {
        None | Some("") => None,
        Some(f) => {
            Some(filter::parse(f).map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?)
        }
    };
    let tags: Vec<String> = req.all("tag").into_iter().map(str::to_string).collect();
    let name = name.to_string();
    blocking_json(shared, req, move |st| {
        let (entries, idx) = st.health_service(&name);
        let cfg = st.config();
        let node = wire::node_json(st);
        let list: Vec<Value> = entries
            .iter()
            .filter(|e| !passing || e.checks.iter().all(|c| c.status == Status::Passing))
            .filter(|e| tags.iter().all(|t| e.service.tags.contains(t)))
            .filter(|e| {
                expr.as_ref()
                    .is_none_or(|x| filter::matches(x, e, &cfg.node, &cfg.address, &cfg.datacenter))
            })
            .map(|e| wire::health_entry_json(e, &node, &cfg.node))
            .collect();
        (Value::Array(list), idx)
    })
    .await
}

/// `GET /v1/agent/service/<id>`: hash-based blocking (`?hash=` + `wait`), as Consul's
/// agent-local endpoints do; 404 `unknown service ID` when absent.
async fn agent_service(shared: &Arc<Shared>, req: &Req, id: &str) -> Result<Resp, Resp> {
    let b = parse_blocking(shared, req)?;
    let want_hash = req.get("hash").map(str::to_string);
    let deadline = tokio::time::Instant::now() + b.wait;
    let mut changed = shared.changed.subscribe();
    loop {
        changed.borrow_and_update();
        let v = {
            let st = shared.state();
            st.service(id)
                .map(|s| wire::agent_service_json(s, &shared.cfg.datacenter))
        };
        let Some(v) = v else {
            return Err(text(
                StatusCode::NOT_FOUND,
                &format!("unknown service ID: {id}"),
            ));
        };
        let hash = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(v.to_string().as_bytes())[..8])
        };
        let unchanged = want_hash.as_deref() == Some(hash.as_str());
        if !unchanged || tokio::time::Instant::now() >= deadline {
            let mut resp = json_resp(StatusCode::OK, &v, req.has("pretty"));
            if let Ok(h) = HeaderValue::from_str(&hash) {
                resp.headers_mut().insert("x-consul-contenthash", h);
            }
            return Ok(resp);
        }
        tokio::select! {
            r = changed.changed() => { if r.is_err() { return Err(text(StatusCode::SERVICE_UNAVAILABLE, "agent shutting down")); } }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// `GET /v1/agent/health/service/{id,name}/<x>[?format=text]`: the instance's aggregated
/// status (its own checks) as 200 passing / 429 warning / 503 critical, 404 when unknown.
fn agent_health(shared: &Shared, req: &Req, by_id: bool, what: &str) -> Result<Resp, Resp> {
    let st = shared.state();
    let dc = &shared.cfg.datacenter;
    let node = st.config().node.clone();
    let entries: Vec<(Status, Value)> = st
        .services()
        .filter(|s| if by_id { s.id == what } else { s.name == what })
        .map(|s| {
            let checks: Vec<_> = st.checks().filter(|c| c.service_id == s.id).collect();
            let status = checks
                .iter()
                .map(|c| c.status)
                .max()
                .unwrap_or(Status::Passing);
            let v = json!({
                "AggregatedStatus": status.as_str(),
                "Service": wire::agent_service_json(s, dc),
                "Checks": checks.iter().map(|c| wire::check_json(c, &node)).collect::<Vec<_>>(),
            });
            (status, v)
        })
        .collect();
    drop(st);
    if entries.is_empty() {
        let msg = if by_id {
            format!("ServiceId {what} not found")
        } else {
            format!("ServiceName {what} Not Found")
        };
        return Err(text(StatusCode::NOT_FOUND, &msg));
    }
    let worst = entries
        .iter()
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(Status::Passing);
    let code = match worst {
        Status::Passing => StatusCode::OK,
        Status::Warning => StatusCode::TOO_MANY_REQUESTS,
        Status::Critical => StatusCode::SERVICE_UNAVAILABLE,
    };
    if req.get("format") == Some("text") {
        return Ok(text(code, worst.as_str()));
    }
    let body = if by_id {
        entries
            .into_iter()
            .map(|(_, v)| v)
            .next()
            .unwrap_or(Value::Null)
    } else {
        Value::Array(entries.into_iter().map(|(_, v)| v).collect())
    };
    Ok(json_resp(code, &body, req.has("pretty")))
}

// === fault injection ===

fn admin(shared: &Shared, req: &Req) -> Resp {
    let body: wire::FaultBody = if req.body.iter().all(u8::is_ascii_whitespace) {
        wire::FaultBody::default()
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {e}"),
                );
            }
        }
    };
    let write = req.method == Method::POST || req.method == Method::PUT;
    let ok = || json_resp(StatusCode::OK, &json!(true), false);
    match (req.path.as_str(), &req.method) {
        ("/_dev/faults", &Method::DELETE) | ("/_dev/faults/clear", _)
            if req.method != Method::GET =>
        {
            let mut rejoin = false;
            shared.update_faults(|f| {
                rejoin = f.rejoin;
                *f = Faults::default();
            });
            // A cleared restart ends now: a node that left joins again, a failed one is alive.
            shared.agent_back(rejoin);
            ok()
        }
        ("/_dev/faults", &Method::GET) => {
            let f = shared.faults().clone();
            json_resp(
                StatusCode::OK,
                &json!({
                    "pause": f.pause.map(|p| match p { PauseMode::Hang => "hang", PauseMode::Unavailable => "unavailable" }),
                    "drop_sessions": f.drop_sessions,
                    "drop_tokens": f.drop_tokens,
                    "index_backwards": f.index_backwards,
                    "errors": f.errors.map(|(s, n)| json!({"status": s, "count": n, "path": f.errors_path})),
                    "delay": f.delay.as_ref().map(|(d, p)| json!({"ms": u64::try_from(d.as_millis()).unwrap_or(u64::MAX), "path": p})),
                    "agent_down_ms": f.down_until.map(|u| u64::try_from(u.saturating_duration_since(now()).as_millis()).unwrap_or(u64::MAX)),
                    "serf_critical": shared.state().serf_critical(&shared.cfg.node),
                }),
                false,
            )
        }
        ("/_dev/faults/pause", _) if write => {
            let mode = match body.mode.as_deref() {
                None | Some("hang") => PauseMode::Hang,
                Some("unavailable") => PauseMode::Unavailable,
                Some(other) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("unknown pause mode {other:?} (hang|unavailable)"),
                    );
                }
            };
            shared.update_faults(|f| f.pause = Some(mode));
            ok()
        }
        ("/_dev/faults/resume", _) if write => {
            shared.update_faults(|f| f.pause = None);
            ok()
        }
        ("/_dev/faults/drop", _) if write => {
            if body.session.is_none() && body.token.is_none() {
                return text(
                    StatusCode::BAD_REQUEST,
                    "drop needs \"session\" or \"token\"",
                );
            }
            shared.update_faults(|f| {
                if let Some(s) = body.session.filter(|s| !s.is_empty()) {
                    f.drop_sessions.insert(s);
                }
                if let Some(t) = body.token.filter(|t| !t.is_empty()) {
                    f.drop_tokens.insert(t);
                }
            });
            ok()
        }
        ("/_dev/faults/index-backwards", _) if write => {
            shared.update_faults(|f| f.index_backwards = Some(body.path.unwrap_or_default()));
            ok()
        }
        ("/_dev/faults/errors", _) if write => {
            let status = body.status.unwrap_or(500);
            if !(400..=599).contains(&status) {
                return text(StatusCode::BAD_REQUEST, "status must be 400..=599");
            }
            let count = body.count.unwrap_or(1);
            shared.update_faults(|f| {
                f.errors = (count > 0).then_some((status, count));
                f.errors_path = body.path.unwrap_or_default();
                f.errors_message = body.message.filter(|m| !m.is_empty());
            });
            ok()
        }
        ("/_dev/faults/no-leader", _) if write => {
            // What a Consul server answers while it elects a leader: the RPC fails with
            // structs.ErrNoLeader, which the HTTP layer turns into a 500 with this text.
            let count = body.count.unwrap_or(1);
            shared.update_faults(|f| {
                f.errors = (count > 0).then_some((500, count));
                f.errors_path = body.path.unwrap_or_default();
                f.errors_message = Some("No cluster leader".into());
            });
            ok()
        }
        ("/_dev/agent/restart" | "/_dev/faults/agent-restart", _) if write => {
            let ms = body.ms.unwrap_or(0).min(10 * 60 * 1000);
            let leave = body.leave.unwrap_or(false);
            let now = now();
            let mut invalidated = 0;
            if leave {
                let node = shared.cfg.node.clone();
                invalidated = shared.mutate(|st| st.node_leave(&node, now));
            }
            shared.update_faults(|f| {
                // A restart during a restart keeps the failure detector's clock running.
                if f.down_until.is_none_or(|u| u <= now) {
                    f.down_since = Some(now);
                }
                f.down_until = Some(now + std::time::Duration::from_millis(ms));
                f.rejoin = f.rejoin || leave;
            });
            tracing::info!(ms, leave, invalidated, "consul-dev: agent restarting");
            json_resp(
                StatusCode::OK,
                &json!({"down_ms": ms, "left": leave, "sessions_invalidated": invalidated}),
                false,
            )
        }
        ("/_dev/nodes/join", _) if write => match body.node.filter(|n| valid_node_name(n)) {
            Some(node) => {
                shared.mutate(|st| st.node_join(&node));
                ok()
            }
            None => text(StatusCode::BAD_REQUEST, "join needs a valid \"node\" name"),
        },
        ("/_dev/nodes/leave", _) if write => match body.node.filter(|n| valid_node_name(n)) {
            Some(node) => {
                let now = now();
                let n = shared.mutate(|st| st.node_leave(&node, now));
                json_resp(StatusCode::OK, &json!({"sessions_invalidated": n}), false)
            }
            None => text(StatusCode::BAD_REQUEST, "leave needs a valid \"node\" name"),
        },
        ("/_dev/nodes", &Method::GET) => {
            let nodes: Vec<String> = shared.state().node_names().map(str::to_owned).collect();
            json_resp(StatusCode::OK, &json!(nodes), false)
        }
        ("/_dev/stats", &Method::GET) => {
            let by = shared
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let total: u64 = by.values().sum();
            json_resp(
                StatusCode::OK,
                &json!({"requests": total, "by_endpoint": by}),
                false,
            )
        }
        ("/_dev/stats", &Method::DELETE) => {
            shared
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            ok()
        }
        ("/_dev/faults/delay", _) if write => {
            let ms = body.ms.unwrap_or(0).min(10 * 60 * 1000);
            shared.update_faults(|f| {
                f.delay = (ms > 0).then(|| {
                    (
                        std::time::Duration::from_millis(ms),
                        body.path.unwrap_or_default(),
                    )
                });
            });
            ok()
        }
        ("/_dev/faults/forget-services", _) if write => {
            let now = now();
            shared.mutate(|st| st.forget_services(now));
            ok()
        }
        _ => text(StatusCode::NOT_FOUND, "unknown fault path"),
    }
}

/// A node name the admin paths accept: what a hostname may hold.
fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%zzb%"), "a%zzb%");
        assert_eq!(percent_decode("%C3%A7"), "ç");
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool(""), Some(true));
        assert_eq!(parse_go_bool("false"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
