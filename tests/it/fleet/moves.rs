//! Fleet changes under load: three to four shards moving only the planned workspaces, a partitioned
//! worker stopping before anyone else takes its workspaces, and a Consul outage fencing every
//! worker until it is over.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_four_shards_moves_only_the_planned_workspaces_without_overlap() {
    let fleet = Fleet::start().await;
    let old = ShardMap::uniform(3);
    put_map(fleet.consul_http(), &old).await;
    let workers = &start_workers(&fleet, &[0, 1, 2, 3]).await;
    let wss = names(60);
    create_all(workers, &old, &wss).await;
    let router = &fleet.router().await;

    let mut new = ShardMap::uniform(4);
    new.version = old.version + 1;
    let ids: Vec<WorkspaceId> = wss
        .iter()
        .map(|w| WorkspaceId::new(w.as_str()).expect("id"))
        .collect();
    let plan = wafleet::shard::plan(&old, &new, &ids);
    let moving: BTreeSet<String> = plan.iter().map(|m| m.workspace.to_string()).collect();
    assert!(
        !moving.is_empty(),
        "60 workspaces: some move to the new shard"
    );
    assert!(
        plan.iter().all(|m| m.to == Some(3)),
        "rendezvous moves only to the new shard"
    );

    let done = Arc::new(AtomicBool::new(false));
    let consul = fleet.consul_http();
    // Sampler: worker states, then KV, then worker states again. A workspace reported Running
    // by a worker in both state samples (same session) must be held by that session in KV at
    // the time in between; and no two workers may report it Running in the same round.
    let sampler = async {
        let mut rounds = 0u32;
        while !done.load(Ordering::Relaxed) {
            let mut before = BTreeMap::new();
            for (k, w) in workers {
                if let Some(p) = phases(w).await {
                    before.insert(*k, p);
                }
            }
            let kv = workspace_lock_holders(consul).await;
            for (k, w) in workers {
                let Some((s2, p2)) = phases(w).await else {
                    continue;
                };
                let Some((s1, p1)) = before.get(k) else {
                    continue;
                };
                if *s1 != s2 {
                    continue;
                }
                for (ws, ph) in p1 {
                    if ph == "running" && p2.get(ws).map(String::as_str) == Some("running") {
                        assert_eq!(
                            kv.get(ws),
                            Some(&s2),
                            "{ws} running on shard {k} while KV names another holder"
                        );
                    }
                }
            }
            rounds += 1;
        }
        rounds
    };
    // Traffic through the router: workspaces that do not move answer 200 from their owner
    // throughout; moving ones may answer 503 (Retry-After) while their lock changes hands.
    let traffic = async {
        let mut n = 0u64;
        while !done.load(Ordering::Relaxed) {
            for ws in &wss {
                let a = router.list(ws).await.expect("router answers");
                n += 1;
                if moving.contains(ws) {
                    // Never a 421: the router retries it, or answers 503 workspace_moving.
                    assert!(matches!(a.status, 200 | 503), "moving {ws}: {a:?}");
                    assert!(a.status == 200 || a.retry_after, "{ws}: {a:?}");
                } else {
                    assert_eq!(
                        (a.status, a.shard),
                        (200, Some(owner(&old, ws))),
                        "unmoved {ws}: {a:?}"
                    );
                }
            }
        }
        n
    };
    let mover = async {
        put_map(consul, &new).await;
        for ws in &wss {
            let k = owner(&new, ws);
            let a = wait_for(&format!("{ws} served by shard {k}"), LONG, || async move {
                let a = workers[&k].list(ws).await?;
                (a.status == 200).then_some(a)
            })
            .await;
            assert_eq!(a.shard, Some(k));
            assert_eq!(
                a.body["sessions"][0]["session"], "default",
                "{ws} kept its session"
            );
        }
        done.store(true, Ordering::Relaxed);
    };
    let (rounds, requests, ()) = tokio::join!(sampler, traffic, mover);
    assert!(rounds > 0 && requests > 0);

    // Exactly the planned workspaces changed owner: old owners answer 421 for them now.
    for ws in &wss {
        let (from, to) = (owner(&old, ws), owner(&new, ws));
        assert_eq!(from != to, moving.contains(ws), "{ws}");
        if from != to {
            let a = workers[&from].list(ws).await.expect("answer");
            assert_eq!(a.status, 421, "{ws} left shard {from}: {a:?}");
            assert_eq!(a.body["shard"], to);
        }
    }
    let holders = workspace_lock_holders(consul).await;
    for ws in &wss {
        let (session, _) = phases(&workers[&owner(&new, ws)]).await.expect("state");
        assert_eq!(holders.get(ws), Some(&session), "{ws} lock holder");
    }
    for w in workers.values() {
        assert_no_overlap(
            &w.state().await.expect("state"),
            &format!("shard {}", w.shard),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_stops_before_anyone_else_can_take_its_workspaces() {
    let fleet = Fleet::start().await;
    let map = ShardMap::uniform(1);
    put_map(fleet.consul_http(), &map).await;
    let workers = start_workers(&fleet, &[0]).await;
    let wss = names(10);
    create_all(&workers, &map, &wss).await;
    let a = &workers[&0];
    let (old_session, _) = phases(a).await.expect("state");
    // A standby for the same shard, waiting for the shard lock.
    let standby = &fleet.worker_unready(0, support::free_port());
    wait_for(
        "standby HTTP",
        LONG,
        || async move { standby.readyz().await },
    )
    .await;

    let consul = fleet.consul_http();
    let r = support::http()
        .post(format!("http://{consul}/_dev/faults/drop"))
        .json(&serde_json::json!({"session": old_session}))
        .send()
        .await
        .expect("fault");
    assert!(r.status().is_success(), "drop fault: {}", r.status());

    // Until some other session holds a workspace lock, sample KV first and then the partitioned
    // worker: whenever KV shows a new holder, the old worker must already run nothing.
    let saw_fenced = &AtomicBool::new(false);
    let old_session = &old_session;
    let new_holder = wait_for("another session to take a workspace", LONG, || async move {
        let holders = workspace_lock_holders(consul).await;
        let taken = holders.values().any(|s| s != old_session);
        let state = a.state().await;
        if let Some(s) = &state
            && s["fenced"] == true
        {
            saw_fenced.store(true, Ordering::Relaxed);
        }
        if taken {
            let s = state.expect("partitioned worker still answers its state endpoint");
            let running_old_term = s["session"] == old_session.as_str()
                && s["workspaces"]
                    .as_object()
                    .is_some_and(|m| m.values().any(|p| p != "acquiring" && p != "releasing"));
            assert!(
                !running_old_term,
                "a workspace was taken while the partitioned worker still ran it: {s}"
            );
            return Some(holders);
        }
        None
    })
    .await;
    assert!(
        saw_fenced.load(Ordering::Relaxed),
        "the partitioned worker reported fencing before the takeover"
    );
    assert!(new_holder.values().all(|s| s != old_session));
    // While fenced (before a new term is ready) the worker answered 503; now someone serves.
    let first_ws = &wss[0];
    let server = wait_for("a worker serving shard 0 again", LONG, || async move {
        for w in [a, standby] {
            if let Some(ans) = w.list(first_ws).await
                && ans.status == 200
            {
                return Some(w.addr);
            }
        }
        None
    })
    .await;
    assert!(server == a.addr || server == standby.addr);
    for w in [a, standby] {
        if let Some(s) = w.state().await {
            assert_no_overlap(&s, "after partition");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_outage_fences_every_worker_and_they_recover_after_it() {
    let fleet = Fleet::start().await;
    let map = ShardMap::uniform(2);
    put_map(fleet.consul_http(), &map).await;
    let workers = &start_workers(&fleet, &[0, 1]).await;
    let wss = names(10);
    create_all(workers, &map, &wss).await;
    let consul = fleet.consul_http();
    let fault = |path: &'static str, body: Value| async move {
        let r = support::http()
            .post(format!("http://{consul}/_dev/faults/{path}"))
            .json(&body)
            .send()
            .await
            .expect("fault");
        assert!(r.status().is_success(), "{path}: {}", r.status());
    };
    fault("pause", serde_json::json!({"mode": "unavailable"})).await;

    // No renewal can succeed: every worker fences, stops its workspaces and answers 503.
    for w in workers.values() {
        let s = wait_for(&format!("shard {} fenced", w.shard), LONG, || async move {
            let s = w.state().await?;
            (s["fenced"] == true).then_some(s)
        })
        .await;
        assert_eq!(s["ready"], false);
        for ws in wss.iter().filter(|ws| owner(&map, ws) == w.shard) {
            let a = w.list(ws).await.expect("answer");
            assert_eq!(
                (a.status, a.body["error"].as_str()),
                (503, Some("fenced")),
                "{ws}"
            );
            assert!(a.retry_after);
        }
        assert_eq!(w.readyz().await, Some(503));
    }

    // Consul comes back: new terms, the same workspaces and sessions, no overlap.
    fault("resume", serde_json::json!({})).await;
    for ws in &wss {
        let w = &workers[&owner(&map, ws)];
        let a = wait_for(
            &format!("{ws} back after the outage"),
            LONG,
            || async move {
                let a = w.list(ws).await?;
                (a.status == 200).then_some(a)
            },
        )
        .await;
        assert_eq!(a.body["sessions"][0]["session"], "default");
    }
    for w in workers.values() {
        let s = w.state().await.expect("state");
        assert!(
            s["term"].as_u64() >= Some(2),
            "a new term after fencing: {s}"
        );
        assert_eq!(s["fenced"], false);
        assert_no_overlap(&s, &format!("shard {}", w.shard));
    }
}
