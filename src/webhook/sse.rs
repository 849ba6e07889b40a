//! The `GET …/sessions/{s}/events` server-sent-event stream, read from the outbox.
//!
//! Every outbox event of the session is streamed (whatever its webhook delivery state) with the
//! SSE `id` set to the event id, `event` to the event name and `data` to the same envelope JSON
//! a webhook carries. A client that reconnects with `Last-Event-ID` resumes right after that
//! event (by outbox sequence; an id no longer stored falls back to ULID order). Without it the
//! stream starts with the next new event. The stream wakes on outbox commits, not by polling
//! tightly, and ends on shutdown or on a store error (the client then reconnects with its last id).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::ids::{SessionId, WorkspaceId};
use crate::store::{OutboxEvent, Store, StoreError};

/// Rows read per store query.
const BATCH: u32 = 256;

/// Safety net: re-read the outbox at least this often even if no change signal arrived.
const IDLE_RECHECK: Duration = Duration::from_secs(15);

/// The session's events as outbox rows (see the module doc). `last_event_id` is the client's
/// `Last-Event-ID` header, if any. The starting point is resolved before this returns, so a
/// fresh stream includes every event committed after the call.
pub async fn event_records(
    store: Store,
    ws: WorkspaceId,
    s: SessionId,
    last_event_id: Option<String>,
    shutdown: CancellationToken,
) -> Result<impl Stream<Item = OutboxEvent> + Send + 'static, StoreError> {
    // Subscribe before reading so no commit between a read and the wait is missed.
    let mut changes = store.outbox_changes();
    let mut cursor = store.resume_seq(&ws, &s, last_event_id.as_deref()).await?;
    Ok(async_stream::stream! {
        loop {
            let batch = match store.events_after_seq(&ws, &s, cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "event stream: reading the outbox failed");
                    return;
                }
            };
            let full = batch.len() == BATCH as usize;
            for ev in batch {
                cursor = cursor.max(ev.seq);
                yield ev;
            }
            if !full {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(IDLE_RECHECK) => {}
                }
            }
        }
    })
}

/// The same stream as warp SSE events, ready for
/// `warp::sse::reply(warp::sse::keep_alive().stream(…))` (which needs a `Sync` stream, hence
/// [`SseStream`]).
pub async fn sse_events(
    store: Store,
    ws: WorkspaceId,
    s: SessionId,
    last_event_id: Option<String>,
    shutdown: CancellationToken,
) -> Result<SseStream, StoreError> {
    use futures::StreamExt as _;
    let inner = event_records(store, ws, s, last_event_id, shutdown)
        .await?
        .map(|ev| Ok(to_sse(&ev)));
    Ok(SseStream(std::sync::Mutex::new(Box::pin(inner))))
}

type BoxedSse = Pin<Box<dyn Stream<Item = Result<warp::sse::Event, Infallible>> + Send>>;

/// The SSE stream of one session. `Send + Sync` (warp requires a `Sync` body): the inner
/// stream sits behind a mutex that is only ever reached through `&mut`, so it never blocks.
pub struct SseStream(std::sync::Mutex<BoxedSse>);

impl Stream for SseStream {
    type Item = Result<warp::sse::Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .poll_next(cx)
    }
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream").finish_non_exhaustive()
    }
}

/// One outbox row as an SSE event: `id`, `event` and the envelope as `data`.
pub fn to_sse(ev: &OutboxEvent) -> warp::sse::Event {
    warp::sse::Event::default()
        .id(ev.id.clone())
        .event(ev.event.clone())
        .data(ev.envelope.clone())
}
