//! The router core over in-process sources: a real router on port 0 (`router::run`), real
//! HTTP backends (warp, port 0) playing workers, and the map and instance sources replaced by
//! small in-memory implementations of `KvSource` and `Resolver`, so every failure can be
//! staged exactly. `tests/router.rs` runs the same router against the built-in Consul agent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::watch;
use wafleet::auth::Authority;
use wafleet::ids::WorkspaceId;
use wafleet::router::{
    KvRead, KvSource, ResolveError, Resolver, RouterConfig, RouterDeps, SourceError, WatchOptions,
};
use wafleet::shard::ShardMap;
use wafleet::shutdown::{CancellationToken, TaskTracker};
use warp::Filter;

mod answers;

mod routing;

const ADMIN: &str = "admin-token-for-tests";
const SECRET: &str = "0123456789abcdef0123456789";

// === in-memory sources ===

/// A KV key with Consul-like blocking reads; `fail` makes every read fail.
#[derive(Clone)]
struct MemKv {
    state: watch::Sender<(u64, Option<Vec<u8>>)>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    reads: Arc<AtomicU64>,
}

impl MemKv {
    fn new() -> Self {
        Self {
            state: watch::channel((1, None)).0,
            fail: Arc::default(),
            reads: Arc::default(),
        }
    }
    fn put(&self, bytes: Vec<u8>) {
        self.state.send_modify(|(i, v)| {
            *i += 1;
            *v = Some(bytes);
        });
    }
}

impl KvSource for MemKv {
    fn read(&self, index: u64, wait: Duration) -> BoxFuture<'_, Result<KvRead, SourceError>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(SourceError("consul is down (staged)".into()));
            }
            let mut rx = self.state.subscribe();
            let _ = tokio::time::timeout(wait, rx.wait_for(|(i, _)| *i > index)).await;
            let (i, v) = rx.borrow().clone();
            Ok(KvRead { index: i, value: v })
        })
    }
}

/// Shard → addresses, editable by the test; counts calls; `fail` makes resolution fail.
#[derive(Default)]
struct MemResolver {
    table: Mutex<HashMap<u32, Vec<SocketAddr>>>,
    calls: AtomicU64,
    fail: std::sync::atomic::AtomicBool,
}

impl MemResolver {
    fn set(&self, shard: u32, addrs: Vec<SocketAddr>) {
        self.table.lock().unwrap().insert(shard, addrs);
    }
}

impl Resolver for MemResolver {
    fn resolve(&self, shard: u32) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(ResolveError("dns is down (staged)".into()));
            }
            Ok(self
                .table
                .lock()
                .unwrap()
                .get(&shard)
                .cloned()
                .unwrap_or_default())
        })
    }
}

// === backends playing workers ===

/// A worker stand-in for `shard`: echoes what it received, answers 421 for workspaces its
/// `truth` map does not give it, sleeps on `/slow`, streams 4 MiB on `/big`.
async fn backend(
    shard: u32,
    truth: Arc<Mutex<Option<ShardMap>>>,
    cancel: CancellationToken,
) -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let route = warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(
            warp::query::raw()
                .or(warp::any().map(String::new))
                .unify(),
        )
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(
            move |method: http::Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: http::HeaderMap,
                  body: Bytes| {
                let truth = truth.clone();
                let hits = h.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let path = path.as_str().to_owned();
                    let ws = path
                        .strip_prefix("/v1/workspaces/")
                        .and_then(|r| r.split('/').next())
                        .and_then(|w| WorkspaceId::new(w).ok());
                    let owner = match (&ws, truth.lock().unwrap().as_ref()) {
                        (Some(ws), Some(m)) => m.owner(ws).filter(|o| *o != shard),
                        _ => None,
                    };
                    if let Some(owner) = owner {
                        // Like a worker: 421 naming the owner in its own map.
                        let body = serde_json::json!({"error": "not_owner", "message": "not mine", "shard": owner});
                        return warp::http::Response::builder()
                            .status(421)
                            .body(warp::hyper::body::Bytes::from(body.to_string()))
                            .unwrap()
                            .map(Into::into);
                    }
                    if path.ends_with("/slow") {
                        tokio::time::sleep(Duration::from_secs(20)).await;
                    }
                    if path.ends_with("/big") {
                        let chunks = (0..64).map(|_| Ok::<_, Infallible>(Bytes::from(vec![7u8; 65536])));
                        let mut r = warp::reply::Reply::into_response(warp::reply::stream(
                            futures::stream::iter(chunks),
                        ));
                        r.headers_mut()
                            .insert("x-wafleet-shard", shard.to_string().parse().unwrap());
                        return r;
                    }
                    let hv = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let body_json = serde_json::json!({
                        "shard": shard, "method": method.as_str(), "path": path, "query": query,
                        "body_len": body.len(),
                        "body_sum": body.iter().map(|b| u64::from(*b)).sum::<u64>(),
                        "authorization": hv("authorization"), "x_request_id": hv("x-request-id"),
                        "x_custom": hv("x-custom"), "x_hop": hv("x-hop"), "keep_alive": hv("keep-alive"),
                    });
                    let mut r = warp::reply::Reply::into_response(warp::reply::json(&body_json));
                    r.headers_mut()
                        .insert("x-wafleet-shard", shard.to_string().parse().unwrap());
                    r
                }
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        warp::serve(route)
            .incoming(listener)
            .graceful(cancel.cancelled_owned())
            .run(),
    );
    (addr, hits)
}

