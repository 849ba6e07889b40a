//! A frozen worker must not leave two browsers on one profile (issue 13, item 10).
//!
//! Two workers for shard 0, each in its own network namespace (two "hosts" that share the
//! data directory, as NFS clients would), real Chromium on the simulator. Worker A serves the
//! shard; worker B waits for the shard lock. A is frozen with SIGSTOP past its TTL: its
//! browser guard kills A's browsers (A itself cannot), Consul invalidates A's session, B takes
//! the shard and starts the browsers on the same profiles after checking their owner records.
//! A is then thawed: it fences and does not serve.
//!
//! A sampler reads `/proc` throughout and fails the test if two browsers ever run on one
//! profile. Needs root (network namespaces); skipped with a message otherwise.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::{ADMIN_TOKEN, Proc, TOKEN_SECRET, call, kv_get, wait_for};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

const LONG: Duration = Duration::from_secs(120);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace with a veth pair: `10.215.<n>.1` on the host end, `.2` inside.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl Netns {
    fn create(tag: &str, n: u8) -> Result<Netns, String> {
        let pid = std::process::id() % 100_000;
        let ns = Netns {
            name: format!("wfz-{pid}-{tag}"),
            host_if: format!("wfz{pid}{tag}h"),
            host_ip: format!("10.215.{n}.1"),
            ns_ip: format!("10.215.{n}.2"),
        };
        let inner_if = format!("wfz{pid}{tag}n");
        // Leftovers of an interrupted run with the same pid.
        let _ = ip(&["netns", "del", &ns.name]);
        let _ = ip(&["link", "del", &ns.host_if]);
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner_if,
        ])?;
        ip(&["link", "set", &inner_if, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            &inner_if,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &inner_if, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    if matches!(f.next()?, "Z" | "X") {
        return None;
    }
    f.next()?.parse().ok()
}

/// Browser (main) processes under `data`, by profile, with their parent pid.
fn browsers(data: &Path) -> BTreeMap<String, Vec<(u32, u32)>> {
    let prefix = format!("--user-data-dir={}", data.display());
    let mut out: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
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
        let Some(dir) = args.iter().find(|a| a.starts_with(prefix.as_bytes())) else {
            continue;
        };
        let Some(ppid) = parent_of(pid) else { continue };
        out.entry(String::from_utf8_lossy(&dir["--user-data-dir=".len()..]).into_owned())
            .or_default()
            .push((pid, ppid));
    }
    // A browser's child between fork and exec still shows the browser's command line: only
    // the processes whose parent is not a browser of the same profile are browsers.
    for list in out.values_mut() {
        let pids: Vec<u32> = list.iter().map(|(p, _)| *p).collect();
        list.retain(|(_, pp)| !pids.contains(pp));
    }
    out.retain(|_, l| !l.is_empty());
    out
}

fn children_browsers(data: &Path, parent: u32) -> usize {
    browsers(data)
        .values()
        .flatten()
        .filter(|(_, pp)| *pp == parent)
        .count()
}

