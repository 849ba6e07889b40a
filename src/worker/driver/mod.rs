//! The async shell around the ownership machine: terms, actions, status.
//!
//! A *term* is one coordination session. The runner ([`run_terms`]) opens a term, waits for the
//! shard lock and a shard map, registers the service and becomes ready, then feeds the pure
//! [`Ownership`] machine with the desired set (known workspaces the map assigns to this shard)
//! and with the results of the actions it asked for, which it executes as tracked tasks: lock
//! calls on the [`Coordinator`], start/stop on the [`SessionHost`] (starts bounded by the
//! restore concurrency). A term ends when it was fenced (everything stopped; the runner opens a
//! new term, which waits for the shard lock like any newcomer) or drained (everything stopped
//! and released; the runner closes the term and returns).
//!
//! What the HTTP surface needs — readiness, fencing, the phase of every workspace — is
//! published through a `watch` channel of [`Status`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use super::coordinator::{CoordError, Coordinator};
use super::ownership::{Action, Event, Mode, Ownership, Phase};
use crate::ids::WorkspaceId;
use crate::shutdown::{CancellationToken, TaskTracker};

/// How often the workspace directory is rescanned besides every map change (workspaces created
/// on shared storage by a previous owner).
pub const RESCAN_INTERVAL_SECS: u64 = 30;
/// At most this many workspace lock attempts run at once.
pub const MAX_CONCURRENT_ACQUIRES: usize = 64;
/// Pause between two attempts to open a term (Consul unreachable).
pub const TERM_RETRY_SECS: u64 = 1;

/// Opens terms: creates a coordination session. The Consul adapter implements it.
pub trait Connector: Send + Sync + 'static {
    /// Creates a new session and returns the term built on it.
    fn connect(&self) -> BoxFuture<'_, Result<Arc<dyn Coordinator>, CoordError>>;

    /// A new term on an existing session that fenced by its deadline, if the store still
    /// holds the session (renewing it succeeds): `SessionLost` when it is gone, another error
    /// while the store cannot say. The default cannot resume.
    fn resume<'a>(
        &'a self,
        session: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Coordinator>, CoordError>> {
        let _ = session;
        Box::pin(async { Err(CoordError::SessionLost) })
    }
}

mod actions;
mod status;
mod term_start;

use actions::execute;
pub use status::{Shared, Status, scan_workspaces};
use term_start::{claim_shard_record, dead_predecessor_session, spawn_lease_recorder, volume_ok};

/// Knobs of the runner.
#[derive(Clone)]
pub struct DriverConfig {
    /// At most this many workspace starts at once (staggered restores).
    pub restore_concurrency: usize,
    /// Time allowed for a drain before giving up (the process then exits with locks still held
    /// by a session that expires on its own: safe, just slower for the next owner).
    pub drain_grace: Duration,
    /// Called once, the first time the worker becomes ready (prints the readiness line).
    pub on_first_ready: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Check the shared-volume sentinel (`crate::volume`) in the data directory before every
    /// term; `Some(Some(id))` also requires that volume id. `None` skips the check (unit tests
    /// of the ownership machine).
    pub volume: Option<Option<String>>,
    /// Keep the shard's owner record (`owner.rs`) and take over a dead predecessor's session;
    /// `None` in tests without a shared volume.
    pub owner: Option<OwnerSettings>,
}

/// How the runner keeps the shard's owner record.
#[derive(Debug, Clone)]
pub struct OwnerSettings {
    /// The session TTL: the lease is the last observed renewal plus this.
    pub ttl: Duration,
    /// Clock-skew margin added to another owner's lease before it counts as expired.
    pub margin: Duration,
}

impl std::fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverConfig")
            .field("restore_concurrency", &self.restore_concurrency)
            .field("drain_grace", &self.drain_grace)
            .field("volume", &self.volume)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// How a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermEnd {
    Fenced,
    Drained,
    DrainTimedOut,
}

