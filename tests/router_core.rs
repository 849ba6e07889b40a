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

// === tests ===

#[tokio::test]
async fn requests_land_on_the_owner_with_headers_preserved() {
    let f = fleet(3, fast()).await;
    let map = ShardMap::uniform(3);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..60 {
        let w = ws(&format!("tenant-{i}"));
        let token = f.authority.mint(&w).unwrap();
        let r = f
            .http
            .post(f.url(&format!("/v1/workspaces/{w}/sessions?x=1&y=%20z")))
            .bearer_auth(&token)
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "must-go")
            .header("x-request-id", format!("req-{i}"))
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
        let (status, headers, body) = json(r).await;
        assert_eq!(status, 200, "{body}");
        let owner = map.owner(&w).unwrap();
        seen.insert(owner);
        assert_eq!(headers["x-wafleet-shard"], owner.to_string().as_str());
        assert_eq!(body["shard"], owner);
        assert_eq!(body["method"], "POST");
        assert_eq!(body["path"], format!("/v1/workspaces/{w}/sessions"));
        assert_eq!(body["query"], "x=1&y=%20z");
        assert_eq!(body["body_len"], format!("{{\"n\":{i}}}").len());
        assert_eq!(body["authorization"], format!("Bearer {token}"));
        assert_eq!(body["x_custom"], "kept");
        assert_eq!(
            body["x_hop"],
            Value::Null,
            "hop-by-hop header named in Connection"
        );
        assert_eq!(body["x_request_id"], format!("req-{i}"));
        assert_eq!(headers["x-request-id"], format!("req-{i}").as_str());
    }
    assert_eq!(seen.len(), 3, "60 workspaces spread over every shard");
    // Without a request id, one is generated and sent both ways.
    let (_, headers, body) = json(f.get("/v1/workspaces/acme/sessions").await).await;
    let rid = headers["x-request-id"].to_str().unwrap();
    assert_eq!(rid.len(), 26);
    assert_eq!(body["x_request_id"], rid);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let f = fleet(2, fast()).await;
    // 8 MiB chunked upload to a media route (cap 32 MiB), streamed rather than buffered.
    let chunks = (0..128).map(|i| Ok::<_, Infallible>(Bytes::from(vec![(i % 7) as u8; 65536])));
    let expected_sum: u64 = (0..128u64).map(|i| (i % 7) * 65536).sum();
    let r = f
        .admin(
            f.http
                .post(f.url("/v1/workspaces/acme/sessions/s1/messages")),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body_len"], 128 * 65536);
    assert_eq!(body["body_sum"], expected_sum);
    // 4 MiB download.
    let r = f.get("/v1/workspaces/acme/sessions/s1/big").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 64 * 65536);
}

