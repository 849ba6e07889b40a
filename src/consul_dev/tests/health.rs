//! Services and health over HTTP: registration, checks (TTL, HTTP), filters and tags, health
//! blocking queries, session invalidation by TTL, and transactions.

use super::*;

pub(super) async fn register(a: &Agent, body: Value) {
    let r = a.put("/v1/agent/service/register", body.to_string()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test]
async fn register_health_passing_tag_and_filter() {
    let a = Agent::start().await;
    for k in 1..=2 {
        register(
            &a,
            json!({
                "ID": format!("wafleet-worker-{k}"), "Name": "wafleet-worker",
                "Tags": [format!("shard-{k}")], "Meta": {"shard": k.to_string(), "version": "1"},
                "Address": "127.0.0.1", "Port": 9000 + k,
                "Check": {"CheckID": format!("worker-{k}-ttl"), "TTL": "15s", "DeregisterCriticalServiceAfter": "1m"}
            }),
        )
        .await;
    }
    let services: Value = a.get("/v1/agent/services").await.json().await.unwrap();
    assert_eq!(services["wafleet-worker-1"]["Service"], "wafleet-worker");
    assert_eq!(services["wafleet-worker-2"]["Port"], 9002);
    let all: Value = a
        .get("/v1/health/service/wafleet-worker")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let checks = all[0]["Checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "passing")
    );
    assert!(
        checks
            .iter()
            .any(|c| c["CheckID"] == "worker-1-ttl" && c["Status"] == "critical")
    );
    // New checks start critical: nothing passes yet.
    let passing: Value = a
        .get("/v1/health/service/wafleet-worker?passing")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(passing, json!([]));
    assert_eq!(
        a.put("/v1/agent/check/pass/worker-2-ttl?note=hi", "")
            .await
            .status(),
        200
    );
    let passing: Value = a
        .get("/v1/health/service/wafleet-worker?passing=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(passing.as_array().unwrap().len(), 1);
    assert_eq!(passing[0]["Service"]["ID"], "wafleet-worker-2");
    let out = passing[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "worker-2-ttl")
        .cloned()
        .unwrap();
    assert_eq!(out["Output"], "hi");
    // passing=false keeps everything.
    let all: Value = a
        .get("/v1/health/service/wafleet-worker?passing=false")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let tagged: Value = a
        .get("/v1/health/service/wafleet-worker?tag=shard-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    assert_eq!(tagged[0]["Service"]["ID"], "wafleet-worker-1");
    let filtered: Value = a
        .get(&format!(
            "/v1/health/service/wafleet-worker?filter={}",
            enc(r#"Service.Meta.shard == "2""#)
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["Service"]["Meta"]["shard"], "2");
    let filtered: Value = a
        .get(&format!(
            "/v1/health/service/wafleet-worker?filter={}",
            enc(r#""shard-1" in Service.Tags"#)
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered[0]["Service"]["ID"], "wafleet-worker-1");
    let bad = a
        .get(&format!(
            "/v1/health/service/wafleet-worker?filter={}",
            enc(r#"Service.Meta.shard matches "2""#)
        ))
        .await;
    assert_eq!(bad.status(), 400);
    // Unknown service: 200 [].
    let r = a.get("/v1/health/service/nothing").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "[]");
    let catalog: Value = a.get("/v1/catalog/services").await.json().await.unwrap();
    assert_eq!(catalog["wafleet-worker"], json!(["shard-1", "shard-2"]));
    // Deregister.
    assert_eq!(
        a.put("/v1/agent/service/deregister/wafleet-worker-1", "")
            .await
            .status(),
        200
    );
    let all: Value = a
        .get("/v1/health/service/wafleet-worker")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn check_update_errors_and_bad_registrations() {
    let a = Agent::start().await;
    let r = a.put("/v1/agent/check/pass/ghost", "").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.unwrap(),
        "CheckID \"ghost\" does not have associated TTL"
    );
    let r = a.put("/v1/agent/service/register", "{").await;
    assert_eq!(r.status(), 400);
    let r = a.put("/v1/agent/service/register", r#"{"Port": 1}"#).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Missing service name");
    register(&a, json!({"Name": "svc", "Check": {"TTL": "10s"}})).await;
    let r = a
        .put(
            "/v1/agent/check/update/service:svc",
            r#"{"Status":"warning","Output":"meh"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let checks: Value = a.get("/v1/agent/checks").await.json().await.unwrap();
    assert_eq!(checks["service:svc"]["Status"], "warning");
    assert_eq!(checks["service:svc"]["Output"], "meh");
    assert_eq!(a.get("/v1/agent/service/register").await.status(), 405);
    assert_eq!(a.get("/v1/nothing/here").await.status(), 404);
}

#[tokio::test]
async fn health_blocking_query_wakes_when_a_ttl_check_expires() {
    let a = Agent::start().await;
    register(
        &a,
        json!({"ID": "w", "Name": "w", "Check": {"TTL": "200ms"}}),
    )
    .await;
    a.put("/v1/agent/check/pass/service:w", "").await;
    let r = a.get("/v1/health/service/w?passing").await;
    let mut idx = index_of(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 1);
    // Follow the blocking query until the instance is no longer passing (bounded loop).
    for _ in 0..50 {
        let r = a
            .get(&format!(
                "/v1/health/service/w?passing&index={idx}&wait=10s"
            ))
            .await;
        idx = index_of(&r);
        let body: Value = r.json().await.unwrap();
        if body.as_array().unwrap().is_empty() {
            let all: Value = a.get("/v1/health/service/w").await.json().await.unwrap();
            let c = all[0]["Checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["CheckID"] == "service:w")
                .cloned()
                .unwrap();
            assert_eq!(c["Status"], "critical");
            assert_eq!(c["Output"], "TTL expired");
            return;
        }
    }
    panic!("TTL check never expired");
}

#[tokio::test]
async fn http_checks_are_polled() {
    let a = Agent::with(AgentConfig {
        min_check_interval: Duration::from_millis(50),
        ..AgentConfig::default()
    })
    .await;
    // A tiny health endpoint on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = a.cancel.clone();
    tokio::spawn(
        warp::serve(warp::path("health").map(|| "ok"))
            .incoming(listener)
            .graceful(async move { cancel.cancelled().await })
            .run(),
    );
    register(
        &a,
        json!({"ID": "h", "Name": "h", "Port": addr.port(),
               "Check": {"HTTP": format!("http://{addr}/health"), "Interval": "100ms", "Timeout": "2s"}}),
    )
    .await;
    let mut idx = 1;
    for _ in 0..50 {
        let r = a
            .get(&format!(
                "/v1/health/service/h?passing&index={idx}&wait=10s"
            ))
            .await;
        idx = index_of(&r);
        let body: Value = r.json().await.unwrap();
        if body.as_array().unwrap().len() == 1 {
            return;
        }
    }
    panic!("HTTP check never passed");
}

#[tokio::test]
async fn session_ttl_invalidation_releases_the_lock_and_blocks_reacquire_during_lock_delay() {
    let a = Agent::with(AgentConfig {
        session_ttl_min: Duration::from_millis(100),
        session_ttl_multiplier: 1,
        ..AgentConfig::default()
    })
    .await;
    let dying = a.session(json!({"TTL": "200ms", "LockDelay": "60s"})).await;
    let other = a.session(json!({"LockDelay": "0s"})).await;
    assert_eq!(
        a.put_text(&format!("/v1/kv/locks/shard?acquire={dying}"), "me")
            .await
            .1,
        "true"
    );
    let mut idx = index_of(&a.get("/v1/kv/locks/shard").await);
    let mut released = false;
    for _ in 0..50 {
        let r = a
            .get(&format!("/v1/kv/locks/shard?index={idx}&wait=10s"))
            .await;
        idx = index_of(&r);
        let v: Value = r.json().await.unwrap();
        if v[0].get("Session").is_none() {
            released = true;
            break;
        }
    }
    assert!(released, "the lock was never released");
    let info: Value = a
        .get(&format!("/v1/session/info/{dying}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info, json!([]));
    // Within the 60s lock delay the other session cannot take it.
    assert_eq!(
        a.put_text(&format!("/v1/kv/locks/shard?acquire={other}"), "")
            .await
            .1,
        "false"
    );
}

#[tokio::test]
async fn txn_over_http() {
    let a = Agent::start().await;
    let ok = a
        .put(
            "/v1/txn",
            json!([
                {"KV": {"Verb": "set", "Key": "t/a", "Value": "MQ=="}},
                {"KV": {"Verb": "get", "Key": "t/a"}}
            ])
            .to_string(),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let v: Value = ok.json().await.unwrap();
    assert!(v["Results"][0]["KV"]["Value"].is_null());
    assert_eq!(v["Results"][1]["KV"]["Value"], "MQ==");
    assert!(v["Errors"].is_null());
    let fail = a
        .put(
            "/v1/txn",
            json!([
                {"KV": {"Verb": "set", "Key": "t/b", "Value": "Mg=="}},
                {"KV": {"Verb": "cas", "Key": "t/a", "Value": "Mg==", "Index": 99999}}
            ])
            .to_string(),
        )
        .await;
    assert_eq!(fail.status(), 409);
    let v: Value = fail.json().await.unwrap();
    assert_eq!(v["Errors"][0]["OpIndex"], 1);
    assert_eq!(a.get("/v1/kv/t/b").await.status(), 404, "rolled back");
    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"KV": {"Verb": "get", "Key": format!("k{i}")}}))
        .collect();
    assert_eq!(
        a.put("/v1/txn", json!(too_many).to_string()).await.status(),
        413
    );
    assert_eq!(a.put("/v1/txn", "nope").await.status(), 400);
}
