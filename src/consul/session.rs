//! Sessions with renewal and fencing, and the lock helpers built on them.
//!
//! [`SessionKeeper`] creates a session, renews it at about TTL/3 (adopting a larger TTL when
//! Consul answers one) and *fences*: once the session could not be renewed for longer than
//! the fencing deadline (shorter than the TTL), or Consul says the session is gone (renew 404),
//! [`SessionKeeper::fenced`] resolves, so the owner stops every browser before anyone else can
//! take its locks (that takes at least TTL plus the lock delay). Fencing is terminal: a fenced
//! keeper never renews again; the owner starts a new session.
//!
//! **Fallback endpoints.** A renew is a server RPC: any agent or server of the datacenter
//! forwards it (`C:agent/session_endpoint.go` calls `agent.RPC("Session.Renew")`). So while the
//! local agent is away (a restart, a crash) the keeper renews through
//! [`SessionConfig::fallbacks`] — other agents or the servers — and does not reach the fencing
//! deadline. A real partition reaches none of them and fences exactly as without fallbacks.
//! The session must not depend on the local agent's `serfHealth` for this to help
//! ([`SessionConfig::node_checks`] `Some(vec![])`): the servers mark a silent agent's node
//! failed within seconds and invalidate every session that lists `serfHealth`.
//!
//! Locks are advisory KV keys taken with `?acquire=<session>` (DESIGN §3).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::watch::{Backoff, WatchOptions, WatchState, watch_key};
use super::{Client, ConsulError, PutOptions, SessionBehavior, SessionRequest};

/// How a session is created and kept.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Session name (shows in `consul operator` output).
    pub name: String,
    /// TTL (real Consul accepts 10s..=24h).
    pub ttl: Duration,
    /// What happens to held keys on invalidation.
    pub behavior: SessionBehavior,
    /// Lock delay after invalidation (0..=60s).
    pub lock_delay: Duration,
    /// Node checks; `None` = Consul's default (`serfHealth`).
    pub node_checks: Option<Vec<String>>,
    /// Renewal interval; default TTL/3 (never more than half the fencing deadline).
    pub renew_every: Option<Duration>,
    /// Fence when no renewal succeeded for this long; default 2/3 of the TTL.
    pub fence_after: Option<Duration>,
    /// Other endpoints of the same datacenter to renew through when the main client fails
    /// (refused, timed out, 5xx); tried in order after it on every renewal. Empty = none.
    pub fallbacks: Vec<Client>,
}

impl SessionConfig {
    /// A `release` session with the given name, TTL and lock delay.
    pub fn new(name: impl Into<String>, ttl: Duration, lock_delay: Duration) -> Self {
        SessionConfig {
            name: name.into(),
            ttl,
            behavior: SessionBehavior::Release,
            lock_delay,
            node_checks: None,
            renew_every: None,
            fence_after: None,
            fallbacks: Vec::new(),
        }
    }

    /// Refuses settings that cannot fence safely: a zero TTL, or a fencing deadline that is not
    /// shorter than the TTL (Consul may invalidate the session after one TTL).
    pub fn validate(&self) -> Result<(), ConsulError> {
        if self.ttl.is_zero() {
            return Err(ConsulError::InvalidRequest(
                "session TTL must be > 0".into(),
            ));
        }
        if self.fence_after_for(self.ttl) >= self.ttl {
            return Err(ConsulError::InvalidRequest(
                "the fencing deadline must be shorter than the session TTL".into(),
            ));
        }
        if self.renew_every.is_some_and(|r| r >= self.ttl) {
            return Err(ConsulError::InvalidRequest(
                "the renewal interval must be shorter than the session TTL".into(),
            ));
        }
        Ok(())
    }

    fn fence_after_for(&self, ttl: Duration) -> Duration {
        self.fence_after.unwrap_or(ttl * 2 / 3)
    }

