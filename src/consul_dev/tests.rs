//! HTTP- and DNS-level tests of the built-in agent: real port-0 agents on 127.0.0.1, reqwest
//! for HTTP, hickory-proto messages over UDP/TCP for DNS.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use warp::Filter;

use super::{AgentConfig, RunningAgent, spawn};

struct Agent {
    agent: RunningAgent,
    cancel: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Agent {
    async fn start() -> Agent {
        Self::with(AgentConfig::default()).await
    }

    async fn with(cfg: AgentConfig) -> Agent {
        let cancel = CancellationToken::new();
        let agent = spawn(cfg, cancel.clone()).await.expect("agent starts");
        Agent {
            agent,
            cancel,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.agent.http_addr(), path)
    }

    async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .expect("request")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    async fn delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .send()
            .await
            .expect("request")
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    async fn put_text(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self.put(path, body).await;
        let s = r.status().as_u16();
        (s, r.text().await.expect("body"))
    }

    async fn session(&self, body: Value) -> String {
        let r = self.put("/v1/session/create", body.to_string()).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        v["ID"].as_str().expect("id").to_string()
    }
}

/// Sends one raw HTTP/1.1 request line (no normalisation) and returns the status code.
async fn raw_status(a: &Agent, request_line: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(a.agent.http_addr())
        .await
        .unwrap();
    s.write_all(
        format!("{request_line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let head = String::from_utf8_lossy(&out);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits (with a deadline) until at least `n` blocking queries are parked on the agent.
async fn wait_parked(a: &Agent, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while a.agent.parked_queries() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query never parked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn index_of(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("x-consul-index")
        .expect("X-Consul-Index")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn missing_key_is_404_with_index_and_leader_headers() {
    let a = Agent::start().await;
    let r = a.get("/v1/kv/wafleet/shardmap").await;
    assert_eq!(r.status(), 404);
    assert!(index_of(&r) >= 1);
    assert_eq!(r.headers()["x-consul-knownleader"], "true");
    assert_eq!(r.headers()["x-consul-lastcontact"], "0");
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn kv_put_get_roundtrip_with_flags_and_null_value() {
    let a = Agent::start().await;
    assert_eq!(
        a.put_text("/v1/kv/a/b?flags=42", "test").await,
        (200, "true".into())
    );
    let r = a.get("/v1/kv/a/b").await;
    assert_eq!(r.status(), 200);
    let idx = index_of(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["Key"], "a/b");
    assert_eq!(v[0]["Value"], "dGVzdA==");
    assert_eq!(v[0]["Flags"], 42);
    assert_eq!(v[0]["ModifyIndex"].as_u64(), Some(idx));
    assert!(v[0].get("Session").is_none());
    a.put("/v1/kv/empty", "").await;
    let v: Value = a.get("/v1/kv/empty").await.json().await.unwrap();
    assert!(v[0]["Value"].is_null());
    let raw = a.get("/v1/kv/a/b?raw").await;
    assert_eq!(raw.headers()["content-type"], "text/plain");
    assert_eq!(raw.text().await.unwrap(), "test");
}

#[tokio::test]
async fn presence_flags_count_whatever_their_value() {
    let a = Agent::start().await;
    for k in ["foo", "foo2", "foobar/x", "other"] {
        a.put(&format!("/v1/kv/{k}"), "v").await;
    }
    // `recurse=false` is still a prefix read, as in Consul.
    let v: Value = a
        .get("/v1/kv/foo?recurse=false")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    let keys: Value = a
        .get("/v1/kv/?keys&separator=/")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys, json!(["foo", "foo2", "foobar/", "other"]));
    // And `recurse=false` on DELETE is a subtree delete.
    assert_eq!(
        a.delete("/v1/kv/foo?recurse=false")
            .await
            .text()
            .await
            .unwrap(),
        "true"
    );
    let keys: Value = a.get("/v1/kv/?keys").await.json().await.unwrap();
    assert_eq!(keys, json!(["other"]));
    assert_eq!(a.get("/v1/kv/nothing/?keys").await.status(), 404);
}

#[tokio::test]
async fn conflicting_flags_and_bad_parameters_are_400() {
    let a = Agent::start().await;
    let (s, t) = a.put_text("/v1/kv/k?cas=0&acquire=x", "v").await;
    assert_eq!(s, 400);
    assert_eq!(t, "Conflicting flags: acquire=x&cas=0\n");
    assert_eq!(a.delete("/v1/kv/k?recurse&cas=3").await.status(), 400);
    let r = a.get("/v1/kv/k?index=1&wait=forever").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid wait time");
    // Consul hands strconv's error back as a 500.
    assert_eq!(
        a.put_text("/v1/kv/k?flags=x", "v").await,
        (
            500,
            "strconv.ParseUint: parsing \"x\": invalid syntax".to_string()
        )
    );
    assert_eq!(a.put_text("/v1/kv/k?cas", "v").await.0, 500);
    let r = a.get("/v1/kv/").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Missing key name");
    // reqwest normalises `..` away, so speak HTTP by hand for the traversal case.
    assert_eq!(raw_status(&a, "GET /v1/kv/a/../b").await, 400);
    assert_eq!(raw_status(&a, "GET /v1/kv/a/%2e%2e/b").await, 400);
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"10s","Status":"meh"}}"#,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "Status for checks must 'passing', 'warning', 'critical'"
    );
    assert_eq!(
        a.get("/v1/health/service/x?passing=maybe").await.status(),
        400
    );
    let r = a.put("/v1/session/create", "{not json").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().starts_with("Request decode failed"));
}

#[tokio::test]
async fn cas_rules() {
    let a = Agent::start().await;
    assert_eq!(a.put_text("/v1/kv/m?cas=0", "1").await.1, "true");
    assert_eq!(a.put_text("/v1/kv/m?cas=0", "2").await.1, "false");
    let v: Value = a.get("/v1/kv/m").await.json().await.unwrap();
    let mi = v[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        a.put_text(&format!("/v1/kv/m?cas={}", mi + 100), "3")
            .await
            .1,
        "false"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/m?cas={mi}"), "3").await.1,
        "true"
    );
    assert_eq!(
        a.delete(&format!("/v1/kv/m?cas={mi}"))
            .await
            .text()
            .await
            .unwrap(),
        "false"
    );
    let v: Value = a.get("/v1/kv/m").await.json().await.unwrap();
    let mi = v[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        a.delete(&format!("/v1/kv/m?cas={mi}"))
            .await
            .text()
            .await
            .unwrap(),
        "true"
    );
    assert_eq!(a.get("/v1/kv/m").await.status(), 404);
}

#[tokio::test]
async fn deleting_a_key_advances_the_kv_index() {
    let a = Agent::start().await;
    a.put("/v1/kv/x", "1").await;
    let i1 = index_of(&a.get("/v1/kv/x").await);
    a.delete("/v1/kv/x").await;
    let r = a.get("/v1/kv/x").await;
    assert_eq!(r.status(), 404);
    assert!(index_of(&r) > i1);
}

#[tokio::test]
async fn locks_sessions_and_lock_index() {
    let a = Agent::start().await;
    let s1 = a
        .session(json!({"Name": "one", "TTL": "10s", "LockDelay": "0s"}))
        .await;
    let s2 = a.session(json!({"Name": "two", "LockDelay": 0})).await;
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s1}"), "a").await.1,
        "true"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s1}"), "b").await.1,
        "true"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s2}"), "c").await.1,
        "false"
    );
    let v: Value = a.get("/v1/kv/l").await.json().await.unwrap();
    assert_eq!(v[0]["LockIndex"], 1);
    assert_eq!(v[0]["Session"], s1.as_str());
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?release={s2}"), "").await.1,
        "false"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?release={s1}"), "").await.1,
        "true"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s2}"), "").await.1,
        "true"
    );
    let v: Value = a.get("/v1/kv/l").await.json().await.unwrap();
    assert_eq!(v[0]["LockIndex"], 2);
    let (s, t) = a.put_text("/v1/kv/l?acquire=nope", "").await;
    assert_eq!((s, t.as_str()), (500, "invalid session \"nope\""));
    // Session endpoints.
    let info: Value = a
        .get(&format!("/v1/session/info/{s1}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info[0]["TTL"], "10s");
    assert_eq!(info[0]["LockDelay"], 0);
    assert_eq!(info[0]["Behavior"], "release");
    let r = a.put("/v1/session/renew/unknown", "").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "Session id 'unknown' not found");
    let renewed: Value = a
        .put(&format!("/v1/session/renew/{s1}"), "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renewed[0]["ID"], s1.as_str());
    let list: Value = a.get("/v1/session/list").await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(
        a.put_text(&format!("/v1/session/destroy/{s2}"), "").await.1,
        "true"
    );
    let v: Value = a.get("/v1/kv/l").await.json().await.unwrap();
    assert!(v[0].get("Session").is_none());
    let empty: Value = a
        .get(&format!("/v1/session/info/{s2}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty, json!([]));
    // TTL validation.
    let r = a.put("/v1/session/create", r#"{"TTL":"5s"}"#).await;
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().starts_with("Invalid Session TTL"));
}

#[tokio::test]
async fn blocking_query_returns_on_change() {
    let a = Agent::start().await;
    let r = a.get("/v1/kv/watched").await;
    let idx = index_of(&r);
    let url = a.url(&format!("/v1/kv/watched?index={idx}&wait=30s"));
    let client = a.http.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await });
    wait_parked(&a, 1).await;
    assert!(
        !waiter.is_finished(),
        "nothing changed: the query must still block"
    );
    // An unrelated change elsewhere in KV moves the table index: Consul wakes the single-key
    // watch too (its index is the whole table's), so write the watched key itself.
    a.put("/v1/kv/watched", "now").await;
    let r = waiter.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert!(index_of(&r) > idx);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["Value"], "bm93");
}

