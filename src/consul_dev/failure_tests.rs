//! HTTP-level tests of the local agent going away: the remote listener (another agent of the
//! datacenter) keeps answering, and the failure detector turns `serfHealth` critical after
//! [`super::AgentConfig::serf_detect`], invalidating only the sessions that include it.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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

async fn agent(serf_detect: Duration) -> Agent {
    let cancel = CancellationToken::new();
    let cfg = AgentConfig {
        remote_http: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        serf_detect,
        ..AgentConfig::default()
    };
    let agent = spawn(cfg, cancel.clone()).await.expect("agent starts");
    Agent {
        agent,
        cancel,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A refused request must fail now, not be retried on a pooled connection.
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
    }
}

impl Agent {
    fn local(&self, path: &str) -> String {
        format!("http://{}{path}", self.agent.http_addr())
    }

    fn remote(&self, path: &str) -> String {
        let addr = self.agent.remote_http_addr().expect("remote listener");
        format!("http://{addr}{path}")
    }

    async fn session(&self, body: Value) -> String {
        let r: Value = self
            .http
            .put(self.local("/v1/session/create"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["ID"].as_str().expect("session id").to_owned()
    }

    async fn remote_json(&self, path: &str) -> Value {
        self.http
            .get(self.remote(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn serf_status(&self) -> String {
        let checks = self.remote_json("/v1/health/node/wafleet-dev").await;
        checks
            .as_array()
            .and_then(|l| l.iter().find(|c| c["CheckID"] == "serfHealth"))
            .and_then(|c| c["Status"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// Polls `f` until true, with a deadline (a condition, not a sleep).
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out: {what}"));
}

#[tokio::test]
async fn the_remote_listener_outlives_the_local_agent_and_serf_health_fails_after_detection() {
    let a = agent(Duration::from_millis(300)).await;
    let serf = a.session(json!({"TTL": "30s"})).await;
    let ttl_only = a.session(json!({"TTL": "30s", "NodeChecks": []})).await;
    for (key, id) in [("a", &serf), ("b", &ttl_only)] {
        let r = a
            .http
            .put(a.local(&format!("/v1/kv/{key}?acquire={id}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "true");
    }
    assert_eq!(a.serf_status().await, "passing");

    let r = a
        .http
        .post(a.local("/_dev/faults/agent-restart"))
        .json(&json!({"ms": 60_000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // The local agent answers nothing; the remote listener answers KV and renews.
    assert!(a.http.get(a.local("/v1/kv/b")).send().await.is_err());
    let r = a
        .http
        .put(a.remote(&format!("/v1/session/renew/{ttl_only}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Another agent's own /v1/agent/ endpoints are not modelled: a clear refusal.
    let r = a
        .http
        .get(a.remote("/v1/agent/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);

    // After the detection time the node is failed: serfHealth critical, the serfHealth
    // session invalidated with its lock released; the TTL-only session and its lock stay.
    until("serfHealth critical", async || {
        a.serf_status().await == "critical"
    })
    .await;
    let info = a.remote_json(&format!("/v1/session/info/{serf}")).await;
    assert_eq!(info, json!([]));
    let kv = a.remote_json("/v1/kv/a").await;
    assert!(kv[0].get("Session").is_none(), "{kv}");
    let kv = a.remote_json("/v1/kv/b").await;
    assert_eq!(kv[0]["Session"], ttl_only.as_str());
    let r = a
        .http
        .put(a.remote(&format!("/v1/session/renew/{serf}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let faults = a.remote_json("/_dev/faults").await;
    assert_eq!(faults["serf_critical"], true);

    // Back (clearing the faults ends the restart): serfHealth passes again.
    let r = a
        .http
        .delete(a.remote("/_dev/faults"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(a.serf_status().await, "passing");
    assert!(a.http.get(a.local("/v1/kv/b")).send().await.is_ok());
    let stats = a.remote_json("/_dev/stats").await;
    assert!(
        stats.to_string().contains("remote PUT /v1/session/renew"),
        "requests on the remote listener are counted apart: {stats}"
    );
}

#[tokio::test]
async fn a_restart_shorter_than_detection_keeps_serf_health_passing() {
    // Detection far beyond the restart: the agent is back before anyone declares it failed.
    let a = agent(Duration::from_secs(600)).await;
    let serf = a.session(json!({"TTL": "30s"})).await;
    let r = a
        .http
        .post(a.local("/_dev/faults/agent-restart"))
        .json(&json!({"ms": 200}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    until("the local agent answers again", async || {
        a.http.get(a.local("/v1/kv/x")).send().await.is_ok()
    })
    .await;
    assert_eq!(a.serf_status().await, "passing");
    let info = a.remote_json(&format!("/v1/session/info/{serf}")).await;
    assert_eq!(info[0]["ID"], serf.as_str());
}
