//! The steps that open a term before the ownership machine runs: the process lock and a dead
//! predecessor's session on this host, the shard's owner record in Consul, the lease recorder,
//! and the wait for the shared volume.

use std::sync::Arc;
use std::time::Duration;

use super::{OwnerSettings, Shared};
use crate::shutdown::CancellationToken;
use crate::worker::coordinator::Coordinator;

/// The shard's process lock (`owner::try_process_lock`, `None` when another live process on
/// this host holds it) and, when this process holds it, the session of this shard's previous
/// owner if that owner ran on this host and boot and is dead (its pid is gone or belongs to
/// another process): the session it may be taken over with. No session when nothing can be
/// proven (another host, a live process, no record).
pub(super) async fn dead_predecessor_session(
    shared: &Arc<Shared>,
) -> (Option<std::fs::File>, Option<String>) {
    use crate::worker::owner::{self, Liveness};
    let path = owner::shard_record_path(&shared.data, shared.shard);
    let lock_path = owner::process_lock_path(&shared.data, shared.shard);
    let found = tokio::task::spawn_blocking(move || {
        let Some(lock) = owner::try_process_lock(&lock_path)? else {
            return Ok::<_, owner::OwnerError>((None, None));
        };
        let me = owner::Identity::current()?;
        let record = owner::read::<owner::ShardRecord>(&path)?;
        Ok((
            Some(lock),
            record.map(|r| {
                let verdict = owner::liveness(&r.owner, &me, owner::start_time_of);
                (r, verdict)
            }),
        ))
    })
    .await;
    let (lock, record, liveness) = match found {
        Ok(Ok((None, _))) => {
            tracing::warn!(
                shard = shared.shard,
                "another live process of this shard runs on this host (process lock held); no takeover"
            );
            return (None, None);
        }
        Ok(Ok((lock, None))) => return (lock, None),
        Ok(Ok((lock, Some((r, l))))) => (lock, r, l),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the shard's owner record; no takeover");
            return (None, None);
        }
        Err(e) => {
            tracing::warn!(error = %e, "owner record task failed; no takeover");
            return (None, None);
        }
    };
    if record.shard != shared.shard || record.session.is_empty() {
        return (lock, None);
    }
    match liveness {
        Liveness::Dead => {
            tracing::info!(
                shard = shared.shard,
                session = %record.session,
                predecessor_pid = record.owner.pid,
                "TAKEOVER: the previous owner on this host is dead; taking over its Consul session"
            );
            (lock, Some(record.session))
        }
        other => {
            tracing::info!(shard = shared.shard, predecessor_pid = record.owner.pid, liveness = ?other, "previous owner not proven dead; opening a new session");
            (lock, None)
        }
    }
}

