//! Forwarding one request to the shard's instance and its answer back, streaming both ways.
//!
//! Small bodies (known length up to `replay_max_bytes`) are buffered so that the request can
//! be replayed: after a connect failure (with a fresh resolution) and after a `421 Misdirected
//! Request` from a worker that no longer owns the workspace. Larger or chunked bodies are
//! streamed without buffering; they can still be replayed after a connect failure, because
//! the upstream connection fails before the body is first polled. A 421 that cannot be
//! retried (streamed body) or that the retry meets again becomes `503 workspace_moving` with
//! `Retry-After`: the worker refused before acting, so the client can safely send it again,
//! and a Laravel client need not know what a 421 is.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use warp::Reply;

use crate::api::ApiError;
use crate::ids::WorkspaceId;

use super::State;

mod body;
pub(crate) use body::collect;
use body::{Body, Shared, too_large};
pub use body::{SharedBody, UpBody, Upstream, upstream_client};

/// A boxed stream of request body chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// Reading the client's body failed, or it passed the cap.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's body was larger than the route's cap.
    #[error("request body is too large")]
    TooLarge,
    /// Reading from the client failed.
    #[error("reading the request body: {0}")]
    Read(String),
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1). Typed names:
/// removing by `&str` would parse and classify each name again on every request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The common case (no `Connection` header naming others) allocates nothing.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// The request id to use: the client's `X-Request-Id` when it is sane, else a new ULID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            // A ULID is 26 ASCII characters, always a valid header value; encoded on the stack
            // so the only allocation is the header value's own.
            let mut buf = [0u8; ulid::ULID_LEN];
            let id = ulid::Ulid::new().array_to_str(&mut buf);
            HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

// === request bodies ===

// === responses ===

/// Makes a `Send` stream `Sync` (warp's streaming body asks for both) without locking: the
/// mutex is only ever reached through `&mut`.
struct SyncStream<S>(Mutex<S>);

impl<S: Stream + Unpin> Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        Pin::new(this.0.get_mut().unwrap_or_else(PoisonError::into_inner)).poll_next(cx)
    }
}

fn into_reply(
    resp: http::Response<hyper::body::Incoming>,
    rid: &HeaderValue,
) -> warp::reply::Response {
    let (parts, body) = resp.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let stream = SyncStream(Mutex::new(http_body_util::BodyDataStream::new(body)));
    let mut out = warp::reply::stream(stream).into_response();
    *out.status_mut() = parts.status;
    *out.headers_mut() = headers;
    out.headers_mut()
        .entry(&X_REQUEST_ID)
        .or_insert_with(|| rid.clone());
    out
}

// === forwarding ===

/// What the handler extracted from the client's request.
pub struct Incoming {
    /// The method.
    pub method: Method,
    /// The path (already classified as a workspace route).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The headers.
    pub headers: HeaderMap,
    /// The peer.
    pub remote: Option<SocketAddr>,
    /// The body.
    pub body: BodyStream,
}

impl Incoming {
    /// The request as hyper hands it over (the router's own accept loop, [`super::run`]).
    pub fn from_hyper(req: http::Request<hyper::body::Incoming>, remote: SocketAddr) -> Self {
        let (parts, body) = req.into_parts();
        Incoming {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            remote: Some(remote),
            body: http_body_util::BodyDataStream::new(body)
                .map(|r| r.map_err(|e| BodyError::Read(e.to_string())))
                .boxed(),
        }
    }
}

enum Attempt {
    Answer(http::Response<hyper::body::Incoming>),
    /// The connection could not be made; `refused` when the host answered with a refusal
    /// (nobody listens: the worker is restarting) rather than a timeout.
    ConnectFailed {
        addr: SocketAddr,
        refused: bool,
    },
    Timeout,
    /// No response; `reset` when the worker closed or reset the connection before any
    /// response (it died mid-request), as opposed to a protocol error.
    Failed {
        error: String,
        reset: bool,
    },
    BodyConsumed,
}

/// Whether `e`'s chain shows a refused connection (`ECONNREFUSED`).
fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    io_kind_in_chain(e).is_some_and(|k| k == std::io::ErrorKind::ConnectionRefused)
}

/// Whether `e`'s chain shows a connection closed or reset before a response.
fn is_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        cur = c.source();
    }
    io_kind_in_chain(e)
        .is_some_and(|k| matches!(k, K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe))
}

fn io_kind_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