// === harness ===

struct Fleet {
    router: SocketAddr,
    kv: MemKv,
    resolver: Arc<MemResolver>,
    backends: Vec<(SocketAddr, Arc<AtomicU64>, CancellationToken)>,
    truth: Arc<Mutex<Option<ShardMap>>>,
    http: reqwest::Client,
    authority: Authority,
    cancel: CancellationToken,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn fleet(shards: u32, config: RouterConfig) -> Fleet {
    fleet_with(shards, config, |_, _| {}).await
}

/// A fleet whose resolver `setup` may change before the router starts (and caches it).
async fn fleet_with(
    shards: u32,
    config: RouterConfig,
    setup: impl FnOnce(&MemResolver, &[(SocketAddr, Arc<AtomicU64>, CancellationToken)]),
) -> Fleet {
    let cancel = CancellationToken::new();
    let truth = Arc::new(Mutex::new(None));
    let resolver = Arc::new(MemResolver::default());
    let mut backends = Vec::new();
    for k in 0..shards {
        let own = cancel.child_token();
        let (addr, hits) = backend(k, truth.clone(), own.clone()).await;
        resolver.set(k, vec![addr]);
        backends.push((addr, hits, own));
    }
    setup(&resolver, &backends);
    let kv = MemKv::new();
    kv.put(ShardMap::uniform(shards).to_json());
    let authority = Authority::new(Some(ADMIN.into()), vec![SECRET.into()]).unwrap();
    let router = start_router(&kv, resolver.clone(), &authority, config, &cancel).await;
    let f = Fleet {
        router,
        kv,
        resolver,
        backends,
        truth,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        authority,
        cancel,
    };
    f.wait_version(1).await;
    // Let the first background resolution of every shard finish, so the tests can count
    // the resolutions their own requests cause.
    eventually("the first resolution of every shard", || async {
        (f.resolver.calls.load(Ordering::SeqCst) >= u64::from(shards)).then_some(())
    })
    .await;
    f
}

/// A router over `kv` and `resolver` on a port of its own.
async fn start_router(
    kv: &MemKv,
    resolver: Arc<MemResolver>,
    authority: &Authority,
    config: RouterConfig,
    cancel: &CancellationToken,
) -> SocketAddr {
    let tracker = TaskTracker::new();
    let maps = wafleet::router::watch_map(
        Arc::new(kv.clone()),
        WatchOptions {
            wait: Duration::from_secs(5),
            burst: 50,
            refill: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        &tracker,
        cancel.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = listener.local_addr().unwrap();
    let deps = RouterDeps {
        maps,
        resolver,
        authority: authority.clone(),
        shard_admin: None,
    };
    tokio::spawn(wafleet::router::run(listener, config, deps, cancel.clone()));
    router
}

fn fast() -> RouterConfig {
    RouterConfig {
        dns_cache_ttl: Duration::from_millis(100),
        upstream_timeout: Duration::from_millis(500),
        ..RouterConfig::default()
    }
}

/// No background refresh during the test: only failures re-resolve.
fn no_refresh() -> RouterConfig {
    RouterConfig {
        dns_cache_ttl: Duration::from_secs(3600),
        ..fast()
    }
}

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}

/// Polls `f` until it returns Some, failing after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Fleet {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.router)
    }
    fn admin(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.bearer_auth(ADMIN)
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.admin(self.http.get(self.url(path)))
            .send()
            .await
            .unwrap()
    }
    async fn readyz_version(&self) -> Option<u64> {
        let r = self.http.get(self.url("/readyz")).send().await.ok()?;
        r.json::<Value>().await.ok()?["version"].as_u64()
    }
    async fn wait_version(&self, v: u64) {
        eventually(&format!("map version {v}"), || async {
            (self.readyz_version().await == Some(v)).then_some(())
        })
        .await;
    }
}

async fn json(r: reqwest::Response) -> (u16, http::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// `POST /v1/workspaces/{w}/sessions` through the router as admin.
async fn create_session(
    f: &Fleet,
    w: &WorkspaceId,
    body: reqwest::Body,
) -> (u16, http::HeaderMap, Value) {
    let r = f
        .admin(f.http.post(f.url(&format!("/v1/workspaces/{w}/sessions"))))
        .body(body)
        .send()
        .await
        .unwrap();
    json(r).await
}