#[tokio::test]
async fn blocking_query_times_out_at_wait_with_the_same_index() {
    let a = Agent::start().await;
    a.put("/v1/kv/still", "x").await;
    let idx = index_of(&a.get("/v1/kv/still").await);
    let r = a.get(&format!("/v1/kv/still?index={idx}&wait=100ms")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(index_of(&r), idx);
}

#[tokio::test]
async fn acl_token_is_required_when_configured() {
    let a = Agent::with(AgentConfig {
        acl_token: Some("s3cret".into()),
        ..AgentConfig::default()
    })
    .await;
    let r = a.get("/v1/kv/x").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "Permission denied");
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "ACL not found");
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(a.get("/v1/kv/x?token=s3cret").await.status(), 404);
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn injected_errors_then_recovery() {
    let a = Agent::start().await;
    assert_eq!(
        a.post("/_dev/faults/errors", json!({"status": 429, "count": 2}))
            .await
            .status(),
        200
    );
    assert_eq!(a.get("/v1/kv/x").await.status(), 429);
    assert_eq!(a.get("/v1/kv/x").await.status(), 429);
    assert_eq!(a.get("/v1/kv/x").await.status(), 404);
}

// === agent services, checks, health ===

async fn register(a: &Agent, body: Value) {
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

#[tokio::test]
async fn kv_values_over_512_kib_are_413() {
    let a = Agent::start().await;
    let r = a.put("/v1/kv/big", vec![b'x'; 512 * 1024 + 1]).await;
    assert_eq!(r.status(), 413);
    let r = a.put("/v1/kv/big", vec![b'x'; 512 * 1024]).await;
    assert_eq!(r.status(), 200);
}

// === faults ===

#[tokio::test]
async fn pause_hang_and_unavailable_then_resume() {
    let a = Agent::start().await;
    a.post("/_dev/faults/pause", json!({"mode": "unavailable"}))
        .await;
    assert_eq!(a.get("/v1/kv/x").await.status(), 503);
    a.post("/_dev/faults/pause", json!({"mode": "hang"})).await;
    let hung = a
        .http
        .get(a.url("/v1/kv/x"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    // A request parked by the pause is answered after resume.
    let url = a.url("/v1/kv/x");
    let client = a.http.clone();
    let parked = tokio::spawn(async move { client.get(url).send().await });
    a.post("/_dev/faults/resume", json!({})).await;
    assert_eq!(parked.await.unwrap().unwrap().status(), 404);
    assert_eq!(a.get("/v1/kv/x").await.status(), 404);
}

#[tokio::test]
async fn drop_by_session_closes_the_connection_without_an_answer() {
    let a = Agent::start().await;
    let s = a.session(json!({})).await;
    a.post("/_dev/faults/drop", json!({"session": s})).await;
    let r = a
        .http
        .put(a.url(&format!("/v1/session/renew/{s}")))
        .send()
        .await;
    let e = r.expect_err("the connection is closed without a response");
    assert!(!e.is_timeout() && e.status().is_none(), "{e:?}");
    // The session ID in a query parameter counts too.
    let r = a
        .http
        .put(a.url(&format!("/v1/kv/k?acquire={s}")))
        .send()
        .await;
    assert!(r.is_err());
    // Unrelated requests are still answered.
    assert_eq!(a.get("/v1/kv/k").await.status(), 404);
    assert_eq!(a.delete("/_dev/faults").await.status(), 200);
    assert_eq!(
        a.put(&format!("/v1/session/renew/{s}"), "").await.status(),
        200
    );
}

#[tokio::test]
async fn drop_by_token() {
    let a = Agent::start().await;
    a.post("/_dev/faults/drop", json!({"token": "t1"})).await;
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "t1")
        .send()
        .await;
    assert!(r.is_err());
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "t2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn index_goes_backwards_once() {
    let a = Agent::start().await;
    for i in 0..4 {
        a.put("/v1/kv/i", i.to_string()).await;
    }
    let idx = index_of(&a.get("/v1/kv/i").await);
    // A parked blocking query is woken by the fault and sees the lower index.
    let url = a.url(&format!("/v1/kv/i?index={idx}&wait=30s"));
    let client = a.http.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await });
    wait_parked(&a, 1).await;
    a.post("/_dev/faults/index-backwards", json!({})).await;
    let r = waiter.await.unwrap().unwrap();
    assert!(index_of(&r) < idx);
    assert_eq!(index_of(&a.get("/v1/kv/i").await), idx);
}

