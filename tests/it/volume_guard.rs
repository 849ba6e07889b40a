//! The shared-volume guard: a worker whose data directory lacks the `.wafleet-volume` sentinel
//! (an NFS mount that failed leaves an empty local directory) refuses to take its shard — it
//! stays unready with the reason in `/readyz` and a clear log line — and starts normally once
//! the sentinel appears. Real processes on port 0 and the built-in agent.

use crate::support;

use std::time::Duration;

use support::{Fleet, call, free_port, put_map, wait_for};
use wafleet::shard::ShardMap;

#[tokio::test]
async fn a_worker_without_the_volume_sentinel_stays_unready_and_says_why() {
    let fleet = Fleet::start().await;
    put_map(fleet.consul_http(), &ShardMap::uniform(1)).await;
    std::fs::remove_file(fleet.data().join(wafleet::volume::SENTINEL)).expect("sentinel existed");

    let port = free_port();
    let w = fleet.worker_unready(0, port);
    let url = format!("http://{}/readyz", w.addr);
    let body = wait_for(
        "readyz names the missing volume",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let a = call(reqwest::Method::GET, &url, None).await?;
                let reason = a.body.get("reason")?.as_str()?.to_owned();
                (a.status == 503).then_some(reason)
            }
        },
    )
    .await;
    assert!(body.contains(".wafleet-volume"), "{body}");
    // It did not take the shard: nobody holds the shard lock.
    let holders = support::kv_list(fleet.consul_http(), "wafleet/locks/shards/").await;
    assert!(
        holders.values().all(|v| v.get("Session").is_none()),
        "{holders:?}"
    );
    assert!(
        w.proc.log_tail(200).contains("REFUSING TO START"),
        "{}",
        w.proc.log_tail(20)
    );

    // The volume shows up (the mount came back): the worker takes its shard.
    wafleet::volume::init(&fleet.data(), Some("test-volume")).unwrap();
    wait_for(
        "ready once the sentinel exists",
        Duration::from_secs(60),
        || {
            let w = &w;
            async move { (w.readyz().await? == 200).then_some(()) }
        },
    )
    .await;
}
