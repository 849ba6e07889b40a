//! The routing table's two halves: which route a path is (pure parsing), and where each
//! shard's instances are (a small cache over a [`Resolver`]).
//!
//! The shard map half lives in the [`super::MapFeed`]; this file holds the endpoint cache.
//! Lookups on the hot path read the cache only; a background loop refreshes every shard of
//! the current map each TTL, and a request that failed to connect refreshes its shard at once.
//! A failed resolution keeps the previous addresses (Consul down must not empty the table);
//! an answer with no instance empties it (the shard is down: 503).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use crate::ids::{IdError, WorkspaceId};

use super::source::{ResolveError, Resolver};

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/shards` (admin), `PUT /v1/shards` (admin: apply a change).
    Shards,
    /// `POST /v1/shards/plan` (admin).
    ShardsPlan,
    /// `PUT`/`DELETE /v1/shards/pins/{ws}` (admin).
    Pin(Result<WorkspaceId, IdError>),
    /// `GET /v1/sessions` (admin): every session of the fleet.
    Sessions,
    /// `/ui` and `/ui/…`: the embedded dashboard.
    Ui,
    /// `GET /v1/route/{ws}` (admin).
    RouteOf(Result<WorkspaceId, IdError>),
    /// `/v1/workspaces/{ws}[/…]`: proxied to the owner.
    Workspace(Result<WorkspaceId, IdError>),
    /// Anything else.
    NotFound,
}

/// The prefix of the proxied routes (`/v1/workspaces/{ws}[/…]`).
pub const WORKSPACE_PREFIX: &str = "/v1/workspaces/";

/// Classifies a request path (without the query string).
pub fn parse_route(path: &str) -> Route {
    match path {
        "/healthz" => return Route::Healthz,
        "/readyz" => return Route::Readyz,
        "/metrics" => return Route::Metrics,
        "/v1/shards" => return Route::Shards,
        "/v1/shards/plan" => return Route::ShardsPlan,
        "/v1/sessions" => return Route::Sessions,
        _ => {}
    }
    if super::ui::is_ui_path(path) {
        return Route::Ui;
    }
    if let Some(rest) = path.strip_prefix("/v1/shards/pins/") {
        return Route::Pin(WorkspaceId::new(rest));
    }
    if let Some(rest) = path.strip_prefix(WORKSPACE_PREFIX) {
        let ws = rest.split('/').next().unwrap_or_default();
        return Route::Workspace(WorkspaceId::new(ws));
    }
    if let Some(rest) = path.strip_prefix("/v1/route/") {
        return Route::RouteOf(WorkspaceId::new(rest));
    }
    Route::NotFound
}

/// One shard's cached resolution.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The healthy instances at the last successful resolution (may be empty).
    pub addrs: Arc<[SocketAddr]>,
    /// When the addresses were last confirmed.
    pub resolved_at: Instant,
    /// The last resolution error, if the latest attempt failed (addresses kept).
    pub error: Option<String>,
    /// Where the addresses came from while no resolution has confirmed them (see
    /// [`Endpoints::seed`]).
    pub unconfirmed: Option<Arc<str>>,
}

/// The shard → instances cache.
pub struct Endpoints {
    resolver: Arc<dyn Resolver>,
    entries: RwLock<HashMap<u32, Entry>>,
    next: AtomicUsize,
    /// One resolution at a time per shard: a refresh that waited for another one started
    /// after it was requested takes that answer (a burst of failing requests costs one
    /// query, and every answer is at least as fresh as the request for it).
    inflight: std::sync::Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

// === impl Endpoints ===

impl Endpoints {
    /// An empty cache over `resolver`.
    pub fn new(resolver: Arc<dyn Resolver>) -> Self {
        Self {
            resolver,
            entries: RwLock::new(HashMap::new()),
            next: AtomicUsize::new(0),
            inflight: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Stores `addrs` for a shard that has no entry yet, marked with `note` as the error (they
    /// come from elsewhere than the resolver, e.g. the table file); the next successful
    /// resolution replaces them, a failed one keeps them.
    pub fn seed(&self, shard: u32, addrs: Vec<SocketAddr>, note: &str) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(shard)
            .or_insert_with(|| Entry {
                addrs: addrs.into(),
                resolved_at: Instant::now(),
                error: Some(note.to_owned()),
                unconfirmed: Some(note.into()),
            });
    }

    /// The cached entry of a shard, if any.
    pub fn cached(&self, shard: u32) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&shard)
            .cloned()
    }

    /// The shard's instances: from the cache, else resolved now (first request for a shard).
    pub async fn get(&self, shard: u32) -> Result<Arc<[SocketAddr]>, ResolveError> {
        if let Some(e) = self.cached(shard) {
            return Ok(e.addrs);
        }
        self.refresh(shard).await
    }

    /// Resolves the shard now and stores the answer. On failure the previous addresses are
    /// kept and returned; only a shard never resolved yields an error.
    pub async fn refresh(&self, shard: u32) -> Result<Arc<[SocketAddr]>, ResolveError> {
        let requested = Instant::now();
        let lock = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(shard)
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        if let Some(e) = self.cached(shard)
            && e.error.is_none()
            && e.resolved_at > requested
        {
            return Ok(e.addrs);
        }
        let started = Instant::now();
        let result = self.resolver.resolve(shard).await;
        metrics::histogram!("wafleet_router_resolve_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(addrs) => {
                let addrs: Arc<[SocketAddr]> = addrs.into();
                metrics::gauge!("wafleet_router_shard_healthy", "shard" => shard.to_string())
                    .set(if addrs.is_empty() { 0.0 } else { 1.0 });
                let changed = entries.get(&shard).is_none_or(|e| e.addrs != addrs);
                if changed {
                    tracing::info!(shard, instances = ?addrs, "shard instances changed");
                }
                entries.insert(
                    shard,
                    Entry {
                        addrs: addrs.clone(),
                        resolved_at: Instant::now(),
                        error: None,
                        unconfirmed: None,
                    },
                );
                Ok(addrs)
            }
            Err(e) => match entries.get_mut(&shard) {
                Some(entry) => {
                    if entry.error.is_none() {
                        tracing::warn!(shard, error = %e, "resolution failed; keeping the last known instances");
                    }
                    entry.error = Some(match &entry.unconfirmed {
                        Some(note) => format!("{e}; {note}"),
                        None => e.to_string(),
                    });
                    Ok(entry.addrs.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Refreshes every shard in `shards` (concurrently: one slow answer must not delay the
    /// others) and forgets shards that are no longer listed.
    pub async fn refresh_all(&self, shards: &[u32]) {
        futures::future::join_all(shards.iter().map(|&k| self.refresh(k))).await;
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| shards.contains(k));
    }

    /// Picks an instance round-robin, avoiding `avoid` when another exists.
    pub fn pick(&self, addrs: &[SocketAddr], avoid: Option<SocketAddr>) -> Option<SocketAddr> {
        if addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let first = addrs[i % addrs.len()];
        match avoid {
            Some(a) if a == first && addrs.len() > 1 => Some(addrs[(i + 1) % addrs.len()]),
            _ => Some(first),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    #[test]
    fn routes_parse() {
        assert_eq!(parse_route("/healthz"), Route::Healthz);
        assert_eq!(parse_route("/readyz"), Route::Readyz);
        assert_eq!(parse_route("/metrics"), Route::Metrics);
        assert_eq!(parse_route("/v1/shards"), Route::Shards);
        assert_eq!(parse_route("/v1/shards/plan"), Route::ShardsPlan);
        assert_eq!(parse_route("/v1/sessions"), Route::Sessions);
        assert_eq!(parse_route("/ui/app.js"), Route::Ui);
        assert_eq!(parse_route("/ui"), Route::Ui);
        assert_eq!(
            parse_route("/v1/shards/pins/acme"),
            Route::Pin(Ok(ws("acme")))
        );
        assert!(matches!(
            parse_route("/v1/shards/pins/a/b"),
            Route::Pin(Err(_))
        ));
        assert_eq!(
            parse_route("/v1/route/acme"),
            Route::RouteOf(Ok(ws("acme")))
        );
        assert!(matches!(
            parse_route("/v1/route/a/b"),
            Route::RouteOf(Err(_))
        ));
        assert_eq!(
            parse_route("/v1/workspaces/acme-1/sessions/default/qr"),
            Route::Workspace(Ok(ws("acme-1")))
        );
        assert_eq!(
            parse_route("/v1/workspaces/acme-1"),
            Route::Workspace(Ok(ws("acme-1")))
        );
        for bad in [
            "/v1/workspaces//sessions",
            "/v1/workspaces/a%2Fb/sessions",
            "/v1/workspaces/../x",
            "/v1/workspaces/",
        ] {
            assert!(
                matches!(parse_route(bad), Route::Workspace(Err(_))),
                "{bad}"
            );
        }
        for nf in [
            "/",
            "/v1",
            "/v1/workspaces",
            "/v2/shards",
            "/healthz/x",
            "/v1/shards/0",
            "/uix",
        ] {
            assert_eq!(parse_route(nf), Route::NotFound, "{nf}");
        }
    }

    struct Scripted(Mutex<Vec<Result<Vec<SocketAddr>, ResolveError>>>);

    impl Resolver for Scripted {
        fn resolve(&self, _shard: u32) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>> {
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[tokio::test]
    async fn failures_keep_the_last_addresses_and_empty_answers_clear_them() {
        let r = Arc::new(Scripted(Mutex::new(vec![
            Err(ResolveError("down".into())),
            Ok(vec![addr(1)]),
            Err(ResolveError("down".into())),
            Ok(vec![]),
        ])));
        let e = Endpoints::new(r);
        assert!(e.get(0).await.is_err(), "never resolved: error");
        assert_eq!(&*e.get(0).await.unwrap(), &[addr(1)]);
        // Cached: no resolver call.
        assert_eq!(&*e.get(0).await.unwrap(), &[addr(1)]);
        assert_eq!(&*e.refresh(0).await.unwrap(), &[addr(1)]);
        assert!(e.cached(0).unwrap().error.is_some());
        assert!(e.refresh(0).await.unwrap().is_empty());
    }

    #[test]
    fn pick_rotates_and_avoids() {
        let e = Endpoints::new(Arc::new(Scripted(Mutex::new(vec![]))));
        let addrs = [addr(1), addr(2)];
        let a = e.pick(&addrs, None).unwrap();
        let b = e.pick(&addrs, None).unwrap();
        assert_ne!(a, b);
        for _ in 0..4 {
            assert_eq!(e.pick(&addrs, Some(addr(1))), Some(addr(2)));
        }
        assert_eq!(e.pick(&[addr(1)], Some(addr(1))), Some(addr(1)));
        assert_eq!(e.pick(&[], None), None);
    }
}