#[tokio::test]
async fn forget_services_as_after_an_agent_restart() {
    let a = Agent::start().await;
    register(&a, json!({"Name": "svc"})).await;
    a.post("/_dev/faults/forget-services", json!({})).await;
    let services: Value = a.get("/v1/agent/services").await.json().await.unwrap();
    assert_eq!(services, json!({}));
    let faults: Value = a.get("/_dev/faults").await.json().await.unwrap();
    assert!(faults["pause"].is_null());
}

// === DNS ===

mod dns {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    async fn udp(a: &Agent, name: &str, qtype: RecordType) -> Message {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&query(name, qtype).to_vec().unwrap(), a.agent.dns_addr())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("a DNS answer")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    async fn tcp(a: &Agent, name: &str, qtype: RecordType) -> Message {
        let mut s = tokio::net::TcpStream::connect(a.agent.dns_addr())
            .await
            .unwrap();
        let bytes = query(name, qtype).to_vec().unwrap();
        s.write_u16(u16::try_from(bytes.len()).unwrap())
            .await
            .unwrap();
        s.write_all(&bytes).await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }

    async fn worker(a: &Agent, k: u32, pass: bool) {
        register(
            a,
            json!({"ID": format!("wafleet-worker-{k}"), "Name": "wafleet-worker",
                   "Tags": [format!("shard-{k}")], "Address": "127.0.0.1", "Port": 7000 + k,
                   "Check": {"CheckID": format!("ttl-{k}"), "TTL": "30s"}}),
        )
        .await;
        if pass {
            a.put(&format!("/v1/agent/check/pass/ttl-{k}"), "").await;
        }
    }

