//! A worker survives its local Consul agent's restart (issue #13 item 2): real `wafleet`
//! processes — the built-in agent with its remote listener (another agent of the datacenter)
//! and a placeholder-host worker with real workspaces.
//!
//! The agent restarts without leaving for longer than the fencing deadline (TTL 10 s, fencing
//! at ~6.7 s; the outage is 8.5 s, within the TTL). With TTL-only sessions and the remote
//! listener as fallback, the worker is never fenced; with `serfHealth` sessions (Consul's
//! default) and no fallback, the servers' failure detector (`--serf-detect 2s` here)
//! invalidates the session while the agent is still down — the failure mode the change
//! removes. Every wait is a condition with a deadline; no timing is asserted.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Fleet, Proc, Worker, put_map, wait_for};
use wafleet::shard::ShardMap;

const LONG: Duration = Duration::from_secs(90);
/// Longer than the fencing deadline (2/3 × 10 s), shorter than the TTL.
const OUTAGE_MS: u64 = 8_500;

async fn create_all(w: &Worker, wss: &[&str]) {
    for ws in wss {
        let a = wait_for(&format!("create {ws}"), LONG, || async move {
            let a = w.create(ws, "default").await?;
            (a.status != 503).then_some(a)
        })
        .await;
        assert_eq!(a.status, 201, "create {ws}: {a:?}");
    }
    wait_for("every workspace running", LONG, || async move {
        let s = w.state().await?;
        let all = wss
            .iter()
            .all(|ws| s["workspaces"].get(*ws).and_then(Value::as_str) == Some("running"));
        all.then_some(())
    })
    .await;
}

async fn consul_json(addr: std::net::SocketAddr, path: &str) -> Option<Value> {
    let r = support::http()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

async fn restart_agent(fleet: &Fleet) {
    let r = support::http()
        .post(format!(
            "http://{}/_dev/faults/agent-restart",
            fleet.consul_remote()
        ))
        .json(&json!({"ms": OUTAGE_MS}))
        .send()
        .await
        .expect("fault");
    assert!(r.status().is_success(), "agent-restart: {}", r.status());
}

/// Whether the local agent is still down, asked of the remote listener.
async fn agent_down(fleet: &Fleet) -> bool {
    consul_json(fleet.consul_remote(), "/_dev/faults")
        .await
        .is_some_and(|f| f["agent_down_ms"].as_u64().is_some_and(|ms| ms > 0))
}

fn remote_renewals(stats: &Value) -> u64 {
    stats["by_endpoint"]
        .get("remote PUT /v1/session/renew")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rides_out_its_local_agent_restart_without_being_fenced() {
    let fleet = Fleet::start_with(&["--serf-detect", "2s"]).await;
    put_map(fleet.consul_http(), &ShardMap::uniform(1)).await;
    let w = fleet.worker(0).await;
    let wss = ["ws-a", "ws-b", "ws-c"];
    create_all(&w, &wss).await;
    let before = w.state().await.expect("state");
    let session = before["session"].as_str().expect("session").to_owned();
    let term = before["term"].clone();
    let stats = consul_json(fleet.consul_remote(), "/_dev/stats")
        .await
        .expect("stats");
    let renewals_before = remote_renewals(&stats);

    restart_agent(&fleet).await;
    assert!(agent_down(&fleet).await, "the fault took effect");
    // Until the agent is back, and a little after (the first renewals through it), every
    // sample of the worker shows the same term: not fenced, the same session, every workspace
    // running and answering.
    let (w, session, term, wss, fleet) = (&w, &session, &term, &wss, &fleet);
    let samples = &std::sync::atomic::AtomicU32::new(0);
    wait_for(
        "the agent back and the worker renewing through it",
        LONG,
        || async move {
            let down = agent_down(fleet).await;
            let s = w
                .state()
                .await
                .expect("the worker answers its state endpoint");
            samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(s["fenced"], false, "fenced during the agent restart: {s}");
            assert_eq!(s["ready"], true, "not ready during the agent restart: {s}");
            assert_eq!(s["session"], session.as_str(), "the session changed: {s}");
            assert_eq!(&s["term"], term, "a new term was opened: {s}");
            for ws in wss.iter() {
                assert_eq!(
                    s["workspaces"].get(*ws).and_then(Value::as_str),
                    Some("running"),
                    "{ws} is not running during the agent restart: {s}"
                );
                let a = w.list(ws).await.expect("an answer");
                assert_eq!(a.status, 200, "{ws} during the agent restart: {a:?}");
            }
            (!down).then_some(())
        },
    )
    .await;
    assert!(
        samples.load(std::sync::atomic::Ordering::Relaxed) > 1,
        "the worker was sampled during the outage"
    );
    // The session was renewed through the remote listener while the local agent was away.
    let stats = consul_json(fleet.consul_remote(), "/_dev/stats")
        .await
        .expect("stats");
    assert!(
        remote_renewals(&stats) > renewals_before,
        "no renewal through the fallback: {stats}"
    );
    // Consul still has the session, holding the shard lock.
    let info = consul_json(fleet.consul_http(), &format!("/v1/session/info/{session}"))
        .await
        .expect("session info");
    assert_eq!(info[0]["ID"], session.as_str(), "{info}");
    assert_eq!(
        info[0]["NodeChecks"],
        json!([]),
        "a TTL-only session: {info}"
    );
    let lock = consul_json(fleet.consul_http(), "/v1/kv/wafleet/locks/shards/0")
        .await
        .expect("shard lock");
    assert_eq!(lock[0]["Session"], session.as_str(), "{lock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_serf_health_sessions_the_same_restart_loses_the_session() {
    let fleet = Fleet::start_with(&["--serf-detect", "2s"]).await;
    put_map(fleet.consul_http(), &ShardMap::uniform(1)).await;
    // Consul's default session checks and no fallback: the behaviour before the change.
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = fleet.worker_args(0, &listen);
    args.extend(["--session-serf-health".into(), "true".into()]);
    let env: Vec<(String, String)> = fleet
        .env()
        .into_iter()
        .filter(|(k, _)| k != "WAFLEET_CONSUL_FALLBACK_ADDRS")
        .collect();
    let mut proc = Proc::start("worker-serf", &args, &env, &fleet.logs());
    proc.wait_ready(support::READY_TIMEOUT).await;
    let w = Worker {
        shard: 0,
        addr: listen.parse().expect("addr"),
        proc,
    };
    create_all(&w, &["ws-a"]).await;
    let session = w.state().await.expect("state")["session"]
        .as_str()
        .expect("session")
        .to_owned();
    let info = consul_json(fleet.consul_http(), &format!("/v1/session/info/{session}"))
        .await
        .expect("session info");
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]), "{info}");

    restart_agent(&fleet).await;
    // While the agent is still down (so the TTL cannot be what ended it), the failure
    // detector marks the node failed and the session is invalidated.
    let session = &session;
    let fleet = &fleet;
    wait_for(
        "the session invalidated by serfHealth",
        LONG,
        || async move {
            assert!(
                agent_down(fleet).await,
                "the agent came back before the session was invalidated"
            );
            let info = consul_json(
                fleet.consul_remote(),
                &format!("/v1/session/info/{session}"),
            )
            .await?;
            (info == json!([])).then_some(())
        },
    )
    .await;
    // The worker fences (its renewals fail, then the session is gone) and starts over with a
    // new session once the agent is back.
    let w = &w;
    wait_for("a new term", LONG, || async move {
        let s = w.state().await?;
        (s["ready"] == true && s["session"] != session.as_str()).then_some(())
    })
    .await;
}
