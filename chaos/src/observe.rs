//! I/O: the continuous observers. A sampler that, every round, reads every worker's state,
//! the workspace lock holders in Consul KV, the workers' state again, and scans `/proc` for
//! Chromium browser processes by `--user-data-dir`, feeding the pure checkers in
//! [`crate::check`]; and a webhook receiver that can be taken down and brought back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use crate::check;
use crate::fleet::Fleet;
use crate::model::{BrowserProc, Received, Violation};
use crate::traffic::Recorder;

/// What the sampler found so far.
#[derive(Default)]
pub struct Observations {
    /// Every violation, with its instant.
    pub violations: Mutex<Vec<Violation>>,
    /// Sampling rounds where worker states and locks were compared.
    pub runner_rounds: AtomicU64,
    /// Rounds where Consul did not answer (lock comparison skipped).
    pub kv_missed: AtomicU64,
    /// `/proc` scans.
    pub proc_scans: AtomicU64,
    /// Largest number of Chromium browser processes seen in one scan.
    pub max_browsers: AtomicU64,
    /// `(t_ms, workspace)` seen running with no lock holder (inside the fencing window).
    pub free_lock_runs: Mutex<Vec<(u64, String)>>,
    /// Latest browser processes (for browser-crash).
    pub browsers: Mutex<Vec<BrowserProc>>,
    /// Router view: `(t_ms, shards the router reports without a healthy instance)`.
    pub router_unhealthy: Mutex<Vec<(u64, Vec<u32>)>>,
    /// Sampling rounds: `(t_ms, confirmed (workspace, worker) runner pairs, lock holders)`.
    pub rounds: Mutex<Vec<(u64, usize, usize)>>,
}

impl Observations {
    /// Violations within `[from, to]`.
    pub fn violations_between(&self, invariant: &str, from: u64, to: u64) -> Vec<Violation> {
        self.violations
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|x| x.invariant == invariant && x.t_ms >= from && x.t_ms <= to)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sampling rounds within `[from, to]`: `(rounds, runner pairs, lock holders)` summed.
    pub fn rounds_between(&self, from: u64, to: u64) -> (usize, usize, usize) {
        self.rounds
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(t, _, _)| *t >= from && *t <= to)
                    .fold((0, 0, 0), |a, (_, p, l)| (a.0 + 1, a.1 + p, a.2 + l))
            })
            .unwrap_or_default()
    }

    fn add(&self, v: Vec<Violation>) {
        if v.is_empty() {
            return;
        }
        for x in &v {
            tracing::error!(invariant = %x.invariant, t_ms = x.t_ms, "VIOLATION: {}", x.what);
        }
        if let Ok(mut all) = self.violations.lock() {
            all.extend(v);
        }
    }
}

/// Start time (field 22) of `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// The same process (start time) is still a browser on the same profile: filters out a
/// process that exited, a reused pid, and a fork caught before its exec (a fork shares its
/// parent's command line for a moment).
fn still_browser(p: &BrowserProc) -> bool {
    start_time(p.pid) == Some(p.start_time)
        && std::fs::read(format!("/proc/{}/cmdline", p.pid))
            .ok()
            .and_then(|c| check::browser_profile(&c))
            .as_deref()
            == Some(p.profile.as_str())
}

/// Every Chromium browser main process whose `--user-data-dir` is under `data`.
pub fn scan_browsers(data: &Path) -> Vec<BrowserProc> {
    // A path boundary, so `/tmp/a` does not match `/tmp/ab/...`.
    let prefix = format!("{}/", data.display().to_string().trim_end_matches('/'));
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let profile = check::browser_profile(&cmd)?;
            profile.starts_with(&prefix).then_some(())?;
            Some(BrowserProc {
                pid,
                start_time: start_time(pid)?,
                profile,
            })
        })
        .collect()
}

