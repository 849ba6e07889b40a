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

use std::sync::Arc;
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
    pub(crate) client: reqwest::Client,
    pub(crate) authority: Authority,
    pub(crate) shard_admin: Option<shards_api::ShardAdmin>,
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
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .http1_only()
        .build()
        .map_err(|e| RouterError::Client(e.to_string()))?;
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
    });
    tracker.spawn(refresh_loop(state.clone(), shutdown.clone()));
    if let Some(path) = state.config.table_file.clone() {
        tracker.spawn(save_loop(state.clone(), path, shutdown.clone()));
    }
    let local = listener.local_addr()?;
    tracing::info!(%local, "router listening");
    warp::serve(server::routes(state))
        .incoming(listener)
        .graceful(shutdown.clone().cancelled_owned())
        .run()
        .await;
    tracker.close();
    tracker.wait().await;
    Ok(())
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
                match snapshot::save(&path, &table, crate::worker::placeholder::now_ms()) {
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