/// Forwards a request for a workspace owned by `shard` (auth already checked).
pub async fn forward(
    state: &State,
    ws: &WorkspaceId,
    shard: u32,
    req: Incoming,
    rid: &HeaderValue,
) -> Result<warp::reply::Response, ApiError> {
    let Incoming {
        method,
        path,
        query,
        mut headers,
        remote,
        body,
    } = req;
    let cap = if path.ends_with("/messages") {
        state.config.max_media_body_bytes
    } else if method == Method::PUT && path.ends_with("/profile") {
        state.config.max_profile_body_bytes
    } else {
        state.config.max_body_bytes
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let body = match (length, chunked) {
        (Some(n), false) if n <= state.config.replay_max_bytes => {
            Body::Buffered(collect(body, cap).await?)
        }
        // HTTP/1.1 without a length or chunking has no body; HTTP/2 may omit both for a real
        // body, so only methods that carry none by convention skip reading it.
        (None, false)
            if matches!(
                method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
            ) =>
        {
            Body::Buffered(Bytes::new())
        }
        _ => Body::Streamed(Arc::new(Shared {
            slot: Mutex::new(Some(body)),
            started: AtomicBool::new(false),
            seen: AtomicU64::new(0),
            cap,
            too_large: AtomicBool::new(false),
            finished: tokio::sync::watch::channel(false).0,
        })),
    };

    let host = headers.remove(header::HOST);
    strip_hop_by_hop(&mut headers);
    headers.insert(&X_REQUEST_ID, rid.clone());
    if let Some(h) = host {
        headers.insert(&X_FORWARDED_HOST, h);
    }
    if let Some(peer) = remote {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(p) => HeaderValue::try_from(format!("{p}, {}", peer.ip())),
            None => HeaderValue::try_from(peer.ip().to_string()),
        };
        if let Ok(v) = value {
            headers.insert(&X_FORWARDED_FOR, v);
        }
    }
    let target = match &query {
        Some(q) if !q.is_empty() => PathAndQuery::try_from(format!("{path}?{q}")),
        _ => PathAndQuery::try_from(path),
    }
    .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;

    let send = |addr: SocketAddr| {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(addr.to_string())
            .path_and_query(target.clone())
            .build();
        let attempt_body = body.for_attempt();
        let headers = headers.clone();
        let method = method.clone();
        let timeout = state.config.upstream_timeout;
        let finished = body.finished();
        async move {
            let Some(b) = attempt_body else {
                return Attempt::BodyConsumed;
            };
            let mut req = http::Request::new(b);
            *req.method_mut() = method;
            *req.headers_mut() = headers;
            match uri {
                Ok(u) => *req.uri_mut() = u,
                Err(e) => {
                    return Attempt::Failed {
                        error: e.to_string(),
                        reset: false,
                    };
                }
            }
            // A streamed body may take longer to send than the timeout: the wait for the
            // answer starts when the body has been sent.
            let deadline = async {
                if let Some(mut rx) = finished {
                    let _ = rx.wait_for(|done| *done).await;
                }
                tokio::time::sleep(timeout).await;
            };
            let answer = tokio::select! {
                r = state.client.request(req) => Ok(r),
                () = deadline => Err(()),
            };
            match answer {
                Err(()) => Attempt::Timeout,
                Ok(Ok(resp)) => Attempt::Answer(resp),
                Ok(Err(e)) if e.is_connect() => Attempt::ConnectFailed {
                    addr,
                    refused: is_refused(&e),
                },
                Ok(Err(e)) => Attempt::Failed {
                    error: super::consul::error_chain(&e),
                    reset: is_reset(&e),
                },
            }
        }
    };

    let mut shard = shard;
    let mut misdirected_retry = matches!(body, Body::Buffered(_));
    let mut reconnect_retry = true;
    let mut avoid = None;
    loop {
        let addrs = state.endpoints.get(shard).await.map_err(|e| {
            tracing::warn!(shard, error = %e, "cannot resolve shard");
            unavailable(shard)
        })?;
        let addr = state
            .endpoints
            .pick(&addrs, avoid)
            .ok_or_else(|| unavailable(shard))?;
        match send(addr).await {
            Attempt::Answer(resp) if resp.status() == StatusCode::MISDIRECTED_REQUEST => {
                // The worker refused before acting on the request, so a retry is safe; its
                // answer names the owner in *its* map, which may be newer than ours.
                let named = named_owner(resp).await;
                if !misdirected_retry {
                    tracing::info!(shard, %addr, ?named, "worker answered 421 again or the body cannot be replayed");
                    return Err(moving(ws, named.unwrap_or(shard)));
                }
                misdirected_retry = false;
                tracing::info!(shard, %addr, ?named, "worker answered 421; refreshing and retrying once");
                let _ = state.endpoints.refresh(shard).await;
                // The map may have moved the workspace meanwhile: route again from scratch;
                // while ours still says `shard`, trust the worker's newer view.
                let ours = state.maps.borrow().as_ref().and_then(|m| m.owner(ws));
                shard = retry_shard(shard, ours, named);
            }
            Attempt::Answer(resp) => return Ok(into_reply(resp, rid)),
            Attempt::ConnectFailed { addr, refused } => {
                if !reconnect_retry {
                    // Refused: nobody listens there (a worker restarting in place) and the
                    // health check has not caught up yet; nothing was sent, so a retry is safe.
                    if refused {
                        return Err(refused_upstream(shard, addr));
                    }
                    return Err(bad_gateway(shard, format!("cannot connect to {addr}")));
                }
                reconnect_retry = false;
                avoid = Some(addr);
                tracing::info!(shard, %addr, "connect failed; re-resolving");
                let fresh = state.endpoints.refresh(shard).await.unwrap_or_default();
                if fresh.is_empty() {
                    return Err(unavailable(shard));
                }
            }
            Attempt::Timeout => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "shard {shard} did not answer within {:?}",
                        state.config.upstream_timeout
                    ),
                )
                .with_shard(shard));
            }
            Attempt::Failed { error, .. } if body.too_large() => {
                tracing::debug!(error = %error, "body passed the cap while streaming");
                return Err(too_large());
            }
            Attempt::Failed { error, reset } => {
                tracing::warn!(shard, %addr, error = %error, "upstream request failed");
                if reset {
                    // Closed or reset before any response: the worker died (or is
                    // restarting); the client retries after Retry-After (messages carry an
                    // Idempotency-Key for exactly this).
                    return Err(refused_upstream(shard, addr));
                }
                return Err(bad_gateway(
                    shard,
                    "the worker closed the connection".into(),
                ));
            }
            Attempt::BodyConsumed => {
                return Err(bad_gateway(
                    shard,
                    "cannot connect to the worker and the request body cannot be replayed".into(),
                ));
            }
        }
    }
}

