//! Request bodies on their way upstream: a body is read once and kept (up to a cap) so a refused or
//! 421 attempt can be replayed to the next worker; the streaming body hyper sends, the upstream
//! client and the size-capped collection.

use super::*;

pub(super) struct Shared {
    pub(super) slot: Mutex<Option<BodyStream>>,
    pub(super) started: AtomicBool,
    pub(super) seen: AtomicU64,
    pub(super) cap: u64,
    pub(super) too_large: AtomicBool,
    /// Turns true once the client's body has been read to its end: the upstream timeout
    /// counts from then, so a long upload (a profile) is not cut by it.
    pub(super) finished: tokio::sync::watch::Sender<bool>,
}

/// A streamed body whose source can be handed to a second attempt if the first never read it.
pub struct SharedBody(Arc<Shared>);

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
pub(super) enum Body {
    Buffered(Bytes),
    Streamed(Arc<Shared>),
}

impl Body {
    /// A body for one attempt; `None` when a streamed body was already (partly) sent.
    pub(super) fn for_attempt(&self) -> Option<UpBody> {
        match self {
            Body::Buffered(b) => Some(UpBody::Full(Some(b.clone()))),
            Body::Streamed(sh) if !sh.started.load(Ordering::Relaxed) => {
                Some(UpBody::Streamed(SharedBody(sh.clone())))
            }
            Body::Streamed(_) => None,
        }
    }

    /// For a streamed body: a receiver that turns true when the client's body has ended.
    pub(super) fn finished(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self {
            Body::Buffered(_) => None,
            Body::Streamed(sh) => Some(sh.finished.subscribe()),
        }
    }

    pub(super) fn too_large(&self) -> bool {
        matches!(self, Body::Streamed(sh) if sh.too_large.load(Ordering::Relaxed))
    }
}

/// The body of an upstream request: buffered bytes (replayable, exact length known to hyper),
/// or the client's stream.
pub enum UpBody {
    /// The whole body; `None` once sent.
    Full(Option<Bytes>),
    /// Streamed from the client as it arrives.
    Streamed(SharedBody),
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            UpBody::Streamed(s) => Pin::new(s)
                .poll_next(cx)
                .map(|item| item.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, UpBody::Full(b) if b.as_ref().is_none_or(Bytes::is_empty))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Streamed(_) => SizeHint::default(),
        }
    }
}

/// The pooled keep-alive HTTP/1.1 client to the workers. hyper-util's pool directly: the
/// router already has the address, so a URL type, redirects, proxies and decoders (what
/// reqwest adds around the same pool) would be per-request work for nothing.
pub type Upstream = hyper_util::client::legacy::Client<HttpConnector, UpBody>;

/// Builds the upstream client: `TCP_NODELAY`, 2 s connect timeout, idle connections kept 60 s
/// (up to 256 per worker).
pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .build(connector)
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

pub(super) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body is too large",
    )
}