    #[tokio::test]
    async fn srv_with_address_in_additional_section_over_udp_and_tcp() {
        let a = Agent::start().await;
        worker(&a, 1, true).await;
        worker(&a, 2, false).await;
        for resp in [
            udp(
                &a,
                "shard-1.wafleet-worker.service.consul.",
                RecordType::SRV,
            )
            .await,
            tcp(
                &a,
                "shard-1.wafleet-worker.service.consul.",
                RecordType::SRV,
            )
            .await,
            udp(
                &a,
                "_wafleet-worker._shard-1.service.consul.",
                RecordType::SRV,
            )
            .await,
        ] {
            assert_eq!(resp.metadata.id, 4242);
            assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
            assert_eq!(resp.answers.len(), 1);
            assert_eq!(resp.answers[0].ttl, 0);
            let RData::SRV(srv) = &resp.answers[0].data else {
                panic!("not SRV")
            };
            assert_eq!(srv.port, 7001);
            assert_eq!(srv.target.to_ascii(), "7f000001.addr.dc1.consul.");
            assert_eq!(resp.additionals.len(), 1);
            assert_eq!(&resp.additionals[0].name, &srv.target);
        }
        // Shard 2's only instance is critical: an empty answer, not NXDOMAIN.
        let resp = udp(
            &a,
            "shard-2.wafleet-worker.service.consul.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
        let resp = udp(&a, "nothing.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        // Negative answers carry an SOA with minimum 0 (no negative caching).
        let RData::SOA(soa) = &resp.authorities[0].data else {
            panic!("no SOA in the authority section")
        };
        assert_eq!(soa.minimum, 0);
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::A).await;
        assert_eq!(resp.answers.len(), 1);
        // Passing the check of shard 2 makes it answer.
        a.put("/v1/agent/check/pass/ttl-2", "").await;
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.answers.len(), 2);
    }