/// Where to send the one retry after a 421 from `shard`: our map's owner when it changed,
/// else the owner the worker named, else `shard` again (after a fresh resolution).
fn retry_shard(shard: u32, ours: Option<u32>, named: Option<u32>) -> u32 {
    match (ours, named) {
        (Some(o), _) if o != shard => o,
        (_, Some(n)) => n,
        _ => shard,
    }
}

/// Reads the `shard` a worker's 421 body names (`{"error":"not_owner",…,"shard":k}`); the body
/// is a few hundred bytes, read with a cap and a deadline so a broken worker cannot stall us.
async fn named_owner(resp: http::Response<hyper::body::Incoming>) -> Option<u32> {
    const CAP: usize = 16 * 1024;
    let read = http_body_util::Limited::new(resp.into_body(), CAP).collect();
    let buf = tokio::time::timeout(std::time::Duration::from_secs(2), read)
        .await
        .ok()?
        .ok()?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&buf).ok()?;
    v.get("shard")?.as_u64().and_then(|k| u32::try_from(k).ok())
}

/// The answer when the workspace is between owners (a 421 the retry could not resolve): the
/// request was not acted on, so the client may send it again after `Retry-After`.
fn moving(ws: &WorkspaceId, shard: u32) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "workspace_moving",
        format!("workspace {ws} is moving to shard {shard}; retry shortly"),
    )
    .with_shard(shard)
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

fn unavailable(shard: u32) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shard_unavailable",
        format!("shard {shard} has no healthy instance; retry shortly"),
    )
    .with_shard(shard)
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("2"))
}

/// A refused or reset upstream: the shard's instance is restarting and the router has not yet
/// seen its health change. `503 shard_unavailable` + `Retry-After`, as when it has.
fn refused_upstream(shard: u32, addr: SocketAddr) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shard_unavailable",
        format!(
            "shard {shard}'s instance {addr} refused the connection (restarting?); retry shortly"
        ),
    )
    .with_shard(shard)
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

fn bad_gateway(shard: u32, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", message).with_shard(shard)
}

#[cfg(test)]
mod tests;
