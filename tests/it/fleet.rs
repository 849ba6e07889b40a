//! Fleet integration tests (issue 3): real `wafleet` processes on port 0 — the built-in Consul
//! agent and workers — sharing one data directory as the NFS volume would.
//!
//! Timings come from flags (TTL 10 s, Consul's minimum, so fencing at ~6.7 s; lock delay 1 s).
//! Every wait is a condition with a deadline; nothing asserts on elapsed time.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{Fleet, Worker, call, put_map, wait_for, workspace_lock_holders};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

mod moves;

const LONG: Duration = Duration::from_secs(90);

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ws-{i:03}")).collect()
}

fn owner(map: &ShardMap, ws: &str) -> u32 {
    map.owner(&WorkspaceId::new(ws).expect("valid id"))
        .expect("an owner")
}

async fn start_workers(fleet: &Fleet, shards: &[u32]) -> BTreeMap<u32, Worker> {
    let mut out = BTreeMap::new();
    for &k in shards {
        out.insert(k, fleet.worker(k).await);
    }
    out
}

/// Creates session `default` in every workspace on its owner and waits for 201.
async fn create_all(workers: &BTreeMap<u32, Worker>, map: &ShardMap, wss: &[String]) {
    for ws in wss {
        let w = &workers[&owner(map, ws)];
        let a = wait_for(&format!("create {ws}"), LONG, || async move {
            let a = w.create(ws, "default").await?;
            (a.status != 503).then_some(a)
        })
        .await;
        assert_eq!(a.status, 201, "create {ws}: {a:?}");
        assert_eq!(a.shard, Some(w.shard));
    }
}

/// The phases a worker reports: workspace → phase, plus its session.
async fn phases(w: &Worker) -> Option<(String, BTreeMap<String, String>)> {
    let s = w.state().await?;
    let session = s.get("session")?.as_str()?.to_owned();
    let map = s
        .get("workspaces")?
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    Some((session, map))
}

