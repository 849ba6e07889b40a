//! Carrying out the ownership machine's actions as tracked tasks: lock calls on the
//! [`Coordinator`], start/stop on the host, each reporting its result back as an event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use super::Shared;
use crate::ids::WorkspaceId;
use crate::shutdown::{CancellationToken, TaskTracker};
use crate::worker::coordinator::{CoordError, Coordinator};
use crate::worker::host::WorkspaceLease;
use crate::worker::ownership::{Action, Event};

#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    action: Action,
    hand_off: bool,
    shared: &Arc<Shared>,
    coord: &Arc<dyn Coordinator>,
    leases: &mut HashMap<WorkspaceId, CancellationToken>,
    restore: &Arc<Semaphore>,
    tracker: &TaskTracker,
    tx: &mpsc::UnboundedSender<Event>,
) {
    let tx = tx.clone();
    match action {
        Action::Acquire(ws) => {
            let coord = coord.clone();
            let acquiring = shared.acquiring.clone();
            tracker.spawn(
                async move {
                    // Bounded: a worker taking a thousand workspaces must not open a thousand
                    // Consul requests at once. The semaphore is never closed (see Start).
                    let _permit = acquiring.acquire_owned().await.ok();
                    let ev = match coord.acquire_workspace(&ws).await {
                        Ok(true) => Event::Acquired(ws),
                        Ok(false) => Event::Busy(ws),
                        Err(e) => {
                            tracing::warn!(workspace = %ws, error = %e, "workspace lock");
                            // Back off so a store outage does not turn the retry into a spin.
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            Event::Busy(ws)
                        }
                    };
                    let _ = tx.send(ev);
                }
                .in_current_span(),
            );
        }
        Action::Start(ws) => {
            let token = coord.term_token().child_token();
            if let Some(old) = leases.insert(ws.clone(), token.clone()) {
                old.cancel();
            }
            let lease = WorkspaceLease::new(ws.clone(), token);
            let host = shared.host.clone();
            let restore = restore.clone();
            let messaging = shared.messaging.get().cloned();
            tracker.spawn(
                async move {
                    // The semaphore is never closed, so acquire cannot fail; if it ever did,
                    // starting without a permit is still correct, only less staggered.
                    let _permit = restore.acquire_owned().await.ok();
                    // Before anything can submit: the previous owner's queue and log.
                    if let Some(m) = &messaging
                        && let Err(e) = m.take_over(&ws).await
                    {
                        tracing::error!(workspace = %ws, error = %e, "taking over the workspace's messaging state failed");
                    }
                    if let Err(e) = host.start_workspace(&ws, lease).await {
                        tracing::error!(workspace = %ws, error = %e, "workspace start failed");
                    } else {
                        tracing::info!(workspace = %ws, "workspace started");
                    }
                    let _ = tx.send(Event::Started(ws));
                }
                .in_current_span(),
            );
        }
        Action::Stop(ws, mode) => {
            let host = shared.host.clone();
            tracker.spawn(
                async move {
                    if let Err(e) = host.stop_workspace(&ws, mode).await {
                        tracing::error!(workspace = %ws, error = %e, "workspace stop failed");
                    } else {
                        tracing::info!(workspace = %ws, ?mode, "workspace stopped");
                    }
                    let _ = tx.send(Event::Stopped(ws));
                }
                .in_current_span(),
            );
        }
        Action::Release(ws) => {
            // The lease ends before the lock is given back.
            if let Some(token) = leases.remove(&ws) {
                token.cancel();
            }
            let coord = coord.clone();
            let messaging = shared.messaging.get().cloned().filter(|_| hand_off);
            tracker.spawn(async move {
                // Under the lock still, so the next owner cannot start before the file is there.
                if let Some(m) = messaging {
                    let mut delay = Duration::from_millis(200);
                    for attempt in 1..=3 {
                        match m.hand_off(&ws).await {
                            Ok(_) => break,
                            Err(e) if attempt < 3 => {
                                tracing::warn!(workspace = %ws, attempt, error = %e, "handing off messaging state failed; retrying");
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                            Err(e) => tracing::error!(workspace = %ws, error = %e, "handing off messaging state failed; its queued messages stay in this shard's store"),
                        }
                    }
                }
                let mut delay = Duration::from_millis(200);
                for attempt in 1..=5 {
                    match coord.release_workspace(&ws).await {
                        Ok(()) => break,
                        Err(CoordError::SessionLost) => break,
                        Err(e) => {
                            tracing::warn!(workspace = %ws, attempt, error = %e, "release failed");
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                    }
                }
                let _ = tx.send(Event::Released(ws));
            }.in_current_span());
        }
    }
}
