//! `wafleet dev` as a whole (DESIGN §10): it starts the agent, router and workers, records
//! them in `state.json`, restarts a worker killed with SIGKILL (on the same address), and stops
//! every child on SIGTERM.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{ADMIN_TOKEN, Proc, call, wait_for};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

const LONG: Duration = Duration::from_secs(90);

fn read_state(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn alive(pid: u64) -> bool {
    // A zombie still has /proc/<pid>; it counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn worker_pid(state: &Value, shard: u64) -> Option<u64> {
    state["workers"]
        .as_array()?
        .iter()
        .find(|w| w["shard"] == shard)?["pid"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_records_restarts_and_stops_the_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "dev",
        "--workers",
        "2",
        "--data",
        &data.display().to_string(),
        "--router-listen",
        "127.0.0.1:0",
        "--consul-http",
        "127.0.0.1:0",
        "--consul-dns",
        "127.0.0.1:0",
        "--sim-listen",
        "127.0.0.1:0",
        "--session-ttl-secs",
        "10",
        "--lock-delay-secs",
        "1",
        "--drain-grace-secs",
        "10",
    ]
    .map(String::from)
    .to_vec();
    let env = vec![
        ("WAFLEET_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        (
            "WAFLEET_TOKEN_SECRET".to_owned(),
            support::TOKEN_SECRET.to_owned(),
        ),
    ];
    let mut dev = Proc::spawn("dev", &args, &env, &dir.path().join("logs")).await;
    let ready = dev.ready.clone().expect("readiness line");
    let state_path = data.join("dev/state.json");
    assert_eq!(ready["state"], state_path.display().to_string());

    // The given admin token is used, not a generated one.
    let token = std::fs::read_to_string(data.join("dev/admin-token")).expect("token file");
    assert_eq!(token, ADMIN_TOKEN);

    let state = read_state(&state_path).expect("state.json");
    assert_eq!(state["consul_http"], ready["consul_http"]);
    let workers = state["workers"].as_array().expect("workers").clone();
    assert_eq!(workers.len(), 2, "{state}");
    let mut pids: Vec<u64> = workers.iter().filter_map(|w| w["pid"].as_u64()).collect();
    pids.extend(
        state["pids"]
            .as_object()
            .expect("pids")
            .values()
            .filter_map(Value::as_u64),
    );
    assert!(
        pids.iter().all(|p| alive(*p)),
        "every recorded pid runs: {state}"
    );

    // The shard map was initialised (2 shards) and requests reach the owner.
    let map = ShardMap::uniform(2);
    for ws in ["alpha", "beta", "gamma", "delta"] {
        let owner = map
            .owner(&WorkspaceId::new(ws).expect("id"))
            .expect("owner");
        let addr = if state["router"].is_string() {
            state["router"].as_str().expect("router").to_owned()
        } else {
            workers[owner as usize]["addr"]
                .as_str()
                .expect("addr")
                .to_owned()
        };
        // dev announces readiness only once the router routes to every shard: no waiting.
        let url = format!("http://{addr}/v1/workspaces/{ws}/sessions");
        let a = call(reqwest::Method::GET, &url, None)
            .await
            .expect("answer");
        assert_eq!(a.status, 200, "{ws} right after readiness: {a:?}");
        assert_eq!(a.shard, Some(owner), "{ws}");
    }

    // SIGKILL a worker: it is restarted on the same address and state.json gets the new pid.
    let old_pid = worker_pid(&state, 0).expect("worker 0 pid");
    let addr = workers[0]["addr"].as_str().expect("addr").to_owned();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &old_pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    let path = &state_path;
    let new_state = wait_for("a restarted worker 0 in state.json", LONG, || async move {
        let s = read_state(path)?;
        let pid = worker_pid(&s, 0)?;
        (pid != old_pid && alive(pid)).then_some(s)
    })
    .await;
    assert_eq!(new_state["workers"][0]["addr"], addr.as_str());
    assert!(new_state["workers"][0]["restarts"].as_u64() >= Some(1));
    let url = format!("http://{addr}/readyz");
    wait_for("restarted worker ready", LONG, || {
        let url = url.clone();
        async move {
            let a = call(reqwest::Method::GET, &url, None).await?;
            (a.status == 200).then_some(())
        }
    })
    .await;

    // SIGTERM: every child stops, then dev exits 0.
    let final_state = read_state(&state_path).expect("state");
    let mut pids: Vec<u64> = final_state["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .collect();
    pids.extend(
        final_state["pids"]
            .as_object()
            .expect("pids")
            .values()
            .filter_map(Value::as_u64),
    );
    dev.signal("TERM");
    let status = dev.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "dev exit: {status:?}\n{}",
        dev.log_tail(30)
    );
    let pids = &pids;
    wait_for("every child gone", Duration::from_secs(10), || async move {
        pids.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
}
