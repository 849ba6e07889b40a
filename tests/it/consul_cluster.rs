//! What a real cluster does to the client, through the built-in agent's cluster faults: leader
//! elections (500 "No cluster leader"), a local agent restart with and without `leave`, and
//! node deregistration. In-process agent on loopback, port 0.

use std::time::Duration;

use wafleet::consul::session::{self, FenceReason, SessionConfig, SessionKeeper};
use wafleet::consul::watch::WatchOptions;
use wafleet::consul::*;
use wafleet::consul_dev::{AgentConfig, RunningAgent};
use wafleet::shutdown::{CancellationToken, TaskTracker};

struct Agent {
    agent: RunningAgent,
    client: Client,
    cancel: CancellationToken,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn agent() -> Agent {
    agent_with(AgentConfig::default()).await
}

/// An agent with `cfg` (and a 100 ms minimum session TTL).
async fn agent_with(cfg: AgentConfig) -> Agent {
    let cancel = CancellationToken::new();
    let cfg = AgentConfig {
        session_ttl_min: Duration::from_millis(100),
        ..cfg
    };
    let agent = wafleet::consul_dev::spawn(cfg, cancel.clone())
        .await
        .expect("agent starts");
    let client = Client::new(&Config::http(agent.http_addr())).unwrap();
    Agent {
        agent,
        client,
        cancel,
    }
}

async fn admin(a: &Agent, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", a.agent.http_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn stats(a: &Agent) -> serde_json::Value {
    reqwest::get(format!("{}/_dev/stats", a.agent.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `f` until it is true (a condition with a deadline, not a sleep).
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    within(what, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn fast_watch() -> WatchOptions {
    WatchOptions {
        wait: Duration::from_secs(5),
        limiter_refill: Duration::from_millis(5),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..WatchOptions::default()
    }
}

fn session_request(ttl: Duration) -> SessionRequest {
    SessionRequest {
        name: "t".into(),
        ttl: Some(ttl),
        behavior: SessionBehavior::Release,
        lock_delay: Some(Duration::ZERO),
        node_checks: None,
    }
}

#[tokio::test]
async fn acquire_wait_rides_out_an_election_and_stops_on_an_invalid_session() {
    let a = agent().await;
    let sid = a
        .client
        .session_create(&session_request(Duration::from_secs(60)))
        .await
        .unwrap();
    // The next three KV requests meet an election: 500 "No cluster leader", as Consul answers.
    admin(
        &a,
        "/_dev/faults/no-leader",
        serde_json::json!({"count": 3, "path": "/v1/kv/"}),
    )
    .await;
    let direct = session::acquire(&a.client, "l/one", &sid, b"v").await;
    match &direct {
        Err(e @ ConsulError::Status { status: 500, body }) => {
            assert!(body.contains("No cluster leader"), "{body}");
            assert!(e.is_transient() && !e.is_invalid_session());
        }
        other => panic!("expected the injected 500, got {other:?}"),
    }
    let cancel = CancellationToken::new();
    within(
        "acquire through the election",
        session::acquire_wait(&a.client, "l/one", &sid, b"v", fast_watch(), &cancel),
    )
    .await
    .expect("acquire_wait retries a 500 No cluster leader");
    let (pair, _) = a
        .client
        .kv_get("l/one", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(pair.unwrap().session.as_deref(), Some(sid.as_str()));
    let kv_puts = stats(&a).await["by_endpoint"]["PUT /v1/kv"]
        .as_u64()
        .unwrap();
    assert!(
        kv_puts >= 4,
        "1 refused + 2 refused retries + 1 success: {kv_puts}"
    );

    // A session Consul does not know: its own 500 `invalid session "<id>"`, which is final.
    a.client.session_destroy(&sid).await.unwrap();
    let r = within(
        "acquire with a destroyed session",
        session::acquire_wait(&a.client, "l/two", &sid, b"v", fast_watch(), &cancel),
    )
    .await;
    assert!(
        matches!(&r, Err(ConsulError::SessionNotFound(id)) if *id == sid),
        "{r:?}"
    );
}

#[tokio::test]
async fn agent_restart_keeps_sessions_and_a_leave_invalidates_them() {
    let a = agent().await;
    let sid = a
        .client
        .session_create(&session_request(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(
        session::acquire(&a.client, "l/k", &sid, b"v")
            .await
            .unwrap()
    );
    // Another node's session (its own serfHealth) must not care about this agent's leave.
    admin(&a, "/_dev/nodes/join", serde_json::json!({"node": "other"})).await;
    let other: serde_json::Value = reqwest::Client::new()
        .put(format!("{}/v1/session/create", a.agent.http_url()))
        .json(&serde_json::json!({"Node": "other", "TTL": "60s", "LockDelay": "0s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = other["ID"].as_str().unwrap().to_owned();

    // A plain restart (leave_on_terminate = false): the agent is gone for a while — connections
    // fail, they are not answered — and comes back with its node and sessions intact.
    let r = admin(&a, "/_dev/agent/restart", serde_json::json!({"ms": 60_000})).await;
    assert_eq!(r["left"], false);
    let down = a.client.session_renew(&sid).await;
    assert!(matches!(down, Err(ConsulError::Transport(_))), "{down:?}");
    admin(&a, "/_dev/faults/clear", serde_json::json!({})).await;
    a.client
        .session_renew(&sid)
        .await
        .expect("session survives a restart");
    let (pair, _) = a
        .client
        .kv_get("l/k", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(pair.unwrap().session.as_deref(), Some(sid.as_str()));

    // A graceful leave (SIGTERM with the client default leave_on_terminate = true): the node is
    // deregistered, so its sessions are invalidated and their locks released.
    let r = admin(
        &a,
        "/_dev/agent/restart",
        serde_json::json!({"ms": 200, "leave": true}),
    )
    .await;
    assert_eq!(r["sessions_invalidated"], 1);
    until("the agent answers again", async || {
        a.client.agent_services().await.is_ok()
    })
    .await;
    let gone = a.client.session_renew(&sid).await;
    assert!(
        matches!(gone, Err(ConsulError::SessionNotFound(_))),
        "{gone:?}"
    );
    let (pair, _) = a
        .client
        .kv_get("l/k", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(pair.unwrap().session, None, "the lock was released");
    a.client
        .session_renew(&other)
        .await
        .expect("another node's session is untouched");
    // The node joined again when it came back: new sessions work.
    a.client
        .session_create(&session_request(Duration::from_secs(60)))
        .await
        .expect("the node is registered again");
    // Leaving the other node invalidates its session only.
    let r = admin(
        &a,
        "/_dev/nodes/leave",
        serde_json::json!({"node": "other"}),
    )
    .await;
    assert_eq!(r["sessions_invalidated"], 1);
    assert!(matches!(
        a.client.session_renew(&other).await,
        Err(ConsulError::SessionNotFound(_))
    ));
}

#[tokio::test]
async fn a_keeper_fenced_by_an_agent_restart_resumes_its_session() {
    let a = agent().await;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    // TTL 3 s: the keeper fences 2 s after its last renewal; Consul (and the built-in agent,
    // 2 × TTL) keeps the session at least 3 s.
    // TTL-only (as the worker's): the failure detector (5 s) must not be what this tests.
    let cfg = SessionConfig {
        node_checks: Some(Vec::new()),
        ..SessionConfig::new("resume", Duration::from_secs(3), Duration::ZERO)
    };
    let keeper = SessionKeeper::start(&a.client, cfg.clone(), &tracker, cancel.clone())
        .await
        .unwrap();
    let sid = keeper.id().to_owned();
    assert!(
        session::acquire(&a.client, "l/shard", &sid, b"v")
            .await
            .unwrap()
    );
    // The agent restarts (no leave) for longer than the fencing deadline.
    admin(&a, "/_dev/agent/restart", serde_json::json!({"ms": 60_000})).await;
    within("fenced", keeper.fenced()).await;
    assert_eq!(keeper.fence_reason(), Some(FenceReason::DeadlineExceeded));
    admin(&a, "/_dev/faults/clear", serde_json::json!({})).await;
    let resumed = SessionKeeper::resume(&a.client, &sid, cfg.clone(), &tracker, cancel.clone())
        .await
        .expect("the session is still valid");
    assert_eq!(resumed.id(), sid);
    assert!(!resumed.is_fenced());
    // It still holds its lock: acquiring again with the same session is a no-op success.
    assert!(
        session::acquire(&a.client, "l/shard", &sid, b"v")
            .await
            .unwrap()
    );
    let (pair, _) = a
        .client
        .kv_get("l/shard", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(pair.unwrap().lock_index, 1, "never changed hands");
    resumed.destroy().await.unwrap();
    // A destroyed session cannot be resumed.
    let r = SessionKeeper::resume(&a.client, &sid, cfg, &tracker, cancel.clone()).await;
    assert!(matches!(r, Err(ConsulError::SessionNotFound(_))), "{r:?}");
    cancel.cancel();
}

#[tokio::test]
async fn stats_count_requests_by_endpoint() {
    let a = agent().await;
    a.client.agent_services().await.unwrap();
    a.client.agent_services().await.unwrap();
    a.client
        .kv_get("some/key", &QueryOptions::default())
        .await
        .unwrap();
    let s = stats(&a).await;
    assert_eq!(s["by_endpoint"]["GET /v1/agent/services"], 2);
    assert_eq!(s["by_endpoint"]["GET /v1/kv"], 1);
    assert_eq!(s["requests"], 3);
    let r = reqwest::Client::new()
        .delete(format!("{}/_dev/stats", a.agent.http_url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(stats(&a).await["requests"], 0);
}

/// An agent with a remote listener (another agent of the datacenter) and a quick failure
/// detector, and a client of that listener.
async fn agent_with_remote(serf_detect: Duration) -> (Agent, Client) {
    let a = agent_with(AgentConfig {
        remote_http: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        serf_detect,
        ..AgentConfig::default()
    })
    .await;
    let remote = a.agent.remote_http_addr().expect("remote listener");
    let client = Client::new(&Config::http(remote)).unwrap();
    (a, client)
}

#[tokio::test]
async fn a_ttl_only_keeper_renews_through_a_fallback_while_its_agent_restarts() {
    let (a, remote) = agent_with_remote(Duration::from_millis(200)).await;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let mut cfg = SessionConfig::new("fallback", Duration::from_secs(3), Duration::ZERO);
    cfg.node_checks = Some(Vec::new());
    cfg.fallbacks = vec![remote.clone()];
    let keeper = SessionKeeper::start(&a.client, cfg, &tracker, cancel.clone())
        .await
        .unwrap();
    let sid = keeper.id().to_owned();
    assert!(
        session::acquire(&a.client, "l/shard", &sid, b"v")
            .await
            .unwrap()
    );
    // Down for far longer than the fencing deadline (2 s) and the detection time.
    admin(&a, "/_dev/agent/restart", serde_json::json!({"ms": 60_000})).await;
    until("renewals through the fallback", async || {
        keeper.fallback_renewals() >= 3
    })
    .await;
    assert!(!keeper.is_fenced(), "{:?}", keeper.fence_reason());
    let (info, _) = remote
        .session_info(&sid, &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(info.map(|i| i.id), Some(sid.clone()));
    admin(&a, "/_dev/faults/clear", serde_json::json!({})).await;
    keeper.destroy().await.unwrap();
    cancel.cancel();
}

#[tokio::test]
async fn a_serf_health_keeper_loses_its_session_when_the_agent_is_declared_failed() {
    let (a, remote) = agent_with_remote(Duration::from_millis(200)).await;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    // Consul's default node checks (serfHealth), with the fallback: renewing elsewhere does not
    // help once the servers invalidate the session.
    let mut cfg = SessionConfig::new("serf", Duration::from_secs(3), Duration::ZERO);
    cfg.fallbacks = vec![remote];
    let keeper = SessionKeeper::start(&a.client, cfg, &tracker, cancel.clone())
        .await
        .unwrap();
    assert!(
        session::acquire(&a.client, "l/shard", keeper.id(), b"v")
            .await
            .unwrap()
    );
    admin(&a, "/_dev/agent/restart", serde_json::json!({"ms": 60_000})).await;
    within("fenced", keeper.fenced()).await;
    assert_eq!(keeper.fence_reason(), Some(FenceReason::SessionGone));
    cancel.cancel();
}

/// A fallback that accepts connections and never answers (a hung agent elsewhere).
async fn black_hole() -> (Client, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (Client::new(&Config::http(addr)).unwrap(), task)
}

#[tokio::test]
async fn a_paused_agent_answers_the_renew_in_flight_while_a_fallback_hangs() {
    // Fencing deadline 6 s, a renewal every 3 s, the next endpoint asked after 1.5 s. The agent
    // hangs for 4.8 s right after a renewal; the only fallback never answers. Hedged, the renew
    // sent at 3 s is still in flight when the agent resumes and succeeds at ~4.9 s. Cut short at
    // 4.5 s (then the fallback until 6 s), no attempt would reach the agent before the deadline.
    let a = agent().await;
    let (hole, hole_task) = black_hole().await;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let mut cfg = SessionConfig::new("hedge", Duration::from_secs(10), Duration::ZERO);
    cfg.node_checks = Some(Vec::new());
    cfg.fence_after = Some(Duration::from_secs(6));
    cfg.renew_every = Some(Duration::from_secs(3));
    cfg.fallbacks = vec![hole];
    let keeper = SessionKeeper::start(&a.client, cfg, &tracker, cancel.clone())
        .await
        .unwrap();
    let before = keeper.renewals();
    until("a renewal", async || keeper.renewals() > before).await;
    admin(
        &a,
        "/_dev/faults/pause",
        serde_json::json!({"mode": "hang"}),
    )
    .await;
    // The outage length is the test's parameter, not a synchronisation.
    tokio::time::sleep(Duration::from_millis(4800)).await;
    admin(&a, "/_dev/faults/resume", serde_json::json!({})).await;
    let resumed = keeper.renewals();
    until("a renewal after the pause", async || {
        keeper.renewals() > resumed || keeper.is_fenced()
    })
    .await;
    assert!(!keeper.is_fenced(), "{:?}", keeper.fence_reason());
    assert_eq!(keeper.fallback_renewals(), 0);
    keeper.destroy().await.unwrap();
    cancel.cancel();
    hole_task.abort();
}
