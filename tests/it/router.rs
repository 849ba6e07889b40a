//! The router against the built-in Consul agent: the production wiring (`router::cli::serve`:
//! KV blocking watch, DNS SRV resolution, registration) with the agent in-process on port 0,
//! and small warp backends registered as `wafleet-worker` (tag `shard-K`, passing TTL check)
//! playing the workers. Also the real `wafleet router` binary's readiness line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use wafleet::auth::Authority;
use wafleet::consul::{Client, Config, PutOptions, QueryOptions, SrvResolver};
use wafleet::consul_dev::{AgentConfig, RunningAgent};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;
use wafleet::shutdown::CancellationToken;
use warp::Filter;

const ADMIN: &str = "router-test-admin-token";
const SECRET: &str = "router-test-secret-0123456789";
const MAP_KEY: &str = "wafleet/shardmap";

/// Polls `f` until it returns Some; panics after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker stand-in: answers `X-Wafleet-Shard: K`, 421 for workspaces its `truth` map does
/// not give it, and sleeps on `…/slow`.
async fn backend(
    shard: u32,
    truth: Arc<Mutex<Option<ShardMap>>>,
    cancel: CancellationToken,
) -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let route = warp::any()
        .and(warp::path::full())
        .and(warp::body::bytes())
        .then(move |path: warp::path::FullPath, body: Bytes| {
            let truth = truth.clone();
            let hits = h.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let path = path.as_str().to_owned();
                let ws = path
                    .strip_prefix("/v1/workspaces/")
                    .and_then(|r| r.split('/').next())
                    .and_then(|w| WorkspaceId::new(w).ok());
                let not_mine = matches!((&ws, truth.lock().unwrap().as_ref()),
                    (Some(ws), Some(m)) if m.owner(ws) != Some(shard));
                if not_mine {
                    let r = warp::reply::json(&json!({"error": "not_owner", "message": "no"}));
                    return warp::reply::Reply::into_response(warp::reply::with_status(
                        r,
                        warp::http::StatusCode::MISDIRECTED_REQUEST,
                    ));
                }
                if path.ends_with("/slow") {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                let mut r = warp::reply::Reply::into_response(warp::reply::json(
                    &json!({"shard": shard, "path": path, "body_len": body.len()}),
                ));
                r.headers_mut()
                    .insert("x-wafleet-shard", shard.to_string().parse().unwrap());
                r
            }
        });
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

