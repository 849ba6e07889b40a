//! Routing through the router: requests land on the owner with their headers, large and slow bodies
//! stream both ways, a shard without instances, a corrupt map, sources that are down, and the table
//! file used without Consul.

use super::*;

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
