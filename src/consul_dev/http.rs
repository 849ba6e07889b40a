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

#[cfg(test)]
mod unit;