/// Runs terms until shutdown. Returns `Ok(true)` after a clean drain, `Ok(false)` when the
/// drain grace ran out.
pub async fn run_terms(
    shared: Arc<Shared>,
    connector: Arc<dyn Connector>,
    config: DriverConfig,
    shutdown: CancellationToken,
) -> bool {
    let mut first_ready = config.on_first_ready.clone();
    let mut term = 0u64;
    let mut resume: Option<(String, tokio::time::Instant)> = None;
    let mut takeover_checked = config.owner.is_none();
    // Held for the life of the worker: proof that a live process serves this shard here.
    let mut _process_lock: Option<std::fs::File> = None;
    loop {
        if shutdown.is_cancelled() {
            return true;
        }
        if let Some(expect) = &config.volume
            && !volume_ok(&shared, expect.as_deref(), &shutdown).await
        {
            return true;
        }
        // A process restarted on the same host (kill -9, OOM, crash) whose predecessor is
        // proven dead takes up the predecessor's session: Consul still renews it, it still
        // holds the shard and workspace locks, and re-acquiring them with the holder session
        // needs no lock delay. Checked once, after the volume is known to be there.
        if !takeover_checked {
            takeover_checked = true;
            if let Some(owner) = &config.owner {
                let (lock, session) = dead_predecessor_session(&shared).await;
                _process_lock = lock;
                if let Some(session) = session {
                    resume = Some((session, tokio::time::Instant::now() + owner.ttl * 2));
                }
            }
        }
        // After a fencing by deadline, the old session may still be valid in Consul (the agent
        // was restarting, not the node dying): take it up again rather than wait for it to
        // expire. Every browser was stopped at the fencing, and a session that Consul still
        // renews still holds its locks, so nobody else can run them meanwhile.
        let coord = match resume.take() {
            Some((old, until)) => match resume_term(&*connector, &old, until, &shutdown).await {
                Resumed::Yes(c) => Ok(c),
                Resumed::Gone => continue,
                Resumed::Shutdown => return true,
            },
            None => tokio::select! {
                c = connector.connect() => c,
                _ = shutdown.cancelled() => return true,
            },
        };
        let coord = match coord {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not open a coordination session; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(TERM_RETRY_SECS)) => continue,
                    _ = shutdown.cancelled() => return true,
                }
            }
        };
        term += 1;
        let session = coord.session_id();
        let span = tracing::info_span!("term", term, session = %session);
        let end = run_term(
            &shared,
            coord.clone(),
            &config,
            &mut first_ready,
            &shutdown,
            term,
        )
        .instrument(span)
        .await;
        // The shard store is single-writer only while the shard lock is held.
        if let Some(m) = shared.messaging.get() {
            m.close().await;
        }
        if end == TermEnd::Drained && config.owner.is_some() {
            // A clean drain stopped every browser: no successor has to wait for this lease.
            let path = super::owner::shard_record_path(&shared.data, shared.shard);
            if let Ok(me) = super::owner::Identity::current() {
                let _ = tokio::task::spawn_blocking(move || {
                    super::owner::remove_if_mine::<super::owner::ShardRecord>(&path, &me, |r| {
                        &r.owner
                    })
                })
                .await;
            }
        }
        match end {
            TermEnd::Drained => return true,
            TermEnd::DrainTimedOut => return false,
            TermEnd::Fenced => {
                if coord.resumable() {
                    tracing::warn!(term, session = %session, "term fenced by its deadline; trying to resume its session once Consul answers");
                    resume = Some((session, tokio::time::Instant::now() + coord.resume_window()));
                } else {
                    tracing::warn!(term, "term fenced; opening a new one");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(TERM_RETRY_SECS)) => {}
                    _ = shutdown.cancelled() => return true,
                }
            }
        }
    }
}

/// What [`resume_term`] found.
enum Resumed {
    /// The session is still valid: a new term on it.
    Yes(Arc<dyn Coordinator>),
    /// The session is gone (or cannot be resumed): open a new one.
    Gone,
    /// Shutdown was requested.
    Shutdown,
}

/// Retries [`Connector::resume`] until Consul says whether the session still exists, or until
/// `until` (past it the session is surely gone; a store that still cannot say — e.g. only this
/// session's requests are cut off — is then given up on for a new session).
async fn resume_term(
    connector: &dyn Connector,
    session: &str,
    until: tokio::time::Instant,
    shutdown: &CancellationToken,
) -> Resumed {
    let mut logged = false;
    loop {
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                session,
                "the fenced session cannot have outlived its TTL; opening a new one"
            );
            return Resumed::Gone;
        }
        let r = tokio::select! {
            r = connector.resume(session) => r,
            _ = tokio::time::sleep_until(until) => continue,
            _ = shutdown.cancelled() => return Resumed::Shutdown,
        };
        match r {
            Ok(c) => {
                tracing::info!(
                    session,
                    "session still valid after the fencing: resuming it"
                );
                return Resumed::Yes(c);
            }
            Err(CoordError::SessionLost) => {
                tracing::warn!(session, "the fenced session is gone; opening a new one");
                return Resumed::Gone;
            }
            Err(CoordError::Cancelled) => return Resumed::Shutdown,
            Err(e) => {
                if !logged {
                    tracing::warn!(session, error = %e, "cannot resume the session yet; retrying");
                    logged = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(TERM_RETRY_SECS)) => {}
                    _ = shutdown.cancelled() => return Resumed::Shutdown,
                }
            }
        }
    }
}

