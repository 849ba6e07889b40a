//! The router (`wafleet router`, DESIGN §6): routing table, resolution and the proxying HTTP
//! surface. Stateless; run as many copies as you like.
//!
//! The table is the shard map (a [`MapFeed`] fed by a KV blocking watch, [`watch_map`]) plus
//! each shard's instances ([`table::Endpoints`] over a [`Resolver`], DNS SRV in production),
//! refreshed in the background. The hot path parses the workspace from the path, checks the
//! token, looks the owner up (O(shards), no Consul call) and forwards over pooled keep-alive
//! connections ([`proxy`]). A shard with no instance answers `503` alone; Consul going away
//! changes nothing while the last good table stays valid.
//!
//! The core depends only on the traits in [`source`]; the Consul adapters live in
//! [`consul`], and [`cli`] wires them together. Besides proxying, the router serves the admin
//! routes that need the whole fleet: the cross-workspace session list ([`fleet`]), shard-map
//! changes ([`shards_api`]), and the embedded operator dashboard at `/ui/` ([`ui`]).

pub mod cli;
pub mod consul;
pub mod fleet;
pub mod proxy;
pub mod server;
pub mod shards_api;
pub mod snapshot;
pub mod source;
pub mod table;
pub mod ui;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub use source::{
    KvRead, KvSource, MapFeed, ResolveError, Resolver, SourceError, WatchOptions, watch_map,
};

use crate::api::{MAX_BODY_BYTES, MAX_MEDIA_BODY_BYTES};
use crate::auth::Authority;
use crate::shutdown::{CancellationToken, TaskTracker};

/// Tuning of a router.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How long a shard's resolved instances are used before the background refresh.
    pub dns_cache_ttl: Duration,
    /// How long to wait for a worker's response headers before answering 504.
    pub upstream_timeout: Duration,
    /// Body cap of ordinary routes (413 above it).
    pub max_body_bytes: u64,
    /// Body cap of `…/messages` (media).
    pub max_media_body_bytes: u64,
    /// Body cap of `PUT …/profile` (a session's profile as a tar; always streamed).
    pub max_profile_body_bytes: u64,
    /// Bodies up to this size with a known length are buffered, so they can be replayed after
    /// a 421; larger ones are streamed.
    pub replay_max_bytes: u64,
    /// Where the last good table is kept for a start without Consul ([`snapshot`]); `None`:
    /// nowhere.
    pub table_file: Option<std::path::PathBuf>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            dns_cache_ttl: Duration::from_millis(2000),
            upstream_timeout: Duration::from_secs(30),
            max_body_bytes: MAX_BODY_BYTES,
            max_media_body_bytes: MAX_MEDIA_BODY_BYTES,
            max_profile_body_bytes: crate::migrate::profile::DEFAULT_MAX_PROFILE_BYTES,
            replay_max_bytes: 64 * 1024,
            table_file: None,
        }
    }
}

/// What a router needs from the outside world.
pub struct RouterDeps {
    /// The latest good shard map (see [`watch_map`]).
    pub maps: MapFeed,
    /// Shard → instance addresses.
    pub resolver: Arc<dyn Resolver>,
    /// Token checks (`Authorization` is checked here, then forwarded unchanged).
    pub authority: Authority,
    /// Consul access for the shard-map admin routes ([`shards_api`]); `None`: they answer 501.
    pub shard_admin: Option<shards_api::ShardAdmin>,
}

/// Errors that stop a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// Binding or inspecting the listener failed.
    #[error("listener: {0}")]
    Listen(#[from] std::io::Error),
    /// Consul configuration failed.
    #[error(transparent)]
    Consul(#[from] crate::consul::ConsulError),
    /// Token configuration is wrong.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The upstream HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
}

/// Shared state of one router.
pub struct State {
    pub(crate) config: RouterConfig,
    pub(crate) maps: MapFeed,
    pub(crate) endpoints: table::Endpoints,
    pub(crate) client: proxy::Upstream,
    pub(crate) authority: Authority,
    pub(crate) shard_admin: Option<shards_api::ShardAdmin>,
    pub(crate) metrics: RequestMetrics,
}

/// The request path's metric handles, cached per label set: the `metrics` macros with labels
/// allocate the label strings, build and hash the key and look it up in the registry on every
/// call, which was a visible share of a proxied request's cost. The label sets are few (shards
/// of the map × statuses seen), so the caches stay small.
#[derive(Default)]
pub(crate) struct RequestMetrics {
    requests: RwLock<HashMap<(u32, u16), metrics::Counter>>,
    durations: RwLock<HashMap<u32, metrics::Histogram>>,
}

impl RequestMetrics {
    /// Counts one proxied request of `shard` answered with `status` after `elapsed`.
    pub(crate) fn record(&self, shard: u32, status: http::StatusCode, elapsed: Duration) {
        let status = status.as_u16();
        with_cached(
            &self.requests,
            (shard, status),
            || {
                metrics::counter!("wafleet_router_requests_total",
                    "shard" => shard.to_string(), "status" => status.to_string())
            },
            |c| c.increment(1),
        );
        with_cached(
            &self.durations,
            shard,
            || {
                metrics::histogram!("wafleet_router_request_duration_seconds",
                    "shard" => shard.to_string())
            },
            |h| h.record(elapsed.as_secs_f64()),
        );
    }
}

/// Applies `f` to the handle for `key`, registering it on first use. The handle is used under
/// the read lock rather than cloned out: no reference count to bump per request.
fn with_cached<K: std::hash::Hash + Eq, H>(
    cache: &RwLock<HashMap<K, H>>,
    key: K,
    register: impl FnOnce() -> H,
    f: impl FnOnce(&H),
) {
    if let Some(h) = cache
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return f(h);
    }
    let mut w = cache.write().unwrap_or_else(PoisonError::into_inner);
    f(w.entry(key).or_insert_with(register));
}