fn assert_no_overlap(state: &Value, who: &str) {
    assert_eq!(
        state.get("overlaps").and_then(Value::as_u64),
        Some(0),
        "{who} saw another live process running one of its workspaces: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_serve_exactly_their_workspaces_and_refuse_bad_input() {
    let fleet = Fleet::start().await;
    let map = ShardMap::uniform(3);
    put_map(fleet.consul_http(), &map).await;
    let workers = start_workers(&fleet, &[0, 1, 2]).await;

    let wss = names(300);
    let mut per_shard = BTreeMap::<u32, usize>::new();
    for ws in &wss {
        let k = owner(&map, ws);
        *per_shard.entry(k).or_default() += 1;
        let a = workers[&k].list(ws).await.expect("owner answers");
        assert_eq!(a.status, 200, "{ws} on its owner {k}: {a:?}");
        assert_eq!(a.shard, Some(k), "{ws}: X-Wafleet-Shard");
        // Any other worker refuses with 421 and names the owner.
        let other = (k + 1) % 3;
        let b = workers[&other].list(ws).await.expect("non-owner answers");
        assert_eq!(b.status, 421, "{ws} on {other}: {b:?}");
        assert_eq!(b.body["error"], "not_owner");
        assert_eq!(b.body["shard"], k);
        assert_eq!(b.shard, Some(other));
    }
    assert_eq!(
        per_shard.len(),
        3,
        "every shard owns some of 300 workspaces"
    );

    // Create on the owner: 201, then visible in the list and by id.
    let ws = &wss[7];
    let w = &workers[&owner(&map, ws)];
    create_all(&workers, &map, std::slice::from_ref(ws)).await;
    let a = w.list(ws).await.expect("list");
    assert_eq!(a.body["sessions"][0]["session"], "default");
    let one = call(
        reqwest::Method::GET,
        &format!("http://{}/v1/workspaces/{ws}/sessions/default", w.addr),
        None,
    )
    .await
    .expect("get one");
    assert_eq!(one.status, 200);
    assert_eq!(one.body["status"], "WORKING");
    assert!(
        fleet
            .data()
            .join("workspaces")
            .join(ws)
            .join("default/session.json")
            .is_file()
    );
    let dup = w.create(ws, "default").await.expect("dup");
    assert_eq!(dup.status, 409);

    // Bad input: invalid ids 400, unknown route 404, missing token 401, big body 413.
    let base = format!("http://{}", w.addr);
    for (url, code) in [
        (format!("{base}/v1/workspaces/a.b/sessions"), 400),
        (format!("{base}/v1/workspaces/{ws}/sessions/bad.id"), 400),
        (format!("{base}/v1/nope"), 404),
    ] {
        let a = call(reqwest::Method::GET, &url, None)
            .await
            .expect("answer");
        assert_eq!(a.status, code, "{url}: {a:?}");
        assert!(a.body["error"].is_string(), "{url}: JSON error body");
        assert_eq!(a.shard, Some(w.shard), "{url}: shard header on errors too");
    }
    let unauth = support::http()
        .get(format!("{base}/v1/workspaces/{ws}/sessions"))
        .send()
        .await
        .expect("answer");
    assert_eq!(unauth.status(), 401);
    let big = support::http()
        .post(format!("{base}/v1/workspaces/{ws}/sessions"))
        .bearer_auth(support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .expect("answer");
    assert_eq!(big.status(), 413);

    // Metrics carry the worker names of COMMON.md.
    let text = support::http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let k = w.shard;
    for needle in [
        format!("wafleet_worker_ready{{shard=\"{k}\"}} 1"),
        format!("wafleet_worker_workspaces{{shard=\"{k}\"}} 1"),
        "wafleet_sessions{status=\"WORKING\"} 1".to_owned(),
    ] {
        assert!(
            text.contains(&needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }

    // A corrupt map in KV is refused: the workers keep the last good one.
    support::kv_put(fleet.consul_http(), "wafleet/shardmap", "{not json").await;
    let mut bad = ShardMap::uniform(3);
    bad.version = 9;
    bad.shards[0].weight = -1.0;
    support::kv_put(
        fleet.consul_http(),
        "wafleet/shardmap",
        serde_json::to_vec(&bad).expect("json"),
    )
    .await;
    for ws in wss.iter().take(30) {
        let k = owner(&map, ws);
        let a = workers[&k].list(ws).await.expect("answer");
        assert_eq!(a.status, 200, "{ws} after a corrupt map: {a:?}");
    }
    for w in workers.values() {
        let s = w.state().await.expect("state");
        assert_eq!(s["map_version"], 1, "shard {} kept the good map", w.shard);
        assert_eq!(w.readyz().await, Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_only_that_shard_and_a_restart_brings_it_back() {
    let fleet = Fleet::start().await;
    let map = ShardMap::uniform(3);
    put_map(fleet.consul_http(), &map).await;
    let mut workers = start_workers(&fleet, &[0, 1, 2]).await;
    let wss = names(30);
    create_all(&workers, &map, &wss).await;

    let router = &fleet.router().await;
    for ws in &wss {
        let a = router.list(ws).await.expect("router answers");
        assert_eq!(
            (a.status, a.shard),
            (200, Some(owner(&map, ws))),
            "{ws}: {a:?}"
        );
    }

    let victim = 1;
    let victims: Vec<&String> = wss.iter().filter(|ws| owner(&map, ws) == victim).collect();
    assert!(!victims.is_empty());
    let port = workers[&victim].addr.port();
    workers.get_mut(&victim).expect("victim").proc.kill9().await;

    // Every other workspace answers 200 through the router, every time, from the kill until
    // the victim is back. Its own workspaces answer 503 with Retry-After: from the router's
    // refused connection until its TTL check goes critical, then for the missing instance.
    let back = Arc::new(AtomicBool::new(false));
    let saw_503 = Arc::new(AtomicBool::new(false));
    let traffic = async {
        let mut rounds_after = 0;
        let mut requests = 0u64;
        while rounds_after < 2 {
            let was_back = back.load(Ordering::Relaxed);
            for ws in &wss {
                let a = router.list(ws).await.expect("router answers");
                requests += 1;
                if owner(&map, ws) != victim {
                    assert_eq!(a.status, 200, "{ws} on healthy shard: {a:?}");
                    assert_eq!(a.body["sessions"][0]["session"], "default");
                } else if !was_back {
                    assert!(
                        matches!(a.status, 200 | 502 | 503),
                        "{ws} of the lost shard: {a:?}"
                    );
                    if a.status == 503 {
                        assert!(a.retry_after, "503 without Retry-After: {a:?}");
                        saw_503.store(true, Ordering::Relaxed);
                    }
                }
            }
            if was_back {
                rounds_after += 1;
            }
        }
        requests
    };
    let restart = async {
        // Restart only once the router answers 503 for the lost shard.
        wait_for("503 for the lost shard", LONG, || async {
            saw_503.load(Ordering::Relaxed).then_some(())
        })
        .await;
        let mut replacement = fleet.worker_unready(victim, port);
        replacement.proc.wait_ready(LONG).await;
        // After the restart its workspaces answer 200 again through the router, with their
        // sessions restored from the shared data directory.
        for ws in &victims {
            let a = wait_for(
                &format!("{ws} back through the router"),
                LONG,
                || async move {
                    let a = router.list(ws).await?;
                    (a.status == 200).then_some(a)
                },
            )
            .await;
            assert_eq!(a.shard, Some(victim));
            assert_eq!(a.body["sessions"][0]["session"], "default", "{ws}: {a:?}");
        }
        back.store(true, Ordering::Relaxed);
        replacement
    };
    let (requests, replacement) = tokio::join!(traffic, restart);
    assert!(requests > 0);
    let s = replacement.state().await.expect("state");
    assert_no_overlap(&s, "replacement");
    // The killed worker's stale owner markers were replaced, not counted as overlaps.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_releases_every_lock() {
    let fleet = Fleet::start().await;
    let map = ShardMap::uniform(1);
    put_map(fleet.consul_http(), &map).await;
    let mut workers = start_workers(&fleet, &[0]).await;
    let wss = names(20);
    create_all(&workers, &map, &wss).await;
    let held = workspace_lock_holders(fleet.consul_http()).await;
    assert_eq!(held.len(), wss.len(), "every workspace lock held: {held:?}");
    let shard_lock = support::kv_get(fleet.consul_http(), "wafleet/locks/shards/0")
        .await
        .expect("shard lock key");
    assert!(shard_lock["Session"].is_string());

    let w = workers.get_mut(&0).expect("worker");
    w.proc.signal("TERM");
    let status = w.proc.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "clean drain exits 0: {status:?}\n{}",
        w.proc.log_tail(30)
    );

    let consul = fleet.consul_http();
    assert!(
        workspace_lock_holders(consul).await.is_empty(),
        "workspace locks left held"
    );
    let shard_lock = support::kv_get(consul, "wafleet/locks/shards/0")
        .await
        .expect("shard lock key");
    assert!(
        shard_lock.get("Session").is_none_or(Value::is_null),
        "shard lock left held: {shard_lock}"
    );
    let sessions: Vec<Value> = support::http()
        .get(format!("http://{consul}/v1/session/list"))
        .send()
        .await
        .expect("session list")
        .json()
        .await
        .expect("json");
    assert!(sessions.is_empty(), "session not destroyed: {sessions:?}");
    let services: Value = support::http()
        .get(format!("http://{consul}/v1/agent/services"))
        .send()
        .await
        .expect("services")
        .json()
        .await
        .expect("json");
    assert!(
        services.get("wafleet-worker-0").is_none(),
        "service not deregistered: {services}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_for_the_same_shard_waits_and_takes_over_only_after_the_first() {
    let fleet = Fleet::start().await;
    let map = ShardMap::uniform(1);
    put_map(fleet.consul_http(), &map).await;
    let mut workers = start_workers(&fleet, &[0]).await;
    let wss = names(10);
    create_all(&workers, &map, &wss).await;
    let first_session = phases(&workers[&0]).await.expect("state").0;

    let mut second = fleet.worker_unready(0, support::free_port());
    // Its HTTP is up but it is not ready: it waits for the shard lock.
    let sec = &second;
    let code = wait_for("second worker's HTTP", LONG, || async move {
        sec.readyz().await
    })
    .await;
    assert_eq!(code, 503);
    let a = second.list(&wss[0]).await.expect("answer");
    assert_eq!(a.status, 503, "a waiting worker serves nothing: {a:?}");
    assert!(a.retry_after);
    let holders = workspace_lock_holders(fleet.consul_http()).await;
    assert!(holders.values().all(|s| *s == first_session), "{holders:?}");
    let first = workers.get_mut(&0).expect("first");
    assert!(first.proc.running());

    // The first one leaves; the second takes over, and never while the first still ran.
    first.proc.signal("TERM");
    let status = first.proc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success());
    second.proc.wait_ready(LONG).await;
    let sec = &second;
    for ws in &wss {
        let a = wait_for(&format!("{ws} on the second worker"), LONG, || async move {
            let a = sec.list(ws).await?;
            (a.status == 200).then_some(a)
        })
        .await;
        assert_eq!(a.body["sessions"][0]["session"], "default");
    }
    let (second_session, _) = phases(&second).await.expect("state");
    assert_ne!(second_session, first_session);
    let holders = workspace_lock_holders(fleet.consul_http()).await;
    assert_eq!(holders.len(), wss.len());
    assert!(
        holders.values().all(|s| *s == second_session),
        "{holders:?}"
    );
    assert_no_overlap(&second.state().await.expect("state"), "second");
}
