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
use http::{Method, StatusCode};
use warp::Reply;

use crate::api::ApiError;
use crate::ids::WorkspaceId;

use super::State;

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

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), plus `host`,
/// which the client sets for the upstream.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// The request id to use: the client's `X-Request-Id` when it is sane, else a new ULID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            // A ULID is 26 ASCII characters, always a valid header value.
            HeaderValue::from_str(&ulid::Ulid::new().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

// === request bodies ===

struct Shared {
    slot: Mutex<Option<BodyStream>>,
    started: AtomicBool,
    seen: AtomicU64,
    cap: u64,
    too_large: AtomicBool,
    /// Turns true once the client's body has been read to its end: the upstream timeout
    /// counts from then, so a long upload (a profile) is not cut by it.
    finished: tokio::sync::watch::Sender<bool>,
}

/// A streamed body whose source can be handed to a second attempt if the first never read it.
struct SharedBody(Arc<Shared>);

impl Stream for SharedBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let sh = &self.0;
        sh.started.store(true, Ordering::Relaxed);
        let mut slot = sh.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(stream) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let total =
                    sh.seen.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                if total > sh.cap {
                    sh.too_large.store(true, Ordering::Relaxed);
                    *slot = None;
                    return Poll::Ready(Some(Err(BodyError::TooLarge)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                sh.finished.send_replace(true);
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// The request body, in the form that decides what may be replayed.
enum Body {
    Buffered(Bytes),
    Streamed(Arc<Shared>),
}

impl Body {
    /// A body for one attempt; `None` when a streamed body was already (partly) sent.
    fn for_attempt(&self) -> Option<reqwest::Body> {
        match self {
            Body::Buffered(b) => Some(reqwest::Body::from(b.clone())),
            Body::Streamed(sh) if !sh.started.load(Ordering::Relaxed) => {
                Some(reqwest::Body::wrap_stream(SharedBody(sh.clone())))
            }
            Body::Streamed(_) => None,
        }
    }

    /// For a streamed body: a receiver that turns true when the client's body has ended.
    fn finished(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self {
            Body::Buffered(_) => None,
            Body::Streamed(sh) => Some(sh.finished.subscribe()),
        }
    }

    fn too_large(&self) -> bool {
        matches!(self, Body::Streamed(sh) if sh.too_large.load(Ordering::Relaxed))
    }
}

/// Collects at most `cap` bytes.
pub(crate) async fn collect(mut stream: BodyStream, cap: u64) -> Result<Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        if (buf.len() + chunk.len()) as u64 > cap {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body is too large",
    )
}

// === responses ===

/// Makes a `Send` stream `Sync` (warp's streaming body asks for both) without locking: the
/// mutex is only ever reached through `&mut`.
struct SyncStream<S>(Mutex<Pin<Box<S>>>);

impl<S: Stream> Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        this.0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .poll_next(cx)
    }
}

fn into_reply(resp: reqwest::Response, rid: &HeaderValue) -> warp::reply::Response {
    let status = resp.status();
    let mut headers = resp.headers().clone();
    strip_hop_by_hop(&mut headers);
    let stream = SyncStream(Mutex::new(Box::pin(resp.bytes_stream())));
    let mut out = warp::reply::stream(stream).into_response();
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out.headers_mut()
        .entry("x-request-id")
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

enum Attempt {
    Answer(reqwest::Response),
    ConnectFailed(SocketAddr),
    Timeout,
    Failed(String),
    BodyConsumed,
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

    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.insert("x-request-id", rid.clone());
    if let Some(h) = host {
        headers.insert("x-forwarded-host", h);
    }
    if let Some(peer) = remote {
        let prior = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let value = match prior {
            Some(p) => format!("{p}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    let target = match &query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.clone(),
    };

    let send = |addr: SocketAddr| {
        let rb = state
            .client
            .request(method.clone(), format!("http://{addr}{target}"))
            .headers(headers.clone());
        let attempt_body = body.for_attempt();
        let timeout = state.config.upstream_timeout;
        let finished = body.finished();
        async move {
            let Some(b) = attempt_body else {
                return Attempt::BodyConsumed;
            };
            // A streamed body may take longer to send than the timeout: the wait for the
            // answer starts when the body has been sent.
            let deadline = async {
                if let Some(mut rx) = finished {
                    let _ = rx.wait_for(|done| *done).await;
                }
                tokio::time::sleep(timeout).await;
            };
            let answer = tokio::select! {
                r = rb.body(b).send() => Ok(r),
                () = deadline => Err(()),
            };
            match answer {
                Err(()) => Attempt::Timeout,
                Ok(Ok(resp)) => Attempt::Answer(resp),
                Ok(Err(e)) if e.is_connect() => Attempt::ConnectFailed(addr),
                Ok(Err(e)) if e.is_timeout() => Attempt::Timeout,
                Ok(Err(e)) => Attempt::Failed(super::consul::error_chain(&e)),
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
            Attempt::ConnectFailed(addr) => {
                if !reconnect_retry {
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
            Attempt::Failed(e) if body.too_large() => {
                tracing::debug!(error = %e, "body passed the cap while streaming");
                return Err(too_large());
            }
            Attempt::Failed(e) => {
                tracing::warn!(shard, %addr, error = %e, "upstream request failed");
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
async fn named_owner(mut resp: reqwest::Response) -> Option<u32> {
    const CAP: usize = 16 * 1024;
    let mut buf = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.extend_from_slice(&chunk);
            if buf.len() > CAP {
                return false;
            }
        }
        true
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), read).await {
        Ok(true) => {}
        _ => return None,
    }
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

fn bad_gateway(shard: u32, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", message).with_shard(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, vec!["authorization", "content-type"]);
    }

    #[test]
    fn a_421_is_retried_on_our_new_owner_else_the_named_one() {
        // Our map moved it: ours wins (the worker may be the stale one).
        assert_eq!(retry_shard(0, Some(2), Some(1)), 2);
        // Our map still says 0: trust the worker's newer view.
        assert_eq!(retry_shard(0, Some(0), Some(1)), 1);
        assert_eq!(retry_shard(0, None, Some(1)), 1);
        // Nothing better known: the same shard, freshly resolved.
        assert_eq!(retry_shard(0, Some(0), None), 0);
        assert_eq!(retry_shard(3, None, None), 3);
    }

    #[test]
    fn request_ids_are_propagated_or_generated() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static(""));
        assert_eq!(request_id(&h).len(), 26);
        assert_eq!(request_id(&HeaderMap::new()).len(), 26);
    }
}