    #[tokio::test]
    async fn pause_affects_dns_and_garbage_is_ignored() {
        let a = Agent::start().await;
        worker(&a, 1, true).await;
        // Garbage first: no answer, no crash; the next real query is answered.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(b"\x00\x01garbage", a.agent.dns_addr())
            .await
            .unwrap();
        a.post("/_dev/faults/pause", json!({"mode": "unavailable"}))
            .await;
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
        a.post("/_dev/faults/pause", json!({"mode": "hang"})).await;
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(
            &query("wafleet-worker.service.consul.", RecordType::SRV)
                .to_vec()
                .unwrap(),
            a.agent.dns_addr(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 512];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
                .await
                .is_err(),
            "a paused agent does not answer"
        );
        a.delete("/_dev/faults").await;
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.answers.len(), 1);
    }
}

#[tokio::test]
async fn hostile_inputs_always_get_an_answer() {
    let a = Agent::start().await;
    let cases: Vec<(reqwest::Method, &str, &str)> = vec![
        (reqwest::Method::GET, "/v1/kv/%ff%fe%00", ""),
        (reqwest::Method::PUT, "/v1/kv/a?cas=-1", "x"),
        (
            reqwest::Method::PUT,
            "/v1/kv/a?flags=99999999999999999999999",
            "x",
        ),
        (reqwest::Method::GET, "/v1/kv/?recurse&index=abc", ""),
        (
            reqwest::Method::GET,
            "/v1/kv/?recurse&index=18446744073709551615&wait=1ms",
            "",
        ),
        (reqwest::Method::PUT, "/v1/session/create", "null"),
        (reqwest::Method::PUT, "/v1/session/create", r#"{"TTL": 5}"#),
        (
            reqwest::Method::PUT,
            "/v1/session/create",
            r#"{"LockDelay": -1}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/session/create",
            r#"{"Checks": ["nope"]}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"99999999h"}}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"HTTP":"http://127.0.0.1:1/","Interval":"0s"}}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/agent/service/register",
            r#"{"Name":"x","Checks":[{"Status":"bogus"}]}"#,
        ),
        (reqwest::Method::GET, "/v1/health/service/x?filter=((((", ""),
        (
            reqwest::Method::PUT,
            "/v1/txn",
            r#"[{"KV":{"Verb":"lock","Key":"a","Session":""}}]"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/txn",
            r#"[{"KV":{"Verb":"set","Key":"","Value":null}}]"#,
        ),
        (reqwest::Method::PUT, "/v1/agent/check/update/x", "[]"),
        (
            reqwest::Method::POST,
            "/_dev/faults/pause",
            r#"{"mode":"sideways"}"#,
        ),
        (
            reqwest::Method::POST,
            "/_dev/faults/errors",
            r#"{"status":99}"#,
        ),
        (reqwest::Method::POST, "/_dev/faults/drop", "{}"),
        (reqwest::Method::PATCH, "/v1/kv/a", ""),
        (reqwest::Method::GET, "/v1/kv/a?dc=elsewhere", ""),
    ];
    for (method, path, body) in cases {
        let r = a
            .http
            .request(method.clone(), a.url(path))
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        assert!(
            r.status().is_client_error() || r.status().is_server_error() || r.status().is_success(),
            "{method} {path}: {}",
            r.status()
        );
        if path.contains("register") || path.contains("session/create") && body != "null" {
            assert!(!r.status().is_success(), "{method} {path} {body}: accepted");
        }
    }
    // Still serving.
    assert_eq!(a.get("/v1/kv/zzz").await.status(), 404);
}

#[tokio::test]
async fn parked_health_watch_wakes_on_check_pass_but_not_on_other_services() {
    let a = Agent::start().await;
    register(
        &a,
        json!({"ID": "w", "Name": "w", "Check": {"CheckID": "w-ttl", "TTL": "30s"}}),
    )
    .await;
    register(
        &a,
        json!({"ID": "o", "Name": "other", "Check": {"CheckID": "o-ttl", "TTL": "30s"}}),
    )
    .await;
    let idx = index_of(&a.get("/v1/health/service/w").await);
    let url = a.url(&format!(
        "/v1/health/service/w?passing&index={idx}&wait=30s"
    ));
    let client = a.http.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await });
    wait_parked(&a, 1).await;
    // Another service's change re-evaluates the query but must not answer it.
    a.put("/v1/agent/check/pass/o-ttl", "").await;
    a.put("/v1/kv/unrelated", "x").await;
    wait_parked(&a, 1).await;
    assert!(!waiter.is_finished());
    a.put("/v1/agent/check/pass/w-ttl", "").await;
    let r = waiter.await.unwrap().unwrap();
    assert!(index_of(&r) > idx);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body[0]["Service"]["ID"], "w");
}

