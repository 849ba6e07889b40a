//! The router's answers when things go wrong: a 421 retried once or followed to the owner the
//! worker names, refused connections, slow workers, bad requests, the admin routes and metrics, and
//! readiness before a map loads.

use super::*;

/// A workspace of shard 0 under `ShardMap::uniform(2)`.
pub(super) fn shard0_workspace() -> WorkspaceId {
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