struct Env {
    agent: RunningAgent,
    consul: Client,
    router: SocketAddr,
    http: reqwest::Client,
    cancel: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Env {
    /// The agent, plus a router with `dns_ttl_ms` and `timeout_secs`.
    async fn start(dns_ttl_ms: u64, timeout_secs: u64) -> Env {
        let cancel = CancellationToken::new();
        let agent = wafleet::consul_dev::spawn(AgentConfig::default(), cancel.clone())
            .await
            .unwrap();
        let consul = Client::new(&Config::http(agent.http_addr())).unwrap();
        let dns = SrvResolver::new(agent.dns_addr()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = listener.local_addr().unwrap();
        let args = wafleet::router::cli::Args {
            listen: router,
            kv_prefix: "wafleet".into(),
            dns_cache_ttl_ms: dns_ttl_ms,
            upstream_timeout_secs: timeout_secs,
            table_file: None,
            profile_max_bytes: wafleet::migrate::profile::DEFAULT_MAX_PROFILE_BYTES,
        };
        let authority = Authority::new(Some(ADMIN.into()), vec![SECRET.into()]).unwrap();
        let c = cancel.clone();
        let client = consul.clone();
        tokio::spawn(async move {
            wafleet::router::cli::serve(listener, &args, client, dns, authority, c)
                .await
                .unwrap()
        });
        Env {
            agent,
            consul,
            router,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            cancel,
        }
    }

    async fn put_map(&self, bytes: &[u8]) {
        let (pair, _) = self
            .consul
            .kv_get(MAP_KEY, &QueryOptions::default())
            .await
            .unwrap();
        let opts = PutOptions {
            cas: Some(pair.map_or(0, |p| p.modify_index)),
            ..PutOptions::default()
        };
        assert!(self.consul.kv_put(MAP_KEY, bytes, &opts).await.unwrap());
    }

    /// Registers `addr` as shard `k`'s worker with a passing TTL check.
    async fn register(&self, k: u32, addr: SocketAddr) {
        let id = format!("wafleet-worker-{k}");
        let reg = json!({
            "ID": id, "Name": "wafleet-worker", "Tags": [format!("shard-{k}")],
            "Address": addr.ip().to_string(), "Port": addr.port(),
            "Meta": {"shard": k.to_string(), "version": "test"},
            "Checks": [{"CheckID": format!("{id}:ttl"), "TTL": "60s"}],
        });
        assert_eq!(self.agent_put("/v1/agent/service/register", reg).await, 200);
        let pass = format!("/v1/agent/check/pass/{id}:ttl");
        assert_eq!(self.agent_put(&pass, json!({})).await, 200);
    }

    async fn agent_put(&self, path: &str, body: Value) -> u16 {
        self.http
            .put(format!("{}{path}", self.agent.http_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn agent_post(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.agent.http_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.router)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    }

    async fn version(&self) -> Option<u64> {
        let r = self.http.get(self.url("/readyz")).send().await.ok()?;
        r.json::<Value>().await.ok()?["version"].as_u64()
    }

    async fn wait_version(&self, v: u64) {
        eventually(&format!("router map version {v}"), || async {
            (self.version().await == Some(v)).then_some(())
        })
        .await;
    }

    /// Waits until every shard of the map has a healthy instance in the router's table.
    async fn wait_healthy(&self, n: usize) {
        eventually("every shard healthy", || async {
            let b: Value = self.get("/v1/shards").await.json().await.ok()?;
            let shards = b["shards"].as_array()?;
            (shards.len() == n && shards.iter().all(|s| s["healthy"] == true)).then_some(())
        })
        .await;
    }
}

/// Three registered backends and a uniform map of three shards.
async fn three_shards(env: &Env) -> Vec<(SocketAddr, Arc<AtomicU64>)> {
    let mut out = Vec::new();
    for k in 0..3 {
        let b = backend(k, Arc::default(), env.cancel.clone()).await;
        env.register(k, b.0).await;
        out.push(b);
    }
    env.put_map(&ShardMap::uniform(3).to_json()).await;
    env.wait_version(1).await;
    env.wait_healthy(3).await;
    out
}

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}

#[tokio::test]
async fn requests_route_by_owner_and_one_down_shard_is_503_alone() {
    let env = Env::start(100, 30).await;
    three_shards(&env).await;
    let map = ShardMap::uniform(3);
    let all: Vec<WorkspaceId> = (0..90).map(|i| ws(&format!("acme-{i}"))).collect();
    for w in &all {
        let r = env.get(&format!("/v1/workspaces/{w}/sessions")).await;
        assert_eq!(r.status(), 200, "{w}");
        assert_eq!(
            r.headers()["x-wafleet-shard"],
            map.owner(w).unwrap().to_string().as_str()
        );
    }
    // Shard 1's check goes critical: DNS drops it, the router answers 503 for it alone.
    env.agent_put("/v1/agent/check/fail/wafleet-worker-1:ttl", json!({}))
        .await;
    let victim = all.iter().find(|w| map.owner(w) == Some(1)).unwrap();
    eventually("shard 1 seen down", || async {
        (env.get(&format!("/v1/workspaces/{victim}/sessions"))
            .await
            .status()
            == 503)
            .then_some(())
    })
    .await;
    for w in &all {
        let r = env.get(&format!("/v1/workspaces/{w}/sessions")).await;
        if map.owner(w) == Some(1) {
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()["retry-after"], "2");
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["error"], "shard_unavailable");
            assert_eq!(b["shard"], 1);
        } else {
            assert_eq!(r.status(), 200, "unaffected shard must see no error: {w}");
        }
    }
    // Back to passing: it answers again.
    env.agent_put("/v1/agent/check/pass/wafleet-worker-1:ttl", json!({}))
        .await;
    eventually("shard 1 back", || async {
        (env.get(&format!("/v1/workspaces/{victim}/sessions"))
            .await
            .status()
            == 200)
            .then_some(())
    })
    .await;
    // The router registered itself.
    let services: Value = env
        .http
        .get(format!("{}/v1/agent/services", env.agent.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        services
            .as_object()
            .unwrap()
            .values()
            .any(|s| s["Service"] == "wafleet-router"),
        "{services}"
    );
}

/// `wafleet_router_map_rejected_total` from the router's /metrics (0 when absent).
async fn rejected(env: &Env) -> u64 {
    let text = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("wafleet_router_map_rejected_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn a_corrupt_map_in_kv_is_refused_and_the_last_good_one_kept() {
    // The only test of this binary that writes corrupt maps, so the process-wide counter is
    // ours alone.
    let env = Env::start(100, 30).await;
    three_shards(&env).await;
    let map = ShardMap::uniform(3);
    let mut seen = rejected(&env).await;
    for corrupt in [
        &b"{\"version\": 2, \"shards\": ["[..],
        &br#"{"version":3,"shards":[{"id":0,"weight":-1}]}"#[..],
        &br#"{"version":3,"shards":[{"id":0}],"draining":[0]}"#[..],
    ] {
        env.put_map(corrupt).await;
        seen = eventually("the router to refuse the corrupt map", || async {
            let n = rejected(&env).await;
            (n > seen).then_some(n)
        })
        .await;
        assert_eq!(env.version().await, Some(1));
        for i in 0..10 {
            let w = ws(&format!("w{i}"));
            let r = env.get(&format!("/v1/workspaces/{w}/sessions")).await;
            assert_eq!(r.status(), 200);
            assert_eq!(
                r.headers()["x-wafleet-shard"],
                map.owner(&w).unwrap().to_string().as_str()
            );
        }
    }
    let mut good = ShardMap::uniform(2);
    good.version = 4;
    env.put_map(&good.to_json()).await;
    env.wait_version(4).await;
}

#[tokio::test]
async fn a_421_is_retried_once_after_a_refresh() {
    // A long DNS TTL so only the 421 makes the router re-resolve.
    let env = Env::start(3_600_000, 30).await;
    let truth = Arc::new(Mutex::new(Some(ShardMap::uniform(2))));
    let (a0, hits0) = backend(0, truth.clone(), env.cancel.clone()).await;
    let (a1, hits1) = backend(1, truth.clone(), env.cancel.clone()).await;
    // Stale registration: shard 0's name points at shard 1's worker.
    env.register(0, a1).await;
    env.register(1, a1).await;
    env.put_map(&ShardMap::uniform(2).to_json()).await;
    env.wait_version(1).await;
    env.wait_healthy(2).await;
    env.register(0, a0).await;
    let map = ShardMap::uniform(2);
    let w = (0..100)
        .map(|i| ws(&format!("m{i}")))
        .find(|w| map.owner(w) == Some(0))
        .unwrap();
    let (h0, h1) = (hits0.load(Ordering::SeqCst), hits1.load(Ordering::SeqCst));
    let r = env
        .http
        .post(env.url(&format!("/v1/workspaces/{w}/sessions")))
        .bearer_auth(ADMIN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-wafleet-shard"], "0");
    assert_eq!(hits1.load(Ordering::SeqCst), h1 + 1, "exactly one 421");
    assert_eq!(hits0.load(Ordering::SeqCst), h0 + 1, "exactly one retry");
}

#[tokio::test]
async fn dead_and_slow_workers_give_503_and_504() {
    let env = Env::start(100, 1).await;
    let (a0, _) = backend(0, Arc::default(), env.cancel.clone()).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    env.register(0, a0).await;
    env.register(1, dead).await;
    env.put_map(&ShardMap::uniform(2).to_json()).await;
    env.wait_version(1).await;
    env.wait_healthy(2).await;
    let map = ShardMap::uniform(2);
    let on = |k| {
        (0..100)
            .map(|i| ws(&format!("d{i}")))
            .find(|w| map.owner(w) == Some(k))
            .unwrap()
    };
    // Nobody listens on shard 1's address (a worker restarting in place, its health check not
    // caught up yet): a refused connection is a 503 with Retry-After, not a 502.
    let r = env.get(&format!("/v1/workspaces/{}/sessions", on(1))).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["error"], "shard_unavailable", "{body}");
    assert_eq!(body["shard"], 1, "{body}");
    let r = env
        .get(&format!("/v1/workspaces/{}/sessions/s/slow", on(0)))
        .await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "upstream_timeout"
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let env = Env::start(100, 30).await;
    three_shards(&env).await;
    let token = Authority::new(None, vec![SECRET.into()])
        .unwrap()
        .mint(&ws("acme"))
        .unwrap();
    let h = &env.http;
    let cases = [
        (
            h.get(env.url("/v1/workspaces/a.b/sessions"))
                .bearer_auth(ADMIN),
            400,
            "invalid_workspace",
        ),
        (
            h.get(env.url("/v1/workspaces/acme/sessions")),
            401,
            "unauthorized",
        ),
        (
            h.get(env.url("/v1/workspaces/zeta/sessions"))
                .bearer_auth(&token),
            403,
            "forbidden",
        ),
        (
            h.get(env.url("/v1/nope")).bearer_auth(ADMIN),
            404,
            "not_found",
        ),
        (
            h.post(env.url("/v1/workspaces/acme/sessions"))
                .bearer_auth(ADMIN)
                .body(vec![b'x'; 2 * 1024 * 1024]),
            413,
            "payload_too_large",
        ),
    ];
    for (rb, status, code) in cases {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], code);
    }
    let r = h
        .get(env.url("/v1/workspaces/acme/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_router_keeps_routing_while_the_agent_is_paused() {
    let env = Env::start(100, 30).await;
    three_shards(&env).await;
    let map = ShardMap::uniform(3);
    env.agent_post("/_dev/faults/pause", json!({"mode": "hang"}))
        .await;
    // Wait until the background refresh has failed for every shard (DNS hangs, the lookups
    // time out), so what follows is served from the last good table only.
    eventually("failed refreshes", || async {
        let b: Value = env.get("/v1/shards").await.json().await.ok()?;
        b["shards"]
            .as_array()?
            .iter()
            .all(|s| s["error"].is_string())
            .then_some(())
    })
    .await;
    for i in 0..30 {
        let w = ws(&format!("p{i}"));
        let r = env.get(&format!("/v1/workspaces/{w}/sessions")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-wafleet-shard"],
            map.owner(&w).unwrap().to_string().as_str()
        );
    }
    assert_eq!(env.version().await, Some(1));
    env.agent_post("/_dev/faults/resume", json!({})).await;
    // After the pause a new map still arrives (the watch recovered).
    let mut next = ShardMap::uniform(3);
    next.version = 2;
    env.put_map(&next.to_json()).await;
    env.wait_version(2).await;
}

#[tokio::test]
async fn the_binary_prints_one_readiness_line() {
    use tokio::io::AsyncBufReadExt;
    let cancel = CancellationToken::new();
    let agent = wafleet::consul_dev::spawn(AgentConfig::default(), cancel.clone())
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wafleet"))
        .args(["router", "--listen", "127.0.0.1:0"])
        .env("CONSUL_HTTP_ADDR", agent.http_url())
        .env("WAFLEET_CONSUL_DNS", agent.dns_addr().to_string())
        .env("WAFLEET_ADMIN_TOKEN", ADMIN)
        .env_remove("WAFLEET_TOKEN_SECRET")
        .env_remove("WAFLEET_TOKEN_SECRET_PREVIOUS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("readiness line in time")
        .unwrap()
        .unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["ready"], true);
    let addr: SocketAddr = ready["http"].as_str().unwrap().parse().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Not ready until a map exists; ready once one is written.
    let r = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let consul = Client::new(&Config::http(agent.http_addr())).unwrap();
    let create = PutOptions {
        cas: Some(0),
        ..PutOptions::default()
    };
    assert!(
        consul
            .kv_put(MAP_KEY, &ShardMap::uniform(1).to_json(), &create)
            .await
            .unwrap()
    );
    eventually("the binary to load the map", || async {
        let r = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    cancel.cancel();
}