    /// How long the endpoints in flight may take to answer a renew before the next one is asked
    /// as well: half the renewal interval, so a hung local agent leaves time for the fallbacks
    /// well before the fencing deadline.
    fn attempt_timeout_for(&self, ttl: Duration) -> Duration {
        (self.renew_every_for(ttl) / 2).max(Duration::from_millis(50))
    }

    fn renew_every_for(&self, ttl: Duration) -> Duration {
        let fence = self.fence_after_for(ttl);
        self.renew_every
            .unwrap_or(ttl / 3)
            .min(fence / 2)
            .max(Duration::from_millis(10))
    }
}

/// Why a keeper fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// No renewal succeeded within the fencing deadline (Consul unreachable, hung, dropping).
    DeadlineExceeded,
    /// Consul answered renew with 404: the session is gone (expired, destroyed, invalidated).
    SessionGone,
    /// Renewal was stopped (cancellation or [`SessionKeeper::destroy`]).
    Stopped,
}

/// A live session and its renewal task.
#[derive(Debug)]
pub struct SessionKeeper {
    client: Client,
    id: String,
    fenced: CancellationToken,
    reason: Arc<OnceLock<FenceReason>>,
    renewals: Arc<AtomicU64>,
    fallback_renewals: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl SessionKeeper {
    /// Creates the session and starts renewing it. `cancel` stops renewal (and fences).
    pub async fn start(
        client: &Client,
        config: SessionConfig,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<SessionKeeper, ConsulError> {
        config.validate()?;
        let req = SessionRequest {
            name: config.name.clone(),
            ttl: Some(config.ttl),
            behavior: config.behavior,
            lock_delay: Some(config.lock_delay),
            node_checks: config.node_checks.clone(),
        };
        let created_at = Instant::now();
        let id = client.session_create(&req).await?;
        let fenced = CancellationToken::new();
        let reason = Arc::new(OnceLock::new());
        let stop = cancel.child_token();
        let renewals = Arc::new(AtomicU64::new(0));
        let fallback_renewals = Arc::new(AtomicU64::new(0));
        let task = tracker.spawn(renew_loop(
            client.clone(),
            id.clone(),
            config,
            created_at,
            Signals {
                fenced: fenced.clone(),
                reason: reason.clone(),
                renewals: renewals.clone(),
                fallback_renewals: fallback_renewals.clone(),
                stop: stop.clone(),
            },
        ));
        tracing::info!(session = %id, "consul session created");
        Ok(SessionKeeper {
            client: client.clone(),
            id,
            fenced,
            reason,
            renewals,
            fallback_renewals,
            stop,
            task,
        })
    }

    /// Takes up an existing session `id` (one whose keeper fenced by its deadline): renews it
    /// once — [`ConsulError::SessionNotFound`] when Consul no longer has it — and keeps it
    /// like [`SessionKeeper::start`] from there. A session Consul renews still holds every
    /// lock it held, so its owner may use them again.
    pub async fn resume(
        client: &Client,
        id: &str,
        config: SessionConfig,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<SessionKeeper, ConsulError> {
        config.validate()?;
        let sent_at = Instant::now();
        let (info, via_fallback) = renew_any(
            client,
            &config.fallbacks,
            id,
            config.attempt_timeout_for(config.ttl),
        )
        .await?;
        let mut config = config;
        if let Some(t) = info.ttl.filter(|t| *t > config.ttl) {
            config.ttl = t;
        }
        let fenced = CancellationToken::new();
        let reason = Arc::new(OnceLock::new());
        let stop = cancel.child_token();
        let renewals = Arc::new(AtomicU64::new(1));
        let fallback_renewals = Arc::new(AtomicU64::new(u64::from(via_fallback)));
        let task = tracker.spawn(renew_loop(
            client.clone(),
            id.to_owned(),
            config,
            sent_at,
            Signals {
                fenced: fenced.clone(),
                reason: reason.clone(),
                renewals: renewals.clone(),
                fallback_renewals: fallback_renewals.clone(),
                stop: stop.clone(),
            },
        ));
        tracing::info!(session = %id, "consul session resumed");
        Ok(SessionKeeper {
            client: client.clone(),
            id: id.to_owned(),
            fenced,
            reason,
            renewals,
            fallback_renewals,
            stop,
            task,
        })
    }

    /// The session id (for `?acquire=`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Resolves once the keeper has fenced (see the module docs).
    pub async fn fenced(&self) {
        self.fenced.cancelled().await
    }

    /// Whether the keeper has fenced.
    pub fn is_fenced(&self) -> bool {
        self.fenced.is_cancelled()
    }

    /// A token cancelled when the keeper fences (to hand to tasks that must stop then).
    pub fn fence_token(&self) -> CancellationToken {
        self.fenced.clone()
    }

    /// Why the keeper fenced, once it has.
    pub fn fence_reason(&self) -> Option<FenceReason> {
        self.reason.get().copied()
    }

    /// How many renewals succeeded so far.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// How many of them went through a fallback endpoint (the main client had failed).
    pub fn fallback_renewals(&self) -> u64 {
        self.fallback_renewals.load(Ordering::Relaxed)
    }

    /// Stops renewal and destroys the session (its locks are released or deleted per its
    /// behavior). Call on shutdown after releasing what must be released.
    pub async fn destroy(self) -> Result<(), ConsulError> {
        self.stop.cancel();
        let _ = self.task.await;
        self.client.session_destroy(&self.id).await.map(drop)
    }
}

fn fence(token: &CancellationToken, slot: &OnceLock<FenceReason>, id: &str, reason: FenceReason) {
    let _ = slot.set(reason);
    match reason {
        FenceReason::Stopped => tracing::info!(session = %id, "consul session renewal stopped"),
        _ => tracing::error!(session = %id, ?reason, "consul session lost: fencing"),
    }
    token.cancel();
}

/// What the renewal task shares with its keeper.
struct Signals {
    fenced: CancellationToken,
    reason: Arc<OnceLock<FenceReason>>,
    renewals: Arc<AtomicU64>,
    fallback_renewals: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// One renewal, hedged: through `client` first; when it fails with anything but "session gone",
/// or has not answered within `attempt`, the next fallback is asked **as well** (the requests
/// already in flight keep running), until one succeeds. Without fallbacks this is exactly
/// `client.session_renew` (the caller's fencing deadline bounds it). Returns the session and
/// whether a fallback answered. A 404 from any endpoint is final: the servers behind every
/// endpoint of a datacenter are the same, so the session is gone.
///
/// Hedging, not cutting the slow request short, matters for a *paused* agent (a GC stall, a
/// short outage): its request is answered when it resumes, as without fallbacks, so an agent
/// that hangs for less than the fencing deadline never fences while a fallback is also slow.
async fn renew_any(
    client: &Client,
    fallbacks: &[Client],
    id: &str,
    attempt: Duration,
) -> Result<(super::SessionInfo, bool), ConsulError> {
    use futures::stream::{FuturesUnordered, StreamExt};
    if fallbacks.is_empty() {
        return client.session_renew(id).await.map(|i| (i, false));
    }
    let endpoints: Vec<&Client> = std::iter::once(client).chain(fallbacks).collect();
    let ask = |n: usize| {
        let c = endpoints[n];
        async move { (n, c.session_renew(id).await) }
    };
    let mut inflight = FuturesUnordered::new();
    inflight.push(ask(0));
    let mut asked = 1;
    let mut last = None;
    loop {
        let answer = if asked < endpoints.len() {
            match tokio::time::timeout(attempt, inflight.next()).await {
                Ok(a) => a,
                Err(_) => {
                    tracing::debug!(session = %id, endpoint = %endpoints[asked - 1].base_url(), "session renew slow on this endpoint; asking the next as well");
                    inflight.push(ask(asked));
                    asked += 1;
                    continue;
                }
            }
        } else {
            inflight.next().await
        };
        match answer {
            Some((n, Ok(info))) => {
                if n > 0 {
                    tracing::info!(session = %id, via = %endpoints[n].base_url(), "consul session renewed through a fallback endpoint");
                }
                return Ok((info, n > 0));
            }
            Some((_, Err(e @ ConsulError::SessionNotFound(_)))) => return Err(e),
            Some((n, Err(e))) => {
                tracing::debug!(session = %id, endpoint = %endpoints[n].base_url(), error = %e, "session renew failed on this endpoint");
                last = Some(e);
                if asked < endpoints.len() {
                    inflight.push(ask(asked));
                    asked += 1;
                }
            }
            None => {
                return Err(last.unwrap_or_else(|| {
                    ConsulError::InvalidRequest("no endpoint to renew through".into())
                }));
            }
        }
    }
}

async fn renew_loop(
    client: Client,
    id: String,
    config: SessionConfig,
    created_at: Instant,
    signals: Signals,
) {
    let Signals {
        fenced,
        reason,
        renewals,
        fallback_renewals,
        stop,
    } = signals;
    let mut ttl = config.ttl;
    // The TTL clock started no earlier than when the create request was sent.
    let mut last_ok = created_at;
    let mut last_failed = false;
    loop {
        let interval = config.renew_every_for(ttl);
        let deadline = last_ok + config.fence_after_for(ttl);
        let next = if last_failed {
            Instant::now() + (interval / 3).max(Duration::from_millis(10))
        } else {
            last_ok + interval
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(deadline)) => {}
            _ = stop.cancelled() => return fence(&fenced, &reason, &id, FenceReason::Stopped),
        }
        if Instant::now() >= deadline {
            return fence(&fenced, &reason, &id, FenceReason::DeadlineExceeded);
        }
        let sent_at = Instant::now();
        tokio::select! {
            r = renew_any(&client, &config.fallbacks, &id, config.attempt_timeout_for(ttl)) => match r {
                Ok((info, via_fallback)) => {
                    last_ok = sent_at;
                    last_failed = false;
                    renewals.fetch_add(1, Ordering::Relaxed);
                    if via_fallback {
                        fallback_renewals.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(t) = info.ttl.filter(|t| *t > ttl) {
                        tracing::info!(session = %id, ttl_ms = t.as_millis() as u64, "consul raised the session TTL; adopting it");
                        ttl = t;
                    }
                }
                Err(ConsulError::SessionNotFound(_)) => {
                    return fence(&fenced, &reason, &id, FenceReason::SessionGone);
                }
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "consul session renew failed");
                    last_failed = true;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                return fence(&fenced, &reason, &id, FenceReason::DeadlineExceeded);
            }
            _ = stop.cancelled() => return fence(&fenced, &reason, &id, FenceReason::Stopped),
        }
    }
}

// === locks ===

/// `PUT ?acquire=<session>` with `value`: `true` if the session now holds the lock (also when
/// it already did), `false` if another session holds it or the lock delay is running.
pub async fn acquire(
    client: &Client,
    key: &str,
    session: &str,
    value: &[u8],
) -> Result<bool, ConsulError> {
    let opts = PutOptions {
        acquire: Some(session.to_owned()),
        ..Default::default()
    };
    client.kv_put(key, value, &opts).await
}

/// `PUT ?release=<session>` with an empty value: `true` if the session held it.
pub async fn release(client: &Client, key: &str, session: &str) -> Result<bool, ConsulError> {
    let opts = PutOptions {
        release: Some(session.to_owned()),
        ..Default::default()
    };
    client.kv_put(key, b"", &opts).await
}

/// Waits (blocking queries) until `key` has no `Session` (or does not exist).
pub async fn wait_until_free(
    client: &Client,
    key: &str,
    cancel: &CancellationToken,
) -> Result<(), ConsulError> {
    wait_until_free_with(client, key, WatchOptions::default(), cancel).await
}

/// [`wait_until_free`] with explicit watch options.
pub async fn wait_until_free_with(
    client: &Client,
    key: &str,
    opts: WatchOptions,
    cancel: &CancellationToken,
) -> Result<(), ConsulError> {
    let local = cancel.child_token();
    // The watch task stops when `local` is cancelled (on every return path, via the guard).
    let _guard = local.clone().drop_guard();
    let mut rx = watch_key(client, key, opts, local.clone())?;
    let free = |s: &WatchState<Option<super::KvPair>>| match s {
        WatchState::Loading => false,
        WatchState::Ready { value, .. } => value.as_ref().is_none_or(|p| p.session.is_none()),
    };
    tokio::select! {
        r = rx.wait_for(free) => r.map(drop).map_err(|_| ConsulError::Cancelled),
        _ = cancel.cancelled() => Err(ConsulError::Cancelled),
    }
}

/// Acquires `key` for `session`, waiting while another session holds it and retrying with
/// backoff while the lock delay refuses it or Consul answers a transient error (5xx such as
/// 500 "No cluster leader" during an election, 429, transport errors). Returns when held, on
/// cancel, or on a permanent error — [`ConsulError::SessionNotFound`] when Consul says the
/// session is invalid (500 `invalid session "<id>"`), other 4xx as they are.
pub async fn acquire_wait(
    client: &Client,
    key: &str,
    session: &str,
    value: &[u8],
    opts: WatchOptions,
    cancel: &CancellationToken,
) -> Result<(), ConsulError> {
    let mut backoff = Backoff::new(opts.backoff_min, opts.backoff_max);
    let mut just_freed = false;
    loop {
        if cancel.is_cancelled() {
            return Err(ConsulError::Cancelled);
        }
        match acquire(client, key, session, value).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.is_invalid_session() => {
                return Err(ConsulError::SessionNotFound(session.to_owned()));
            }
            Err(e) if e.is_transient() => {
                // Consul is unreachable or electing a leader: pace the retries and try the
                // acquire again (the key may be free already; waiting on it would need Consul
                // too).
                let d = backoff.next_delay(rand::random::<f64>());
                tracing::warn!(key, error = %e, retry_ms = d.as_millis() as u64, "lock acquire failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = cancel.cancelled() => return Err(ConsulError::Cancelled),
                }
                just_freed = false;
                continue;
            }
            Err(e) => return Err(e),
        }
        if just_freed {
            // Free but refused: the lock delay is running (or someone was faster). Pace the
            // next attempt instead of spinning.
            let d = backoff.next_delay(rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = cancel.cancelled() => return Err(ConsulError::Cancelled),
            }
        }
        wait_until_free_with(client, key, opts.clone(), cancel).await?;
        just_freed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_validation() {
        let c = SessionConfig::new("w", Duration::from_secs(15), Duration::from_secs(15));
        assert!(c.validate().is_ok());
        assert_eq!(c.fence_after_for(c.ttl), Duration::from_secs(10));
        assert_eq!(c.renew_every_for(c.ttl), Duration::from_secs(5));
        // A larger TTL from Consul stretches the schedule; an explicit deadline caps renewal.
        assert_eq!(
            c.renew_every_for(Duration::from_secs(60)),
            Duration::from_secs(20)
        );
        let capped = SessionConfig {
            fence_after: Some(Duration::from_secs(4)),
            ..c.clone()
        };
        assert_eq!(capped.renew_every_for(capped.ttl), Duration::from_secs(2));
        let bad = SessionConfig {
            fence_after: Some(Duration::from_secs(15)),
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        let bad = SessionConfig {
            renew_every: Some(Duration::from_secs(20)),
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        let bad = SessionConfig {
            ttl: Duration::ZERO,
            ..c
        };
        assert!(bad.validate().is_err());
    }
}