/// Waits until the shard's owner record names nobody who may still run browsers (no record,
/// ours, a dead owner, or an expired lease plus margin), then writes this process's record.
pub(super) async fn claim_shard_record(
    shared: &Arc<Shared>,
    coord: &Arc<dyn Coordinator>,
    settings: &OwnerSettings,
) -> Result<(), crate::worker::owner::OwnerError> {
    use crate::worker::owner::{self, Verdict};
    let path = owner::shard_record_path(&shared.data, shared.shard);
    let me = owner::Identity::current()?;
    let margin = settings.margin.as_millis() as u64;
    let mut logged = false;
    loop {
        let (p, m) = (path.clone(), me.clone());
        let record = tokio::task::spawn_blocking(move || {
            let r = owner::read::<owner::ShardRecord>(&p)?;
            let now = crate::worker::layout::now_ms();
            Ok::<_, owner::OwnerError>(owner::verdict(
                r.as_ref(),
                &m,
                now,
                margin,
                owner::start_time_of,
            ))
        })
        .await
        .map_err(|e| owner::OwnerError::Identity(e.to_string()))?;
        let verdict = match record {
            Ok(v) => v,
            // A corrupt record names nobody; the Consul lock is held, so overwrite it.
            Err(e @ owner::OwnerError::Corrupt { .. }) => {
                tracing::warn!(error = %e, "replacing a corrupt shard owner record");
                Verdict::Free
            }
            Err(e) => return Err(e),
        };
        match verdict {
            Verdict::Held { until_ms } => {
                let wait = until_ms
                    .saturating_sub(crate::worker::layout::now_ms())
                    .max(50);
                if !logged {
                    tracing::warn!(
                        shard = shared.shard,
                        wait_ms = wait,
                        "the previous owner's lease has not run out (a frozen process may still run browsers); waiting for it"
                    );
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            v => {
                if v != Verdict::Free {
                    tracing::info!(shard = shared.shard, verdict = ?v, "replacing the previous owner record");
                }
                break;
            }
        }
    }
    let record = owner::ShardRecord {
        owner: me,
        shard: shared.shard,
        session: coord.session_id(),
        lease_until_ms: crate::worker::layout::now_ms() + settings.ttl.as_millis() as u64,
        written_ms: crate::worker::layout::now_ms(),
    };
    tokio::task::spawn_blocking(move || owner::write(&path, &record))
        .await
        .map_err(|e| owner::OwnerError::Identity(e.to_string()))?
}

/// Extends the lease of the shard record every TTL/3 while the session keeps being renewed
/// (a renewal observed since the last look). Stops when the term ends or is fenced (the
/// returned guard also stops it when dropped); the lease then simply runs out.
pub(super) fn spawn_lease_recorder(
    shared: &Arc<Shared>,
    coord: &Arc<dyn Coordinator>,
    settings: &OwnerSettings,
) -> tokio_util::sync::DropGuard {
    use crate::worker::owner;
    let stop = coord.term_token().child_token();
    let guard = stop.clone().drop_guard();
    let path = owner::shard_record_path(&shared.data, shared.shard);
    let (shard, coord, ttl) = (shared.shard, coord.clone(), settings.ttl);
    let session = coord.session_id();
    tokio::spawn(async move {
        let Ok(me) = owner::Identity::current() else {
            return;
        };
        let mut seen = coord.renewals();
        let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let now = coord.renewals();
            if now == seen {
                continue;
            }
            seen = now;
            let record = owner::ShardRecord {
                owner: me.clone(),
                shard,
                session: session.clone(),
                lease_until_ms: crate::worker::layout::now_ms() + ttl.as_millis() as u64,
                written_ms: crate::worker::layout::now_ms(),
            };
            let p = path.clone();
            match tokio::task::spawn_blocking(move || owner::write(&p, &record)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "owner record lease not extended"),
                Err(e) => tracing::warn!(error = %e, "owner record task failed"),
            }
        }
    });
    guard
}

/// How often a worker held back by a missing volume looks again.
pub const VOLUME_RECHECK_SECS: u64 = 5;

/// Waits until the data directory carries the volume sentinel (see `crate::volume`); while it
/// does not, the worker stays unready with the reason published. `false` on shutdown.
pub(super) async fn volume_ok(
    shared: &Arc<Shared>,
    expect: Option<&str>,
    shutdown: &CancellationToken,
) -> bool {
    let mut logged: Option<String> = None;
    loop {
        let data = shared.data.clone();
        let want = expect.map(str::to_owned);
        // A hung NFS mount can block a read forever: check off the runtime, with a deadline.
        let check =
            tokio::task::spawn_blocking(move || crate::volume::check(&data, want.as_deref()));
        let verdict = match tokio::time::timeout(Duration::from_secs(10), check).await {
            Ok(Ok(Ok(_))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(e)) => Some(format!("volume check failed: {e}")),
            Err(_) => Some(format!(
                "reading {} timed out (hung mount?)",
                shared.data.display()
            )),
        };
        match verdict {
            None => {
                if logged.is_some() {
                    tracing::info!(data = %shared.data.display(), "shared volume present");
                }
                shared.update(|s| s.reason = None);
                return true;
            }
            Some(why) => {
                if logged.as_deref() != Some(why.as_str()) {
                    tracing::error!(data = %shared.data.display(), reason = %why, "REFUSING TO START: the data directory is not the shared volume; not taking the shard");
                    logged = Some(why.clone());
                }
                shared.update(|s| {
                    s.ready = false;
                    s.reason = Some(format!("volume: {why}"));
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(VOLUME_RECHECK_SECS)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}
