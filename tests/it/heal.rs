//! Healing a crashed worker (issue 13, item 6): a `wafleet dev` fleet with the production
//! defaults (session TTL 15 s, lock delay 15 s), real Chromium sessions on the simulator. A
//! worker killed with SIGKILL is restarted by `wafleet dev` on the same host; the new process
//! proves its predecessor dead (owner record: same host and boot, pid gone) and takes over the
//! predecessor's still-valid Consul session instead of waiting TTL + lock delay for it.
//!
//! Asserted: the same session holds the shard lock after the restart, the worker log says it
//! took over, every workspace of the shard answers again with its session, and a `/proc`
//! sampler running throughout never sees two browsers on one profile. No timing is asserted
//! (the heal time is measured in docs/chaos.md).

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::{ADMIN_TOKEN, Proc, call, kv_get, wait_for};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

const LONG: Duration = Duration::from_secs(120);

fn read_state(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn worker_pid(state: &Value, shard: u64) -> Option<u64> {
    state["workers"]
        .as_array()?
        .iter()
        .find(|w| w["shard"] == shard)?["pid"]
        .as_u64()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Browser (main) processes per profile under `data`: processes whose command line has
/// `--user-data-dir=<data>/…` and no `--type=` (Chromium's helpers carry a `--type`).
fn browsers_by_profile(data: &Path) -> BTreeMap<String, Vec<u32>> {
    let prefix = format!("--user-data-dir={}", data.display());
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.iter().any(|a| a.starts_with(b"--type=")) {
            continue;
        }
        if let Some(dir) = args
            .iter()
            .find(|a| a.starts_with(prefix.as_bytes()))
            .map(|a| String::from_utf8_lossy(&a["--user-data-dir=".len()..]).into_owned())
        {
            // A zombie (exited, not reaped) runs nothing.
            if alive(u64::from(pid)) {
                out.entry(dir).or_default().push(pid);
            }
        }
    }
    // A browser's child between fork and exec still shows the browser's command line: only
    // the processes whose parent is not a browser of the same profile are browsers. A process
    // whose parent can no longer be read has exited since its command line was read (such a
    // short-lived child, gone by now, was counted as a second browser under load): not one.
    for list in out.values_mut() {
        let pids = list.clone();
        list.retain(|p| parent_of(*p).is_some_and(|pp| !pids.contains(&pp)));
    }
    out.retain(|_, l| !l.is_empty());
    out
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples `/proc` until stopped; records every moment two browsers ran on one profile.
fn spawn_sampler(
    data: PathBuf,
) -> (
    Arc<AtomicBool>,
    Arc<Mutex<Vec<String>>>,
    std::thread::JoinHandle<u64>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(Mutex::new(Vec::new()));
    let (s, o) = (stop.clone(), overlaps.clone());
    let handle = std::thread::spawn(move || {
        let mut samples = 0u64;
        while !s.load(Ordering::Relaxed) {
            for (profile, pids) in browsers_by_profile(&data) {
                if pids.len() > 1 {
                    o.lock().unwrap().push(format!("{profile}: {pids:?}"));
                }
            }
            samples += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        samples
    });
    (stop, overlaps, handle)
}

async fn lock_session(consul: &str, shard: u32) -> Option<String> {
    let addr = consul.parse().ok()?;
    let e = kv_get(addr, &format!("wafleet/locks/shards/{shard}")).await?;
    e.get("Session")?.as_str().map(str::to_owned)
}

/// On a failure: copies the fleet's logs out of the temp dir (which goes), and kills the
/// children `wafleet dev` recorded (dropping the dev process SIGKILLs it alone).
struct OnFailure {
    data: PathBuf,
}

impl Drop for OnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let to = std::env::temp_dir().join("wafleet-heal-failed-logs");
        let _ = std::fs::remove_dir_all(&to);
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.data.join("dev/logs"))
            .arg(&to)
            .status();
        eprintln!("fleet logs kept in {}", to.display());
        if let Some(state) = read_state(&self.data.join("dev/state.json")) {
            let mut pids: Vec<u64> = state["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["pid"].as_u64())
                .collect();
            if let Some(o) = state["pids"].as_object() {
                pids.extend(o.values().filter_map(Value::as_u64));
            }
            for p in pids {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_takes_over_its_session_and_serves_its_shard_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _on_failure = OnFailure { data: data.clone() };
    // Production defaults: TTL 15 s, lock delay 15 s (the flags' defaults, given explicitly).
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
        "15",
        "--lock-delay-secs",
        "15",
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
    let router = ready["router"].as_str().expect("router").to_owned();
    let consul = ready["consul_http"].as_str().expect("consul").to_owned();
    let state_path = data.join("dev/state.json");

    // Three workspaces on shard 0, one on shard 1, one real session each.
    let map = ShardMap::uniform(2);
    let on = |k: u32, n: usize| -> Vec<String> {
        (0..1000)
            .map(|i| format!("heal-{i}"))
            .filter(|w| map.owner(&WorkspaceId::new(w).unwrap()) == Some(k))
            .take(n)
            .collect()
    };
    let victims = on(0, 3);
    let others = on(1, 1);
    for ws in victims.iter().chain(&others) {
        let url = format!("http://{router}/v1/workspaces/{ws}/sessions");
        let a = wait_for("a session created", LONG, || {
            let url = url.clone();
            async move {
                let a = call(
                    reqwest::Method::POST,
                    &url,
                    Some(serde_json::json!({"session": "s"})),
                )
                .await?;
                matches!(a.status, 201 | 409).then_some(a)
            }
        })
        .await;
        assert!(matches!(a.status, 201 | 409), "{ws}: {a:?}");
    }
    // Every browser is up (a profile with a browser) before the fault.
    let d = data.clone();
    let n = victims.len() + others.len();
    wait_for("a browser per session", LONG, || {
        let d = d.clone();
        async move { (browsers_by_profile(&d).len() >= n).then_some(()) }
    })
    .await;

    let (stop, overlaps, sampler) = spawn_sampler(data.clone());
    let before = wait_for("shard 0's lock holder", LONG, || lock_session(&consul, 0)).await;
    let state = read_state(&state_path).expect("state.json");
    let old_pid = worker_pid(&state, 0).expect("worker 0 pid");
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &old_pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let path = state_path.clone();
    wait_for("worker 0 restarted", LONG, || {
        let path = path.clone();
        async move {
            let s = read_state(&path)?;
            let pid = worker_pid(&s, 0)?;
            (pid != old_pid && alive(pid)).then_some(())
        }
    })
    .await;

    // Every workspace of shard 0 answers again through the router, with its session.
    for ws in &victims {
        let url = format!("http://{router}/v1/workspaces/{ws}/sessions");
        wait_for(&format!("{ws} served again"), LONG, || {
            let url = url.clone();
            async move {
                let a = call(reqwest::Method::GET, &url, None).await?;
                let listed = a.body["sessions"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|x| x["session"] == "s"));
                (a.status == 200 && listed).then_some(())
            }
        })
        .await;
    }
    // The restarted process took over the predecessor's session: the same one holds the lock.
    let after = lock_session(&consul, 0).await.expect("shard 0 held");
    assert_eq!(
        after, before,
        "the restarted worker must hold the shard with the same session"
    );
    let log = std::fs::read_to_string(data.join("dev/logs/worker-0.log")).unwrap_or_default();
    assert!(
        log.contains("TAKEOVER") && log.contains(&before),
        "the worker log must show the takeover of {before}"
    );
    // Every session has its browser again, one per profile.
    let d = data.clone();
    wait_for("a browser per session again", LONG, || {
        let d = d.clone();
        async move { (browsers_by_profile(&d).len() >= n).then_some(()) }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    assert!(samples > 0);
    let seen = overlaps.lock().unwrap().clone();
    assert!(seen.is_empty(), "two browsers on one profile: {seen:?}");

    dev.signal("TERM");
    let status = dev.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "dev exit: {status:?}\n{}",
        dev.log_tail(30)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = browsers_by_profile(&data);
        if left.is_empty() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let detail: Vec<String> = left
                .values()
                .flatten()
                .map(|p| {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                    format!("{p}: {}", stat.chars().take(80).collect::<String>())
                })
                .collect();
            panic!("browsers left after dev stopped: {left:?}\n{detail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
