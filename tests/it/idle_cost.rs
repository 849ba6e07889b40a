//! The idle cost of a fleet on Consul: a router and two workers with no traffic make a number
//! of Consul requests bounded by their configured intervals (the registration keeper once
//! spun on a closed status channel: ~1,400 `GET /v1/agent/services` a second from an idle
//! router). Real processes on port 0 and the built-in agent's request counter (`/_dev/stats`).

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Fleet, put_map};
use wafleet::shard::ShardMap;

/// The measured window. Its length is the experiment's parameter, not a synchronisation.
const WINDOW: Duration = Duration::from_secs(30);

async fn stats(fleet: &Fleet, method: reqwest::Method) -> Value {
    let r = reqwest::Client::new()
        .request(method, format!("http://{}/_dev/stats", fleet.consul_http()))
        .send()
        .await
        .expect("consul-dev answers");
    assert!(r.status().is_success());
    r.json().await.expect("JSON")
}

/// At most this many runs of a loop that runs every `every`, over `window`: one per interval,
/// plus one already in flight when the window opens and one for the partial interval.
fn runs(window: Duration, every: Duration) -> u64 {
    (window.as_secs_f64() / every.as_secs_f64()).floor() as u64 + 2
}

#[tokio::test]
async fn an_idle_fleet_makes_a_bounded_number_of_consul_requests() {
    let fleet = Fleet::start().await;
    put_map(fleet.consul_http(), &ShardMap::uniform(2)).await;
    let _w0 = fleet.worker(0).await;
    let _w1 = fleet.worker(1).await;
    let _router = fleet.router().await;

    stats(&fleet, reqwest::Method::DELETE).await;
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let s = stats(&fleet, reqwest::Method::GET).await;
    let window = started.elapsed();

    // The arithmetic, from the intervals the processes are configured with:
    // * worker (tests/support: --session-ttl-secs 10): the session keeper renews every TTL/3;
    //   the registration keeper updates its TTL check every TTL/3 and lists the agent's
    //   services once per update (to notice an agent that lost the registration); the shard
    //   map watch blocks for up to 60 s per request;
    // * router: its registration keeper (TTL 15 s) updates every 5 s plus one services list;
    //   its shard map watch blocks for up to 60 s per request (it resolves shards over DNS).
    let ttl3 = Duration::from_secs(10) / 3;
    let worker = runs(window, ttl3) * 3 + runs(window, Duration::from_secs(60));
    let router = runs(window, Duration::from_secs(5)) * 2 + runs(window, Duration::from_secs(60));
    let bound = 2 * worker + router;
    let total = s["requests"].as_u64().expect("a count");
    eprintln!(
        "idle fleet (router + 2 workers): {total} Consul requests in {:.1}s (bound {bound}): {}",
        window.as_secs_f64(),
        s["by_endpoint"]
    );
    assert!(
        total <= bound,
        "an idle fleet made {total} Consul requests in {window:?}, more than the {bound} its intervals allow: {}",
        s["by_endpoint"]
    );
    // The loops did run (the counter sees them): renewals and TTL updates happened.
    assert!(
        s["by_endpoint"]["PUT /v1/session/renew"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    );
    assert!(
        s["by_endpoint"]["PUT /v1/agent/check/pass"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    );
}