async fn run_term(
    shared: &Arc<Shared>,
    coord: Arc<dyn Coordinator>,
    config: &DriverConfig,
    first_ready: &mut Option<Arc<dyn Fn() + Send + Sync>>,
    shutdown: &CancellationToken,
    term: u64,
) -> TermEnd {
    let shard_label = shared.shard.to_string();
    let mut fenced = coord.fenced();
    shared.update(|s| {
        s.session = Some(coord.session_id());
        s.term = term;
    });
    tracing::info!(shard = shared.shard, "waiting for the shard lock");
    // 1. Shard lock.
    loop {
        tokio::select! {
            r = coord.acquire_shard() => match r {
                Ok(()) => break,
                Err(CoordError::SessionLost) => {
                    coord.abandon();
                    return TermEnd::Fenced;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shard lock: retrying");
                    tokio::time::sleep(Duration::from_secs(TERM_RETRY_SECS)).await;
                }
            },
            _ = &mut fenced => {
                coord.abandon();
                return TermEnd::Fenced;
            }
            _ = shutdown.cancelled() => {
                close_quietly(&coord).await;
                return TermEnd::Drained;
            }
        }
    }
    tracing::info!(shard = shared.shard, "shard lock held");
    // The owner record: wait out a previous owner that may still run browsers (a frozen
    // process whose lease has not run out), then name this process, and keep its lease.
    let _recorder = match &config.owner {
        Some(owner) => {
            tokio::select! {
                r = claim_shard_record(shared, &coord, owner) => if let Err(e) = r {
                    tracing::error!(error = %e, "cannot write the shard's owner record; profiles are guarded by the Consul locks alone");
                },
                _ = &mut fenced => {
                    coord.abandon();
                    return TermEnd::Fenced;
                }
                _ = shutdown.cancelled() => {
                    close_quietly(&coord).await;
                    return TermEnd::Drained;
                }
            }
            Some(spawn_lease_recorder(shared, &coord, owner))
        }
        None => None,
    };
    if let Some(m) = shared.messaging.get()
        && let Err(e) = m.open().await
    {
        tracing::error!(error = %e, "opening the shard store failed; messaging unavailable this term");
    }
    // 2. A map.
    let mut map_rx = shared.map.clone();
    loop {
        if map_rx.borrow_and_update().is_some() {
            break;
        }
        tokio::select! {
            r = map_rx.changed() => if r.is_err() {
                // The map watch ended: only at shutdown.
                close_quietly(&coord).await;
                return TermEnd::Drained;
            },
            _ = &mut fenced => {
                coord.abandon();
                return TermEnd::Fenced;
            }
            _ = shutdown.cancelled() => {
                close_quietly(&coord).await;
                return TermEnd::Drained;
            }
        }
    }
    // 3. Register (retried until it works; the keeper then re-registers on its own) and
    //    become ready.
    tokio::select! {
        r = coord.register() => if let Err(e) = r {
            tracing::warn!(error = %e, "service registration failed");
        },
        _ = &mut fenced => {
            coord.abandon();
            return TermEnd::Fenced;
        }
        _ = shutdown.cancelled() => {
            close_quietly(&coord).await;
            return TermEnd::Drained;
        }
    }
    shared.rescan().await;
    shared.update(|s| {
        s.ready = true;
        s.fenced = false;
    });
    metrics::gauge!("wafleet_worker_ready", "shard" => shard_label.clone()).set(1.0);
    tracing::info!(shard = shared.shard, "worker ready");
    if let Some(f) = first_ready.take() {
        f();
    }

    // 4. Follow the map.
    let tracker = TaskTracker::new();
    let restore = Arc::new(Semaphore::new(config.restore_concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut machine = Ownership::new();
    let mut leases: HashMap<WorkspaceId, CancellationToken> = HashMap::new();
    let mut rescan = tokio::time::interval(Duration::from_secs(RESCAN_INTERVAL_SECS));
    rescan.reset();
    let mut shutdown_seen = false;
    let mut fenced_seen = false;
    let mut map_open = true;
    let grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(grace);

    // Workspaces started this term: their messaging state is this store's to hand off.
    let mut started: HashSet<WorkspaceId> = HashSet::new();
    let desired = shared.desired(shared.current_map().as_deref());
    let mut actions = machine.handle(Event::Desired(desired));
    loop {
        for action in actions.drain(..) {
            // A release of a workspace that ran here and that the map moved away carries its
            // messaging state to the next owner; a drain or a release of a lock acquired but
            // never used does not (the same shard, or nothing of ours, comes next).
            let hand_off = match &action {
                Action::Start(ws) => {
                    started.insert(ws.clone());
                    false
                }
                Action::Release(ws) => started.remove(ws) && !machine.wants(ws),
                _ => false,
            };
            execute(
                action,
                hand_off,
                shared,
                &coord,
                &mut leases,
                &restore,
                &tracker,
                &tx,
            );
        }
        publish(shared, &machine);
        if machine.finished() {
            break;
        }
        let event = tokio::select! {
            Some(ev) = rx.recv() => Some(ev),
            r = map_rx.changed(), if map_open => {
                if r.is_ok() {
                    shared.rescan().await;
                } else {
                    map_open = false;
                }
                let map = map_rx.borrow_and_update().clone();
                Some(Event::Desired(shared.desired(map.as_deref())))
            }
            _ = shared.poke.notified() => {
                Some(Event::Desired(shared.desired(shared.current_map().as_deref())))
            }
            _ = rescan.tick() => {
                shared.rescan().await;
                Some(Event::Desired(shared.desired(shared.current_map().as_deref())))
            }
            _ = &mut fenced, if !fenced_seen => {
                fenced_seen = true;
                tracing::error!(shard = shared.shard, "FENCED: session not renewed before the fencing deadline; stopping every workspace");
                metrics::counter!("wafleet_worker_fenced_total", "shard" => shard_label.clone()).increment(1);
                metrics::gauge!("wafleet_worker_ready", "shard" => shard_label.clone()).set(0.0);
                shared.update(|s| { s.ready = false; s.fenced = true; });
                Some(Event::Fenced)
            }
            _ = shutdown.cancelled(), if !shutdown_seen => {
                shutdown_seen = true;
                tracing::info!(shard = shared.shard, "draining");
                metrics::gauge!("wafleet_worker_ready", "shard" => shard_label.clone()).set(0.0);
                shared.update(|s| { s.ready = false; s.draining = true; });
                grace.as_mut().reset(tokio::time::Instant::now() + config.drain_grace);
                if machine.mode() == Mode::Serving {
                    // Deregister first so routers stop sending work while we stop.
                    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), coord.deregister()).await.unwrap_or(Err(CoordError::Store("deregister timed out".into()))) {
                        tracing::warn!(error = %e, "deregister failed");
                    }
                    Some(Event::Drain)
                } else {
                    None
                }
            }
            _ = &mut grace => {
                tracing::error!(grace = ?config.drain_grace, "drain grace exceeded; exiting with locks left to expire with the session");
                return TermEnd::DrainTimedOut;
            }
        };
        if let Some(ev) = event {
            actions = machine.handle(ev);
        }
    }
    tracker.close();
    tracker.wait().await;
    for (_, token) in leases.drain() {
        token.cancel();
    }
    match machine.mode() {
        Mode::Fenced => {
            coord.abandon();
            TermEnd::Fenced
        }
        _ => {
            let remaining = grace
                .deadline()
                .saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, coord.close()).await {
                Ok(Ok(())) => tracing::info!("drained: every lock released, session destroyed"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "closing the session failed; it expires on its own")
                }
                Err(_) => return TermEnd::DrainTimedOut,
            }
            TermEnd::Drained
        }
    }
}

async fn close_quietly(coord: &Arc<dyn Coordinator>) {
    match tokio::time::timeout(Duration::from_secs(5), coord.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the session failed"),
        Err(_) => tracing::warn!("closing the session timed out"),
    }
}

fn publish(shared: &Shared, machine: &Ownership) {
    let running = machine
        .phases()
        .values()
        .filter(|p| **p == Phase::Running)
        .count();
    metrics::gauge!("wafleet_worker_workspaces", "shard" => shared.shard.to_string())
        .set(running as f64);
    let overlaps = shared.host.overlaps();
    let map_version = shared.current_map().map(|m| m.version);
    shared.update(|s| {
        if s.workspaces != *machine.phases() {
            s.workspaces = machine.phases().clone();
        }
        s.overlaps = overlaps;
        s.map_version = map_version;
    });
}