/// A profile upload (`PUT …/profile`) may be far above the 1 MiB cap and take longer to send
/// than the upstream timeout: the timeout counts from the end of the body, so it is not cut.
#[tokio::test]
async fn slow_large_profile_uploads_pass_the_cap_and_are_not_timed_out() {
    let f = fleet(1, fast()).await;
    // 8 chunks of 512 KiB, one every 150 ms: 4 MiB over ~1.2 s, past the 500 ms timeout.
    let paced = |n: u64| {
        futures::stream::unfold(0u64, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            Some((
                Ok::<_, Infallible>(Bytes::from(vec![1u8; 512 * 1024])),
                i + 1,
            ))
        })
    };
    let r = f
        .admin(f.http.put(f.url("/v1/workspaces/acme/sessions/s1/profile")))
        .body(reqwest::Body::wrap_stream(paced(8)))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body_len"], 8 * 512 * 1024);
    assert_eq!(body["method"], "PUT");
    // The same body on an ordinary route is over its cap.
    let r = f
        .admin(f.http.put(f.url("/v1/workspaces/acme/sessions/s1/other")))
        .body(reqwest::Body::wrap_stream(paced(4)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn a_shard_without_instances_answers_503_alone() {
    let f = fleet(3, fast()).await;
    let map = ShardMap::uniform(3);
    f.resolver.set(1, vec![]);
    let victims: Vec<WorkspaceId> = (0..40)
        .map(|i| ws(&format!("w{i}")))
        .filter(|w| map.owner(w) == Some(1))
        .collect();
    let others: Vec<WorkspaceId> = (0..40)
        .map(|i| ws(&format!("w{i}")))
        .filter(|w| map.owner(w) != Some(1))
        .collect();
    assert!(!victims.is_empty() && !others.is_empty());
    eventually("shard 1 to be seen down", || async {
        let r = f
            .get(&format!("/v1/workspaces/{}/sessions", victims[0]))
            .await;
        (r.status() == 503).then_some(())
    })
    .await;
    for w in &victims {
        let (status, headers, body) =
            json(f.get(&format!("/v1/workspaces/{w}/sessions")).await).await;
        assert_eq!(status, 503);
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(body["error"], "shard_unavailable");
        assert_eq!(body["shard"], 1);
    }
    for w in &others {
        let r = f.get(&format!("/v1/workspaces/{w}/sessions")).await;
        assert_eq!(r.status(), 200, "{w}");
    }
    let (status, _, body) = json(f.get("/v1/shards").await).await;
    assert_eq!(status, 200);
    let healthy: Vec<bool> = body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["healthy"].as_bool().unwrap())
        .collect();
    assert_eq!(healthy, vec![true, false, true]);
}

#[tokio::test]
async fn a_corrupt_map_is_refused_and_the_last_good_one_kept() {
    let f = fleet(2, fast()).await;
    for corrupt in [
        b"{not json".to_vec(),
        br#"{"version":5,"shards":[]}"#.to_vec(),
        br#"{"version":6,"shards":[{"id":0}],"pins":{"a":9}}"#.to_vec(),
    ] {
        // A read that starts after the put means the loop has judged the corrupt value.
        let before = f.kv.reads.load(Ordering::SeqCst);
        f.kv.put(corrupt);
        eventually("the watch to read the corrupt map", || async {
            (f.kv.reads.load(Ordering::SeqCst) > before).then_some(())
        })
        .await;
        assert_eq!(f.readyz_version().await, Some(1));
        assert_eq!(f.get("/v1/workspaces/acme/sessions").await.status(), 200);
    }
    let mut next = ShardMap::uniform(3);
    next.version = 7;
    f.kv.put(next.to_json());
    f.wait_version(7).await;
}

#[tokio::test]
async fn routing_continues_while_the_sources_are_down() {
    let f = fleet(2, fast()).await;
    for i in 0..10 {
        assert_eq!(
            f.get(&format!("/v1/workspaces/w{i}/sessions"))
                .await
                .status(),
            200
        );
    }
    f.kv.fail.store(true, Ordering::SeqCst);
    f.resolver.fail.store(true, Ordering::SeqCst);
    let calls = f.resolver.calls.load(Ordering::SeqCst);
    // Wait until the background refresh has failed at least twice, then route.
    eventually("failed refreshes", || async {
        (f.resolver.calls.load(Ordering::SeqCst) >= calls + 4).then_some(())
    })
    .await;
    for i in 0..10 {
        assert_eq!(
            f.get(&format!("/v1/workspaces/w{i}/sessions"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(f.readyz_version().await, Some(1));
}

#[tokio::test]
async fn a_router_started_without_consul_routes_with_its_table_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router-table.json");
    let config = || RouterConfig {
        table_file: Some(file.clone()),
        ..fast()
    };
    // A router with Consul up writes its table.
    let f = fleet(2, config()).await;
    assert_eq!(f.get("/v1/workspaces/w1/sessions").await.status(), 200);
    let addrs: Vec<SocketAddr> = f.backends.iter().map(|b| b.0).collect();
    eventually("the table file", || async {
        let t = wafleet::router::snapshot::load(&file).ok()??;
        (t.map.version == 1
            && t.instances.get(&0) == Some(&vec![addrs[0]])
            && t.instances.get(&1) == Some(&vec![addrs[1]]))
        .then_some(())
    })
    .await;

    // Another router starts while Consul (KV and DNS) cannot be reached: it routes every
    // workspace to its owner from the file.
    let kv = MemKv::new();
    kv.fail.store(true, Ordering::SeqCst);
    let dead = Arc::new(MemResolver::default());
    dead.fail.store(true, Ordering::SeqCst);
    let cancel = CancellationToken::new();
    let cold = start_router(&kv, dead.clone(), &f.authority, config(), &cancel).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let map = ShardMap::uniform(2);
    for i in 0..10 {
        let w = ws(&format!("w{i}"));
        let r = http
            .get(format!("http://{cold}/v1/workspaces/{w}/sessions"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{w}");
        let owner = map.owner(&w).unwrap().to_string();
        assert_eq!(r.headers()["x-wafleet-shard"], owner.as_str(), "{w}");
    }
    // Its health view says where the instances came from.
    let shards: Value = http
        .get(format!("http://{cold}/v1/shards"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shards["version"], 1, "{shards}");
    assert!(
        shards["shards"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("table file")),
        "{shards}"
    );

    // Consul comes back with a newer map: it replaces the file's.
    let mut newer = ShardMap::uniform(2);
    newer.version = 2;
    kv.put(newer.to_json());
    dead.set(0, vec![addrs[0]]);
    dead.set(1, vec![addrs[1]]);
    kv.fail.store(false, Ordering::SeqCst);
    dead.fail.store(false, Ordering::SeqCst);
    eventually("the live map", || async {
        let r = http
            .get(format!("http://{cold}/readyz"))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["version"] == 2).then_some(())
    })
    .await;
    cancel.cancel();
}

#[tokio::test]
async fn a_corrupt_table_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router-table.json");
    std::fs::write(&file, b"{\"map\": 42}").unwrap();
    let kv = MemKv::new();
    kv.fail.store(true, Ordering::SeqCst);
    let resolver = Arc::new(MemResolver::default());
    let authority = Authority::new(Some(ADMIN.into()), vec![SECRET.into()]).unwrap();
    let cancel = CancellationToken::new();
    let config = RouterConfig {
        table_file: Some(file.clone()),
        ..fast()
    };
    let router = start_router(&kv, resolver, &authority, config, &cancel).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = eventually("the router answers", || async {
        http.get(format!("http://{router}/readyz"))
            .send()
            .await
            .ok()
    })
    .await;
    assert_eq!(r.status(), 503, "no table: not ready");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"{\"map\": 42}",
        "left for the operator"
    );
    cancel.cancel();
}

/// A workspace of shard 0 under `ShardMap::uniform(2)`.
fn shard0_workspace() -> WorkspaceId {
    let map = ShardMap::uniform(2);
    (0..100)
        .map(|i| ws(&format!("m{i}")))
        .find(|w| map.owner(w) == Some(0))
        .unwrap()
}

#[tokio::test]
async fn a_421_is_retried_once_after_a_refresh() {
    // Stale resolution cached at start: shard 0's name points at shard 1's worker, which
    // answers 421 for shard 0's workspaces.
    let f = fleet_with(2, no_refresh(), |r, b| r.set(0, vec![b[1].0])).await;
    *f.truth.lock().unwrap() = Some(ShardMap::uniform(2));
    let w = shard0_workspace();
    let (a0, hits0, _) = f.backends[0].clone();
    let hits1 = f.backends[1].1.clone();
    // The resolver now knows better; the router learns it only from the 421.
    f.resolver.set(0, vec![a0]);
    let (h0, h1, calls) = (
        hits0.load(Ordering::SeqCst),
        hits1.load(Ordering::SeqCst),
        f.resolver.calls.load(Ordering::SeqCst),
    );
    let (status, headers, _) = create_session(&f, &w, "{}".into()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-wafleet-shard"], "0");
    assert_eq!(hits1.load(Ordering::SeqCst), h1 + 1, "one 421");
    assert_eq!(hits0.load(Ordering::SeqCst), h0 + 1, "one retry");
    assert_eq!(
        f.resolver.calls.load(Ordering::SeqCst),
        calls + 1,
        "one refresh"
    );
}

#[tokio::test]
async fn a_421_follows_the_owner_the_worker_names() {
    // The workers' map is newer than the router's: it pins shard 0's workspace to shard 1.
    let f = fleet(2, no_refresh()).await;
    let w = shard0_workspace();
    let mut newer = ShardMap::uniform(2);
    newer.version = 2;
    newer.pins.insert(w.clone(), 1);
    *f.truth.lock().unwrap() = Some(newer);
    let (hits0, hits1) = (f.backends[0].1.clone(), f.backends[1].1.clone());
    let (h0, h1) = (hits0.load(Ordering::SeqCst), hits1.load(Ordering::SeqCst));
    let (status, headers, _) = create_session(&f, &w, "{}".into()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-wafleet-shard"], "1", "served by the named owner");
    assert_eq!(hits0.load(Ordering::SeqCst), h0 + 1, "one 421 from shard 0");
    assert_eq!(hits1.load(Ordering::SeqCst), h1 + 1, "one retry on shard 1");
}

#[tokio::test]
async fn an_unresolved_421_becomes_a_retryable_503() {
    let f = fleet_with(2, no_refresh(), |r, b| r.set(0, vec![b[1].0])).await;
    *f.truth.lock().unwrap() = Some(ShardMap::uniform(2));
    let w = shard0_workspace();
    let hits1 = f.backends[1].1.clone();
    let moving = |status: u16, headers: &http::HeaderMap, body: &serde_json::Value| {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "workspace_moving", "{body}");
        assert_eq!(body["shard"], 0, "{body}");
        assert_eq!(headers["retry-after"], "1");
    };
    // Small body, resolution still wrong: one retry, then a 503 the client may retry.
    let h1 = hits1.load(Ordering::SeqCst);
    let (status, headers, body) = create_session(&f, &w, "{}".into()).await;
    moving(status, &headers, &body);
    assert_eq!(hits1.load(Ordering::SeqCst), h1 + 2);
    // A streamed body cannot be replayed: no retry at all, the same 503.
    let chunks = (0..4).map(|_| Ok::<_, Infallible>(Bytes::from(vec![1u8; 65536])));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, headers, body) = create_session(&f, &w, body).await;
    moving(status, &headers, &body);
    assert_eq!(hits1.load(Ordering::SeqCst), h1 + 3);
}

#[tokio::test]
async fn refused_connections_re_resolve_once_then_503() {
    let f = fleet(1, no_refresh()).await;
    let (addr, _, stop) = f.backends[0].clone();
    stop.cancel();
    eventually("the backend to stop listening", || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    // Still the dead address after re-resolution (refused: nobody listens): 503 with
    // Retry-After, after exactly one resolution.
    let calls = f.resolver.calls.load(Ordering::SeqCst);
    let (status, headers, body) = json(f.get("/v1/workspaces/acme/sessions").await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "shard_unavailable");
    assert_eq!(body["shard"], 0);
    assert_eq!(f.resolver.calls.load(Ordering::SeqCst), calls + 1);
    // The shard comes back elsewhere: the re-resolution finds it and the retry succeeds.
    let (fresh, hits) = backend(0, f.truth.clone(), f.cancel.child_token()).await;
    f.resolver.set(0, vec![fresh]);
    let calls = f.resolver.calls.load(Ordering::SeqCst);
    let r = f.get("/v1/workspaces/acme/sessions").await;
    assert_eq!(r.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(f.resolver.calls.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test]
async fn slow_workers_give_504() {
    let f = fleet(1, fast()).await;
    let (status, _, body) = json(f.get("/v1/workspaces/acme/sessions/s/slow").await).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"], "upstream_timeout");
    assert_eq!(body["shard"], 0);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let f = fleet(2, fast()).await;
    let token = f.authority.mint(&ws("acme")).unwrap();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            f.admin(f.http.get(f.url("/v1/workspaces/bad.id/sessions"))),
            400,
            "invalid_workspace",
        ),
        (
            f.admin(f.http.get(f.url("/v1/workspaces/a%2Fb/sessions"))),
            400,
            "invalid_workspace",
        ),
        (
            f.http.get(f.url("/v1/workspaces/acme/sessions")),
            401,
            "unauthorized",
        ),
        (
            f.http
                .get(f.url("/v1/workspaces/acme/sessions"))
                .bearer_auth("nope"),
            401,
            "unauthorized",
        ),
        (
            f.http
                .get(f.url("/v1/workspaces/other/sessions"))
                .bearer_auth(&token),
            403,
            "forbidden",
        ),
        (
            f.http.get(f.url("/v1/shards")).bearer_auth(&token),
            403,
            "forbidden",
        ),
        (
            f.http.get(f.url("/v1/route/acme")).bearer_auth(&token),
            403,
            "forbidden",
        ),
        (f.admin(f.http.get(f.url("/v2/nothing"))), 404, "not_found"),
        (f.admin(f.http.get(f.url("/"))), 404, "not_found"),
        (
            f.admin(f.http.post(f.url("/v1/workspaces/acme/sessions")))
                .body(vec![0u8; 1024 * 1024 + 1]),
            413,
            "payload_too_large",
        ),
        (
            f.admin(f.http.post(f.url("/v1/workspaces/acme/sessions")))
                .body(reqwest::Body::wrap_stream(futures::stream::iter(
                    (0..40).map(|_| Ok::<_, Infallible>(Bytes::from(vec![0u8; 65536]))),
                ))),
            413,
            "payload_too_large",
        ),
    ];
    for (i, (rb, want, code)) in cases.into_iter().enumerate() {
        let (status, headers, body) = json(rb.send().await.unwrap()).await;
        assert_eq!(status, want, "case {i}: {body}");
        assert_eq!(body["error"], code, "case {i}");
        assert!(body["message"].is_string(), "case {i}");
        assert!(headers.contains_key("x-request-id"), "case {i}");
    }
    // The workspace's own token works.
    let r = f
        .http
        .get(f.url("/v1/workspaces/acme/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn admin_health_and_metrics() {
    let f = fleet(3, fast()).await;
    let map = ShardMap::uniform(3);
    let (status, _, body) = json(f.get("/v1/route/acme-42").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["shard"], map.owner(&ws("acme-42")).unwrap());
    assert_eq!(body["version"], 1);
    assert_eq!(body["pinned"], false);
    assert_eq!(body["instances"].as_array().unwrap().len(), 1);
    let (_, _, body) = json(f.get("/v1/shards").await).await;
    assert_eq!(body["version"], 1);
    assert_eq!(body["shards"].as_array().unwrap().len(), 3);
    assert_eq!(body["map"]["shards"].as_array().unwrap().len(), 3);
    assert_eq!(
        f.http.get(f.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(f.get("/v1/workspaces/acme/sessions").await.status(), 200);
    let text = f
        .http
        .get(f.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "wafleet_router_requests_total",
        "wafleet_router_request_duration_seconds",
        "wafleet_router_table_version",
        "wafleet_router_resolve_duration_seconds",
        "wafleet_router_shard_healthy",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let r = f
        .admin(f.http.post(f.url("/v1/shards")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn not_ready_until_a_map_loads() {
    let cancel = CancellationToken::new();
    let kv = MemKv::new();
    let tracker = TaskTracker::new();
    let maps = wafleet::router::watch_map(
        Arc::new(kv.clone()),
        WatchOptions::default(),
        &tracker,
        cancel.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let deps = RouterDeps {
        maps,
        resolver: Arc::new(MemResolver::default()),
        authority: Authority::new(Some(ADMIN.into()), vec![]).unwrap(),
        shard_admin: None,
    };
    let server = tokio::spawn(wafleet::router::run(listener, fast(), deps, cancel.clone()));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = http
        .get(format!("http://{addr}/v1/workspaces/acme/sessions"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_ready");
    kv.put(ShardMap::uniform(1).to_json());
    eventually("ready", || async {
        let r = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    cancel.cancel();
    server.await.unwrap().unwrap();
}