/// The sampler loop: one round every `interval` until `stop` or `max`.
pub async fn sampler(
    fleet: Arc<Fleet>,
    rec: Arc<Recorder>,
    obs: Arc<Observations>,
    interval: Duration,
    max: Duration,
    stop: CancellationToken,
) {
    let deadline = Instant::now() + max;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev: Vec<crate::model::WorkerSnap> = Vec::new();
    // A workspace may run without a lock holder for a moment while its worker fences (the
    // kill is immediate, the bookkeeping follows); two sampling intervals is the grace.
    let grace_ms = 2 * interval.as_millis() as u64;
    let mut free_since: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    let mut prev_dups: BTreeMap<String, Vec<BrowserProc>> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => return,
        }
        // Workers, locks, workers again: see check::runners for why two rounds.
        let first = fleet.worker_snaps().await;
        let locks = fleet.lock_holders("wafleet/locks/workspaces/").await;
        let second = fleet.worker_snaps().await;
        let t = rec.now_ms();
        match &locks {
            Some(locks) => {
                obs.runner_rounds.fetch_add(1, Ordering::Relaxed);
                obs.add(check::runners(t, &first, locks, &second));
                let free = check::runs_without_lock(&first, locks, &second);
                obs.add(check::free_lock_too_long(
                    t,
                    grace_ms,
                    &mut free_since,
                    &free,
                    &second,
                ));
                if let Ok(mut v) = obs.free_lock_runs.lock() {
                    v.extend(free.iter().map(|ws| (t, ws.clone())));
                }
                if let Ok(mut r) = obs.rounds.lock() {
                    r.push((t, check::runner_pairs(&first, &second), locks.len()));
                }
            }
            None => {
                free_since.clear();
                obs.kv_missed.fetch_add(1, Ordering::Relaxed);
                // Without the locks, still compare the workers with each other.
                obs.add(check::runners(t, &first, &BTreeMap::new(), &second));
            }
        }
        obs.add(check::overlap_growth(t, &prev, &second));
        if !second.is_empty() {
            prev = second;
        }

        // The router's view of shard health (`GET /v1/shards`), for the router's detection time.
        if let Some(unhealthy) = router_unhealthy(&fleet).await
            && let Ok(mut v) = obs.router_unhealthy.lock()
        {
            v.push((rec.now_ms(), unhealthy));
        }

        // Chromium per profile: a duplicate counts only if every process is still alive
        // with the same start time after the scan (then they coexist at that instant).
        let procs = scan_browsers(&fleet.data);
        obs.proc_scans.fetch_add(1, Ordering::Relaxed);
        obs.max_browsers
            .fetch_max(procs.len() as u64, Ordering::Relaxed);
        // Two rounds (≥ one interval) are needed: a second Chromium started on a profile in use
        // finds the profile's SingletonLock, hands over to the first and exits — refused, not
        // an overlap.
        let mut dups = check::duplicate_browsers(&procs);
        dups.retain(|_, ps| ps.iter().all(still_browser));
        let lasting = check::persistent_duplicates(&prev_dups, &dups);
        obs.add(check::browser_violations(rec.now_ms(), &lasting));
        prev_dups = dups;
        if let Ok(mut b) = obs.browsers.lock() {
            *b = procs;
        }
    }
}

/// Shards the router reports with no healthy instance; `None` when it did not answer.
async fn router_unhealthy(fleet: &Fleet) -> Option<Vec<u32>> {
    let router = fleet.router().ok()?;
    let url = format!("{router}/v1/shards");
    let v = crate::fleet::get_json(&fleet.http, &url, &fleet.admin, Duration::from_secs(1)).await?;
    Some(
        v.get("shards")?
            .as_array()?
            .iter()
            .filter(|s| s.get("healthy").and_then(|h| h.as_bool()) == Some(false))
            .filter_map(|s| s.get("id")?.as_u64().map(|k| k as u32))
            .collect(),
    )
}

// === webhook receiver ===

/// A local webhook receiver (127.0.0.1 or the veth's host end, port 0) that records every event and can be "down"
/// (answering 503) to simulate an outage.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<BTreeMap<String, Received>>>,
}

impl Receiver {
    /// Starts the receiver on 127.0.0.1 until `stop`.
    #[cfg(test)]
    pub async fn start(rec: Arc<Recorder>, stop: CancellationToken) -> std::io::Result<Receiver> {
        Self::start_on([127, 0, 0, 1].into(), rec, stop).await
    }