#[tokio::test]
async fn a_parked_query_woken_while_paused_is_refused() {
    let a = Agent::start().await;
    let idx = index_of(&a.get("/v1/kv/p").await);
    let url = a.url(&format!("/v1/kv/p?index={idx}&wait=30s"));
    let client = a.http.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await });
    wait_parked(&a, 1).await;
    a.post("/_dev/faults/pause", json!({"mode": "unavailable"}))
        .await;
    // /v1 writes are refused while paused, so wake the query with another fault.
    a.post("/_dev/faults/index-backwards", json!({})).await;
    let r = waiter.await.unwrap().unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn health_state_and_checks_endpoints() {
    let a = Agent::start().await;
    register(
        &a,
        json!({"ID": "w", "Name": "w", "Check": {"CheckID": "w-ttl", "TTL": "30s"}}),
    )
    .await;
    let critical: Value = a
        .get("/v1/health/state/critical")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(critical.as_array().unwrap().len(), 1);
    assert_eq!(critical[0]["CheckID"], "w-ttl");
    let any: Value = a.get("/v1/health/state/any").await.json().await.unwrap();
    assert_eq!(any.as_array().unwrap().len(), 2, "serfHealth too");
    let checks: Value = a.get("/v1/health/checks/w").await.json().await.unwrap();
    assert_eq!(checks[0]["ServiceID"], "w");
    assert_eq!(a.get("/v1/health/state/bogus").await.status(), 400);
    let none: Value = a
        .get("/v1/health/checks/nothing")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn faults_can_target_a_path_prefix() {
    let a = Agent::start().await;
    let s = a.session(json!({})).await;
    a.post(
        "/_dev/faults/errors",
        json!({"status": 500, "count": 1, "path": "/v1/session/renew/"}),
    )
    .await;
    // Other paths are untouched and do not consume the fault.
    assert_eq!(a.get("/v1/kv/x").await.status(), 404);
    assert_eq!(
        a.put(&format!("/v1/session/renew/{s}"), "").await.status(),
        500
    );
    assert_eq!(
        a.put(&format!("/v1/session/renew/{s}"), "").await.status(),
        200
    );
    a.put("/v1/kv/x", "1").await;
    let kv_idx = index_of(&a.get("/v1/kv/x").await);
    a.post("/_dev/faults/index-backwards", json!({"path": "/v1/kv/"}))
        .await;
    let sessions = a.get("/v1/session/list").await;
    assert!(index_of(&sessions) >= 1);
    let faults: Value = a.get("/_dev/faults").await.json().await.unwrap();
    assert_eq!(
        faults["index_backwards"], "/v1/kv/",
        "not consumed by /v1/session/list"
    );
    assert!(index_of(&a.get("/v1/kv/x").await) < kv_idx);
    assert_eq!(index_of(&a.get("/v1/kv/x").await), kv_idx);
}

#[tokio::test]
async fn delay_fault_slows_answers_until_cleared() {
    let a = Agent::start().await;
    a.post(
        "/_dev/faults/delay",
        json!({"ms": 60000, "path": "/v1/kv/"}),
    )
    .await;
    let slow = a
        .http
        .get(a.url("/v1/kv/x"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(slow.is_err_and(|e| e.is_timeout()));
    // Other paths are not delayed.
    assert_eq!(a.get("/v1/session/list").await.status(), 200);
    a.delete("/_dev/faults").await;
    assert_eq!(a.get("/v1/kv/x").await.status(), 404);
}

#[tokio::test]
async fn agent_health_endpoints_and_health_node() {
    let a = Agent::start().await;
    register(
        &a,
        json!({"ID": "w1", "Name": "w", "Check": {"CheckID": "c1", "TTL": "30s"}}),
    )
    .await;
    let r = a.get("/v1/agent/health/service/id/w1").await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["AggregatedStatus"], "critical");
    a.put("/v1/agent/check/warn/c1", "").await;
    let r = a.get("/v1/agent/health/service/name/w?format=text").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.text().await.unwrap(), "warning");
    a.put("/v1/agent/check/pass/c1", "").await;
    let r = a.get("/v1/agent/health/service/name/w").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["Service"]["ID"], "w1");
    assert_eq!(
        a.get("/v1/agent/health/service/id/nope").await.status(),
        404
    );
    let node: Value = a
        .get("/v1/health/node/wafleet-dev")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(node.as_array().unwrap().len(), 2);
    let other: Value = a
        .get("/v1/health/node/elsewhere")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other, json!([]));
}
