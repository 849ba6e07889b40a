//! HTTP- and DNS-level tests of the built-in agent: real port-0 agents on 127.0.0.1, reqwest
//! for HTTP, hickory-proto messages over UDP/TCP for DNS.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use warp::Filter;

use super::{AgentConfig, RunningAgent, spawn};

mod faults;

mod health;
use health::register;

mod kv;

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

// === agent services, checks, health ===

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