/// Serves the router on `listener` until `shutdown` is cancelled, then drains connections.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: RouterConfig,
    deps: RouterDeps,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    // Install the process-wide recorder before the first metric is recorded.
    let _ = crate::telemetry::prometheus();
    let client = proxy::upstream_client();
    let tracker = TaskTracker::new();
    let endpoints = table::Endpoints::new(deps.resolver);
    let mut maps = deps.maps;
    let saved = config.table_file.as_deref().and_then(|path| {
        snapshot::load(path)
            .inspect_err(|e| tracing::warn!(error = %e, "ignoring the table file"))
            .ok()
            .flatten()
    });
    if let Some(saved) = saved {
        tracing::info!(
            version = saved.map.version,
            "table file loaded; Consul's answers replace it"
        );
        for (shard, addrs) in saved.instances {
            endpoints.seed(shard, addrs, snapshot::FROM_FILE);
        }
        maps = seeded(maps, saved.map, &tracker, shutdown.clone());
    }
    let state = Arc::new(State {
        endpoints,
        maps,
        client,
        authority: deps.authority,
        shard_admin: deps.shard_admin,
        config,
        metrics: RequestMetrics::default(),
    });
    tracker.spawn(refresh_loop(state.clone(), shutdown.clone()));
    if let Some(path) = state.config.table_file.clone() {
        tracker.spawn(save_loop(state.clone(), path, shutdown.clone()));
    }
    let local = listener.local_addr()?;
    tracing::info!(%local, "router listening");
    serve(listener, state, shutdown).await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Accepts connections until `shutdown`, then lets the open ones finish (graceful). Each
/// connection is served by hyper directly (HTTP/1.1, or h2c with prior knowledge, as warp's
/// server does): requests under `/v1/workspaces/` go straight to [`server::handle`], every
/// other route through the warp filter of [`server::routes`]. The proxied path skips warp's
/// filter machinery (route bookkeeping, a body re-wrap, a header-map clone, the extraction
/// combinators), which is per-request work nginx does not do either.
async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let others =
        hyper_util::service::TowerToHyperService::new(warp::service(server::routes(state.clone())));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning on accept.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        // Answers are small and written whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let others = others.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let state = state.clone();
            let others = others.clone();
            async move {
                if req.uri().path().starts_with(table::WORKSPACE_PREFIX) {
                    let req = proxy::Incoming::from_hyper(req, remote);
                    Ok(server::handle(&state, req).await)
                } else {
                    hyper::service::Service::call(&others, req).await
                }
            }
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A feed that starts with `seed` (read from the table file) and then passes on every map the
/// live feed delivers: Consul's first answer replaces the file's map, whatever its version.
fn seeded(
    mut live: MapFeed,
    seed: crate::shard::ShardMap,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> MapFeed {
    let (tx, rx) = tokio::sync::watch::channel(Some(Arc::new(seed)));
    tracker.spawn(async move {
        loop {
            let current = live.borrow_and_update().clone();
            if current.is_some() {
                let _ = tx.send(current);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = live.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}

/// Writes the table file whenever the map or a shard's instances changed (checked on every
/// map change and every TTL). Errors are logged once per kind and retried next time.
async fn save_loop(state: Arc<State>, path: std::path::PathBuf, shutdown: CancellationToken) {
    let mut maps = state.maps.clone();
    let mut tick = tokio::time::interval(state.config.dns_cache_ttl);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<snapshot::Table> = None;
    let mut failing = false;
    loop {
        let map = maps.borrow_and_update().clone();
        if let Some(map) = map {
            let instances = map
                .shard_ids()
                .filter_map(|k| state.endpoints.cached(k).map(|e| (k, e.addrs.to_vec())))
                .collect();
            let table = snapshot::Table {
                map: (*map).clone(),
                instances,
            };
            if written.as_ref() != Some(&table) {
                match snapshot::save(&path, &table, crate::worker::layout::now_ms()) {
                    Ok(()) => {
                        failing = false;
                        written = Some(table);
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot write the table file; retrying");
                    }
                    Err(_) => {}
                }
            }
        }
        if !next_round(&mut maps, &mut tick, &shutdown).await {
            return;
        }
    }
}

/// Waits for the next round of a per-table loop: a tick or a map change. `false` on shutdown.
/// When the map source has stopped, rounds go on with the ticks (the last table stays in use).
async fn next_round(
    maps: &mut MapFeed,
    tick: &mut tokio::time::Interval,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tick.tick() => true,
        changed = maps.changed() => {
            if changed.is_err() {
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tick.tick() => {}
                }
            }
            true
        }
    }
}

/// Re-resolves every shard of the current map each TTL, and at once when the map changes.
async fn refresh_loop(state: Arc<State>, shutdown: CancellationToken) {
    let mut maps = state.maps.clone();
    let mut tick = tokio::time::interval(state.config.dns_cache_ttl);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval is immediate; the loop refreshes first anyway.
    tick.reset();
    loop {
        let shards: Vec<u32> = maps
            .borrow_and_update()
            .as_ref()
            .map(|m| m.shard_ids().collect())
            .unwrap_or_default();
        if !shards.is_empty() {
            state.endpoints.refresh_all(&shards).await;
        }
        if !next_round(&mut maps, &mut tick, &shutdown).await {
            return;
        }
    }
}
