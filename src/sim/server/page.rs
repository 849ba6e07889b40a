//! The page's websocket: one task per connection, forwarding the page's messages into the core
//! and the core's effects (queued per connection) back to the page.
//!
//! Apart from `server.rs` because it is the only long-lived per-connection task.

use super::*;

pub(super) async fn page_conn(socket: WebSocket, shared: Arc<Shared>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = shared.with(|sim, _| sim.connect());
    lock(&shared.conns).insert(id, tx);
    let span = tracing::debug_span!("sim_page", conn = id);
    async {
        tracing::debug!("page connected");
        let (mut sink, mut stream) = socket.split();
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => {
                    let _ = sink.send(Message::close()).await;
                    break;
                }
                out = rx.recv() => match out {
                    Some(Outbound::Text(s)) => {
                        if sink.send(Message::text(s)).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close) | None => {
                        let _ = sink.send(Message::close()).await;
                        break;
                    }
                },
                msg = stream.next() => match msg {
                    Some(Ok(m)) if m.is_text() => {
                        let parsed = m.to_str().map_err(|_| "not text".to_owned()).and_then(|s| {
                            serde_json::from_str::<ClientMsg>(s).map_err(|e| e.to_string())
                        });
                        match parsed {
                            Ok(cm) => shared.with(|sim, now| sim.handle(id, cm, now)),
                            Err(e) => shared.with(|sim, _| sim.protocol_error(id, e)),
                        }
                    }
                    Some(Ok(m)) if m.is_close() => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "page websocket error");
                        break;
                    }
                    None => break,
                },
            }
        }
        tracing::debug!("page disconnected");
    }
    .instrument(span)
    .await;
    lock(&shared.conns).remove(&id);
    shared.with(|sim, _| sim.disconnect(id));
}