fn port_of(ready: &Value, key: &str) -> u16 {
    ready[key]
        .as_str()
        .and_then(|s| s.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {key} of {ready}"))
}

fn worker_args(data: &Path, listen: &str, wa: &str) -> Vec<String> {
    [
        "worker",
        "--shard",
        "0",
        "--data",
        &data.display().to_string(),
        "--listen",
        listen,
        "--advertise",
        listen,
        "--session-ttl-secs",
        "10",
        "--lock-delay-secs",
        "2",
        "--drain-grace-secs",
        "10",
        "--wa-url",
        wa,
    ]
    .map(String::from)
    .to_vec()
}

fn env(consul: &str) -> Vec<(String, String)> {
    vec![
        ("CONSUL_HTTP_ADDR".into(), format!("http://{consul}")),
        ("WAFLEET_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("WAFLEET_TOKEN_SECRET".into(), TOKEN_SECRET.into()),
    ]
}

async fn shard_holder(consul: &str) -> Option<String> {
    let e = kv_get(consul.parse().ok()?, "wafleet/locks/shards/0").await?;
    e.get("Session")?.as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_never_shares_a_profile_with_its_replacement() {
    let (a_ns, b_ns) = match (Netns::create("a", 41), Netns::create("b", 42)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            eprintln!(
                "SKIPPED: network namespaces unavailable (needs root and iproute2): {:?} {:?}",
                a.err(),
                b.err()
            );
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    wafleet::volume::init(&data, Some("test-volume")).expect("volume init");

    // The agent and the simulator listen on every address: each namespace reaches them on
    // its host end.
    let consul = Proc::spawn(
        "consul-dev",
        &["consul-dev", "--http", "0.0.0.0:0", "--dns", "127.0.0.1:0"].map(String::from),
        &[],
        &logs,
    )
    .await;
    let cport = port_of(consul.ready.as_ref().expect("ready"), "http");
    let local_consul = format!("127.0.0.1:{cport}");
    support::put_map(local_consul.parse().unwrap(), &ShardMap::uniform(1)).await;
    let sim = Proc::spawn(
        "sim",
        &["sim", "--listen", "0.0.0.0:0"].map(String::from),
        &[],
        &logs,
    )
    .await;
    let sport = port_of(sim.ready.as_ref().expect("ready"), "http");

    let a_listen = format!("{}:{}", a_ns.ns_ip, support::free_port());
    let mut a = Proc::start_with(
        "worker-a",
        &a_ns.exec(),
        &worker_args(
            &data,
            &a_listen,
            &format!("http://{}:{sport}/", a_ns.host_ip),
        ),
        &env(&format!("{}:{cport}", a_ns.host_ip)),
        &logs,
    );
    a.wait_ready(LONG).await;
    let a_pid = a.pid();

    // Two workspaces with a real session each, on A.
    let spaces: Vec<String> = (0..2).map(|i| format!("frozen-{i}")).collect();
    for ws in &spaces {
        WorkspaceId::new(ws).expect("valid id");
        let url = format!("http://{a_listen}/v1/workspaces/{ws}/sessions");
        let r = wait_for("session created on A", LONG, || {
            let url = url.clone();
            async move {
                let r = call(
                    reqwest::Method::POST,
                    &url,
                    Some(serde_json::json!({"session": "s"})),
                )
                .await?;
                (r.status == 201).then_some(r)
            }
        })
        .await;
        assert_eq!(r.status, 201);
    }
    let d = data.clone();
    wait_for("A's browsers up", LONG, || {
        let d = d.clone();
        async move { (children_browsers(&d, a_pid) >= 2).then_some(()) }
    })
    .await;
    let a_session = wait_for("A holds shard 0", LONG, || shard_holder(&local_consul)).await;

    // B, on the other "host", waits for the shard lock.
    let b_listen = format!("{}:{}", b_ns.ns_ip, support::free_port());
    let mut b = Proc::start_with(
        "worker-b",
        &b_ns.exec(),
        &worker_args(
            &data,
            &b_listen,
            &format!("http://{}:{sport}/", b_ns.host_ip),
        ),
        &env(&format!("{}:{cport}", b_ns.host_ip)),
        &logs,
    );

    // The sampler: never two browsers on one profile, at any moment.
    let stop = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(Mutex::new(Vec::<String>::new()));
    let sampler = {
        let (stop, overlaps, data) = (stop.clone(), overlaps.clone(), data.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (profile, list) in browsers(&data) {
                    if list.len() > 1 {
                        overlaps
                            .lock()
                            .unwrap()
                            .push(format!("{profile}: {list:?}"));
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        })
    };

    // Freeze A past its TTL. Its guard kills its browsers; B takes the shard.
    a.signal("STOP");
    struct Thaw(u32);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    let thaw = Thaw(a_pid);
    let d = data.clone();
    wait_for("A's browsers killed while A is frozen", LONG, || {
        let d = d.clone();
        async move { (children_browsers(&d, a_pid) == 0).then_some(()) }
    })
    .await;
    b.wait_ready(LONG).await;
    let b_pid = b.pid();
    let b_session = shard_holder(&local_consul).await.expect("shard held");
    assert_ne!(
        b_session, a_session,
        "B holds the shard with its own session"
    );
    let d = data.clone();
    wait_for("B's browsers up on the same profiles", LONG, || {
        let d = d.clone();
        async move { (children_browsers(&d, b_pid) >= 2).then_some(()) }
    })
    .await;
    // The frozen worker's browsers are gone before it wakes.
    assert_eq!(children_browsers(&data, a_pid), 0);

    // Thaw A: it finds its session gone, fences, and does not serve.
    a.signal("CONT");
    drop(thaw);
    let url = format!("http://{a_listen}/readyz");
    wait_for("A answers unready after waking", LONG, || {
        let url = url.clone();
        async move {
            let r = call(reqwest::Method::GET, &url, None).await?;
            (r.status == 503).then_some(())
        }
    })
    .await;
    for ws in &spaces {
        let r = call(
            reqwest::Method::GET,
            &format!("http://{a_listen}/v1/workspaces/{ws}/sessions"),
            None,
        )
        .await
        .expect("A answers");
        assert_ne!(
            r.status, 200,
            "the thawed worker must not serve {ws}: {r:?}"
        );
        let r = call(
            reqwest::Method::GET,
            &format!("http://{b_listen}/v1/workspaces/{ws}/sessions"),
            None,
        )
        .await
        .expect("B answers");
        assert_eq!(r.status, 200, "B serves {ws}: {r:?}");
    }
    // The shard stays with B, and A starts no browser.
    assert_eq!(
        shard_holder(&local_consul).await.as_deref(),
        Some(b_session.as_str())
    );
    assert_eq!(children_browsers(&data, a_pid), 0);

    stop.store(true, Ordering::Relaxed);
    assert!(sampler.join().expect("sampler") > 0);
    let seen = overlaps.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "two browsers on one profile: {seen:?}\n{}\n{}",
        a.log_tail(40),
        b.log_tail(40)
    );
    let a_log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(
        a_log.contains("GUARD"),
        "A's guard must have killed its browsers\n{}",
        a.log_tail(40)
    );

    for p in [&a, &b] {
        p.signal("TERM");
    }
    let _ = a.wait_exit(Duration::from_secs(30)).await;
    let _ = b.wait_exit(Duration::from_secs(30)).await;
    let d: PathBuf = data.clone();
    wait_for("every browser gone", Duration::from_secs(30), || {
        let d = d.clone();
        async move { browsers(&d).is_empty().then_some(()) }
    })
    .await;
    drop((sim, consul));
}