    /// Starts the receiver on `ip` (port 0) until `stop` (netns mode: the veth's host end, so
    /// the namespaced worker's webhooks are delayed by a partition, not lost).
    pub async fn start_on(
        ip: std::net::IpAddr,
        rec: Arc<Recorder>,
        stop: CancellationToken,
    ) -> std::io::Result<Receiver> {
        let up = Arc::new(AtomicBool::new(true));
        let got: Arc<Mutex<BTreeMap<String, Received>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (u, g) = (up.clone(), got.clone());
        let route = warp::post()
            .and(warp::body::content_length_limit(1 << 20))
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                if !u.load(Ordering::Relaxed) {
                    return warp::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return warp::http::StatusCode::BAD_REQUEST;
                };
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
                let Some(id) = s("id") else {
                    return warp::http::StatusCode::BAD_REQUEST;
                };
                let p = v.get("payload").cloned().unwrap_or_default();
                let message_id = ["id", "message_id"]
                    .iter()
                    .find_map(|k| p.get(*k).and_then(|x| x.as_str()))
                    .or_else(|| {
                        p.get("message")
                            .and_then(|m| m.get("id"))
                            .and_then(|x| x.as_str())
                    })
                    .map(str::to_owned);
                if let Ok(mut g) = g.lock() {
                    g.entry(id.clone())
                        .and_modify(|r| r.deliveries += 1)
                        .or_insert(Received {
                            t_ms: rec.now_ms(),
                            id,
                            event: s("event").unwrap_or_default(),
                            workspace: s("workspace").unwrap_or_default(),
                            message_id,
                            deliveries: 1,
                        });
                }
                warp::http::StatusCode::OK
            });
        let route =
            route.recover(|_| async { Ok::<_, Infallible>(warp::http::StatusCode::BAD_REQUEST) });
        tokio::spawn(
            warp::serve(route)
                .incoming(listener)
                .graceful(stop.cancelled_owned())
                .run(),
        );
        Ok(Receiver { addr, up, got })
    }

    /// Takes the receiver down (503) or brings it back.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got
            .lock()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The receiver's URL.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }

    #[tokio::test]
    async fn receiver_records_events_counts_redeliveries_and_can_be_down() {
        let rec = Arc::new(Recorder::new());
        let stop = CancellationToken::new();
        let r = Receiver::start(rec, stop.clone()).await.unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let ev = serde_json::json!({"id": "evt_1", "event": "message.sent", "workspace": "a",
            "session": "default", "payload": {"id": "msg_1", "status": "sent"}});
        let post = |body: serde_json::Value| http.post(r.url()).json(&body).send();
        assert_eq!(post(ev.clone()).await.unwrap().status(), 200);
        assert_eq!(post(ev.clone()).await.unwrap().status(), 200);
        r.set_up(false);
        let ev2 = serde_json::json!({"id": "evt_2", "event": "session.status", "workspace": "a",
            "payload": {"status": "WORKING"}});
        assert_eq!(post(ev2.clone()).await.unwrap().status(), 503);
        r.set_up(true);
        assert_eq!(post(ev2).await.unwrap().status(), 200);
        assert_eq!(
            post(serde_json::json!({"no": "id"}))
                .await
                .unwrap()
                .status(),
            400
        );
        let mut got = r.received();
        got.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].deliveries, got[0].message_id.as_deref()),
            (2, Some("msg_1"))
        );
        assert_eq!((got[1].deliveries, got[1].message_id.as_deref()), (1, None));
        assert_eq!(got[1].event, "session.status");
        stop.cancel();
    }

    #[test]
    fn scan_finds_two_processes_on_one_profile_and_not_children() {
        let d = tempfile::tempdir().unwrap();
        let profile = format!("--user-data-dir={}/ws/s/profile", d.path().display());
        // `sh -c 'read x' name ARG` blocks on its (piped) stdin without forking, with ARG in
        // its cmdline, like a browser.
        let spawn = |extra: &[&str]| {
            std::process::Command::new("sh")
                .args(["-c", "read x", "chromium"])
                .args(extra)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut a = spawn(&[&profile]);
        let mut b = spawn(&[&profile]);
        let mut child = spawn(&["--type=renderer", &profile]);
        // Wait (with a deadline) until both have exec'd and show their command line.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut found = scan_browsers(d.path());
        while found.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            found = scan_browsers(d.path());
        }
        let dups = check::duplicate_browsers(&found);
        let confirmed = found.iter().filter(|p| still_browser(p)).count();
        for p in [&mut a, &mut b, &mut child] {
            let _ = p.kill();
            let _ = p.wait();
        }
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(dups.len(), 1);
        assert_eq!(confirmed, 2);
        assert!(found.iter().all(|p| p.start_time > 0));
        // Killed and reaped: the scan must come back empty (poll with a deadline).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut left = scan_browsers(d.path());
        while !left.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = scan_browsers(d.path());
        }
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn scan_finds_nothing_under_a_fresh_dir() {
        let d = tempfile::tempdir().unwrap();
        // Killed and reaped: the scan must come back empty (poll with a deadline).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut left = scan_browsers(d.path());
        while !left.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = scan_browsers(d.path());
        }
        assert!(left.is_empty(), "{left:?}");
    }
}
