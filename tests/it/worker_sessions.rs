//! Sessions in the worker, end to end with real processes: `wafleet consul-dev`, `wafleet sim`,
//! two `wafleet worker`s running the engine host (real headless Chromium) and `wafleet router`,
//! all on loopback port 0 through the fleet harness.
//!
//! One story on one session keeps the browser count small (2-core CI): create through the router
//! → QR as JSON, raw and PNG → link through the simulator → WORKING with `me` → worker restart
//! (SIGTERM, same data dir) → WORKING again without a QR → handoff to the other worker by a pin
//! while `/proc` is sampled for two browsers on one profile → `kill -9` of the Chromium →
//! WORKING again → logout (profile gone, device unlinked) → start → pairing code → WORKING →
//! delete. Every wait is a condition with a deadline.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Answer, Fleet, Proc, Worker, call, free_port, put_map, wait_for};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

mod web_versions;

/// Chromium start plus page boot on a loaded shared machine.
const DEADLINE: Duration = Duration::from_secs(120);
const WS: &str = "acme-sessions";
const S: &str = "main";
const PHONE: &str = "4915550001";

fn map(pin: u32, version: u64) -> ShardMap {
    let mut m = ShardMap::uniform(2);
    m.version = version;
    m.pins.insert(WorkspaceId::new(WS).unwrap(), pin);
    m
}

struct Env {
    fleet: Fleet,
    sim: Proc,
}

impl Env {
    /// Consul agent, router harness and simulator; the map gives the test workspace to shard 0.
    async fn start() -> Env {
        let fleet = Fleet::start().await;
        let sim = Proc::spawn(
            "sim",
            &["sim", "--listen", "127.0.0.1:0"].map(String::from),
            &[],
            &fleet.logs(),
        )
        .await;
        let env = Env { fleet, sim };
        put_map(env.fleet.consul_http(), &map(0, 1)).await;
        env
    }

    fn sim_url(&self) -> String {
        format!("http://{}", self.sim.addr("http"))
    }

    /// A worker running the engine host against the simulator, on `port`; waits for ready.
    async fn worker(&self, shard: u32, port: u16) -> Worker {
        self.worker_with(shard, port, &[]).await
    }

    /// [`Env::worker`] with extra flags.
    async fn worker_with(&self, shard: u32, port: u16, extra: &[&str]) -> Worker {
        let listen = format!("127.0.0.1:{port}");
        let mut args = self.fleet.worker_args(shard, &listen);
        for a in args.iter_mut() {
            if a == "placeholder" {
                *a = "engine".into();
            }
        }
        args.extend([
            "--wa-url".to_string(),
            format!("{}/", self.sim_url()),
            "--restore-concurrency".into(),
            "2".into(),
        ]);
        args.extend(extra.iter().map(|a| (*a).to_string()));
        let mut proc = Proc::start(
            &format!("worker-{shard}-{port}"),
            &args,
            &self.fleet.env(),
            &self.fleet.logs(),
        );
        proc.wait_ready(support::READY_TIMEOUT).await;
        Worker {
            shard,
            addr: listen.parse().unwrap(),
            proc,
        }
    }

    async fn sim_get(&self, path: &str) -> Value {
        support::http()
            .get(format!("{}{path}", self.sim_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn sim_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = support::http()
            .post(format!("{}{path}", self.sim_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn session_url(router: &support::Router, rest: &str) -> String {
    format!("http://{}/v1/workspaces/{WS}/sessions{rest}", router.addr)
}

async fn session(router: &support::Router) -> Option<Answer> {
    call(
        reqwest::Method::GET,
        &session_url(router, &format!("/{S}")),
        None,
    )
    .await
}

/// Waits until the session answers 200 with `status`; returns the answer. Panics at once if
/// `forbidden` is ever seen (e.g. a QR during a restore).
async fn wait_status(router: &support::Router, status: &str, forbidden: Option<&str>) -> Answer {
    let what = format!("session {status}");
    wait_for(&what, DEADLINE, || async {
        let a = session(router).await?;
        if a.status != 200 {
            return None;
        }
        let now = a.body["status"].as_str().unwrap_or_default().to_string();
        if let Some(f) = forbidden {
            assert_ne!(now, f, "session went through {f}: {}", a.body);
        }
        (now == status).then_some(a)
    })
    .await
}

async fn post(router: &support::Router, rest: &str, body: Option<Value>) -> Answer {
    call(reqwest::Method::POST, &session_url(router, rest), body)
        .await
        .expect("router answers")
}

/// Sends a text to a contact through the router, with an optional `Idempotency-Key`.
async fn send_text(router: &support::Router, text: &str, key: Option<&str>) -> Answer {
    let mut req = support::http()
        .post(session_url(router, &format!("/{S}/messages")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"to": "4915550999", "text": text}));
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    support::answer(req.send().await.expect("router answers")).await
}

/// `GET …/messages/{id}` through the router.
async fn message(router: &support::Router, id: &Value) -> Answer {
    let id = id.as_str().expect("a message id");
    call(
        reqwest::Method::GET,
        &session_url(router, &format!("/{S}/messages/{id}")),
        None,
    )
    .await
    .expect("router answers")
}

/// How many messages with `text` the simulator recorded from the session's phone.
async fn sim_texts(env: &Env, text: &str) -> usize {
    let v = env.sim_get(&format!("/sim/messages?phone={PHONE}")).await;
    v.as_array()
        .map_or(0, |a| a.iter().filter(|m| m["text"] == text).count())
}

async fn qr_json(router: &support::Router) -> Option<Value> {
    let r = support::http()
        .get(session_url(router, &format!("/{S}/qr")))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "application/json")
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// Main browser processes per `--user-data-dir`: processes on a profile that are not
/// descendants of another process on the same profile (renderers and helpers are, and so is a
/// child between its fork and its exec, which still shows the browser's command line).
fn browsers_by_profile() -> BTreeMap<String, Vec<u32>> {
    // pid -> (profile, ppid)
    let mut on: BTreeMap<u32, (String, u32)> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let Some(dir) = cmdline.split(|b| *b == 0).find_map(|a| {
            String::from_utf8_lossy(a)
                .strip_prefix("--user-data-dir=")
                .map(str::to_string)
        }) else {
            continue;
        };
        // `/proc/<pid>/stat`: "pid (comm) state ppid …"; comm may hold spaces, so split after ')'.
        let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                let rest = st.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            })
        else {
            continue;
        };
        on.insert(pid, (dir, ppid));
    }
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (pid, (dir, ppid)) in &on {
        let parent_on_same = on.get(ppid).is_some_and(|(d, _)| d == dir);
        if !parent_on_same {
            out.entry(dir.clone()).or_default().push(*pid);
        }
    }
    out
}

/// Whether `pid` is a live process (a zombie or a vanished pid is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn profile_dir(data: &Path) -> PathBuf {
    data.join("workspaces").join(WS).join(S).join("profile")
}

/// Samples `/proc` until stopped; records the largest number of browsers seen on `profile`.
fn sample_overlaps(
    profile: PathBuf,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let (s, p) = (stop.clone(), peak.clone());
    let key = profile.display().to_string();
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            let n = browsers_by_profile().get(&key).map_or(0, Vec::len);
            p.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, peak, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_through_restart_handoff_crash_logout_and_delete() {
    let env = Env::start().await;
    let port0 = free_port();
    let mut w0 = env.worker(0, port0).await;
    let w1 = env.worker(1, free_port()).await;
    let router = env.fleet.router().await;
    let profile = profile_dir(&env.fleet.data());
    let (stop_sampling, peak, sampler) = sample_overlaps(profile.clone());

    // Ids and bodies are validated before anything else.
    let bad = post(&router, "", Some(json!({"session": "../etc"}))).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(bad.body["error"].is_string());

    // Create through the router: 201 from shard 0, STARTING or later.
    let created = wait_for("create answered", DEADLINE, || async {
        let a = post(
            &router,
            "",
            // Slow pacing (one message per 30 s after the first), so a message waits in shard
            // 0's queue when the workspace moves (see the handoff below). The wait moves with it
            // (the queue row's `not_before`): shard 1 sends it when the pacing allows.
            Some(json!({"session": S, "metadata": {"crm": 7}, "pacing": {
                "interval_ms": 30_000, "jitter_ms": 0, "burst": 1, "typing": false
            }})),
        )
        .await;
        (a.status != 503).then_some(a)
    })
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.shard, Some(0));
    assert_eq!(created.body["session"], S);
    let dup = post(&router, "", Some(json!({"session": S}))).await;
    assert_eq!(dup.status, 409, "{:?}", dup.body);

    // The QR, three ways.
    wait_status(&router, "SCAN_QR_CODE", None).await;
    let qr = wait_for("QR as JSON", DEADLINE, || qr_json(&router)).await;
    let value = qr["value"].as_str().expect("value").to_string();
    assert_eq!(value.split(',').count(), 5, "five-part QR: {value}");
    assert!(qr["expires_at"].as_u64().unwrap() > 0);
    let raw = support::http()
        .get(session_url(&router, &format!("/{S}/qr?format=raw")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let raw = raw.text().await.unwrap();
    let png = support::http()
        .get(session_url(&router, &format!("/{S}/qr")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    assert_eq!(png.headers()["x-wafleet-shard"], "0");
    let png = png.bytes().await.unwrap();
    let img = image::load_from_memory(&png).expect("a PNG");
    assert!(img.width() >= 21 * 8 && img.width() == img.height());
    // The PNG is the rendering of the current QR (same bytes as rendering it ourselves), and
    // the raw answer is that QR; a rotation between the calls would change both.
    let current = qr_json(&router).await.map(|q| q["value"].clone());
    if current.as_ref().and_then(Value::as_str) == Some(value.as_str()) && raw == value {
        assert_eq!(
            png.as_ref(),
            wafleet::engine::qr_png(&value).unwrap().as_slice()
        );
    }

    // Pairing code input is validated.
    let bad_phone = post(
        &router,
        &format!("/{S}/pairing-code"),
        Some(json!({"phone": "12ab"})),
    )
    .await;
    assert_eq!(bad_phone.status, 400, "{:?}", bad_phone.body);

    // Link: the phone scans the QR.
    let qr_now = wait_for("a QR to scan", DEADLINE, || qr_json(&router)).await;
    let (code, body) = env
        .sim_post("/sim/link", json!({"qr": qr_now["value"], "phone": PHONE}))
        .await;
    assert_eq!(code, 200, "{body}");
    let working = wait_status(&router, "WORKING", None).await;
    assert!(
        working.body["me"]
            .as_str()
            .unwrap_or_default()
            .starts_with(PHONE),
        "{}",
        working.body
    );
    assert_eq!(working.body["metadata"]["crm"], 7);
    assert!(working.body["wa_version"].is_string(), "{}", working.body);
    let no_qr = call(
        reqwest::Method::GET,
        &session_url(&router, &format!("/{S}/qr")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(no_qr.status, 409, "{:?}", no_qr.body);
    assert_eq!(no_qr.body["error"], "not_scanning");
    let devices_before = env.sim_get("/sim/devices").await;
    let linked = |d: &Value| {
        d.as_array()
            .unwrap()
            .iter()
            .filter(|x| x["phone"] == PHONE)
            .count()
    };
    assert_eq!(linked(&devices_before), 1, "{devices_before}");

    // Worker restart (SIGTERM, drain, same data dir): WORKING again, never a QR.
    w0.proc.signal("TERM");
    let exit = w0.proc.wait_exit(Duration::from_secs(60)).await;
    assert!(
        exit.success(),
        "clean drain: {exit:?}\n{}",
        w0.proc.log_tail(30)
    );
    assert!(
        !browsers_by_profile().contains_key(&profile.display().to_string()),
        "the drain closed the browser"
    );
    w0 = env.worker(0, port0).await;
    let restored = wait_status(&router, "WORKING", Some("SCAN_QR_CODE")).await;
    assert_eq!(restored.shard, Some(0));
    assert_eq!(linked(&env.sim_get("/sim/devices").await), 1, "no new link");

    // kill -9 of the worker: its orphaned Chromium is killed — by the dead worker's browser
    // guard as soon as its pipe closes, else by the next owner under the lock — and the
    // session comes back WORKING without a QR.
    let orphans = browsers_by_profile()
        .remove(&profile.display().to_string())
        .unwrap_or_default();
    assert!(!orphans.is_empty(), "a browser runs on the profile");
    w0.proc.kill9().await;
    w0 = env.worker(0, port0).await;
    let restored = wait_status(&router, "WORKING", Some("SCAN_QR_CODE")).await;
    assert_eq!(restored.shard, Some(0));
    // Whichever got there first (the guard, the new owner, or the browser itself), none of the
    // dead worker's browsers lives on next to the new one.
    let survivors: Vec<u32> = orphans.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        survivors.is_empty(),
        "browsers of the killed worker still alive: {survivors:?}"
    );
    assert_eq!(linked(&env.sim_get("/sim/devices").await), 1, "no new link");

    // Messages move with the workspace: one sent by shard 0, one still in its queue (the
    // pacing holds it for 30 s) when the pin moves the workspace.
    let first = send_text(&router, "sent by shard 0", None).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    wait_for("the first message at the simulator", DEADLINE, || async {
        (sim_texts(&env, "sent by shard 0").await == 1).then_some(())
    })
    .await;
    let second = send_text(&router, "queued on shard 0", Some("k-moved")).await;
    assert_eq!(second.status, 202, "{:?}", second.body);
    let (first_id, second_id) = (first.body["id"].clone(), second.body["id"].clone());
    let queued = message(&router, &second_id).await;
    assert_eq!(
        (queued.shard, queued.body["status"].as_str()),
        (Some(0), Some("queued"))
    );

    // Handoff: a pin moves the workspace to shard 1; the session follows its profile.
    put_map(env.fleet.consul_http(), &map(1, 2)).await;
    let moved = wait_for("session WORKING on shard 1", DEADLINE, || async {
        let a = session(&router).await?;
        (a.status == 200 && a.shard == Some(1) && a.body["status"] == "WORKING").then_some(a)
    })
    .await;
    assert_eq!(moved.body["shard"], 1);
    assert_eq!(linked(&env.sim_get("/sim/devices").await), 1, "no new link");
    // Shard 1 sends what shard 0 had queued, and knows what shard 0 sent.
    wait_for("the queued message sent by shard 1", DEADLINE, || async {
        (sim_texts(&env, "queued on shard 0").await == 1).then_some(())
    })
    .await;
    let sent = wait_for("the moved message no longer queued", DEADLINE, || async {
        let a = message(&router, &second_id).await;
        (a.body["status"] != "queued").then_some(a)
    })
    .await;
    assert_eq!(sent.shard, Some(1));
    assert_ne!(sent.body["status"], "failed", "{:?}", sent.body);
    let earlier = message(&router, &first_id).await;
    assert_eq!(
        (earlier.status, earlier.shard),
        (200, Some(1)),
        "{:?}",
        earlier.body
    );
    // The Idempotency-Key moved too: a retry is answered, not sent again.
    let retry = send_text(&router, "queued on shard 0", Some("k-moved")).await;
    assert_eq!(
        (retry.status, &retry.body["id"]),
        (202, &second_id),
        "{:?}",
        retry.body
    );
    assert!(
        !env.fleet
            .data()
            .join("workspaces")
            .join(WS)
            .join("handoff.json")
            .exists()
    );
    assert_eq!(sim_texts(&env, "queued on shard 0").await, 1, "sent once");

    // kill -9 of the session's Chromium: the supervisor relaunches it.
    let before = moved.body["restarts"].as_u64().unwrap_or(0);
    let pids = browsers_by_profile()
        .remove(&profile.display().to_string())
        .expect("a browser on the profile");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let ok = std::process::Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let back = wait_for("WORKING again after kill -9", DEADLINE, || async {
        let a = session(&router).await?;
        (a.status == 200
            && a.body["status"] == "WORKING"
            && a.body["restarts"].as_u64().unwrap_or(0) > before)
            .then_some(a)
    })
    .await;
    assert_eq!(back.shard, Some(1));

    // Metrics of the engine on the owner's /metrics.
    let metrics = support::http()
        .get(format!("http://{}/metrics", w1.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wafleet_sessions{status=\"WORKING\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("wafleet_session_restarts_total"));

    // Logout: unlinked on the phone, profile deleted, session kept stopped.
    let out = post(&router, &format!("/{S}/logout"), None).await;
    assert_eq!(out.status, 200, "{:?}", out.body);
    assert_eq!(out.body["status"], "STOPPED");
    assert!(!profile.exists(), "profile deleted on logout");
    wait_for("device unlinked in the simulator", DEADLINE, || async {
        let d = env.sim_get("/sim/devices").await;
        let still = d
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["phone"] == PHONE && x["state"] == "CONNECTED");
        (!still).then_some(())
    })
    .await;

    // Start again: a new QR; link with a pairing code this time.
    let started = post(&router, &format!("/{S}/start"), None).await;
    assert_eq!(started.status, 200, "{:?}", started.body);
    wait_status(&router, "SCAN_QR_CODE", None).await;
    let pairing = wait_for("a pairing code", DEADLINE, || async {
        let a = post(
            &router,
            &format!("/{S}/pairing-code"),
            Some(json!({"phone": PHONE})),
        )
        .await;
        (a.status == 200).then_some(a)
    })
    .await;
    let code = pairing.body["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 9, "{code}");
    assert_eq!(&code[4..5], "-");
    let (status, body) = env
        .sim_post("/sim/pair", json!({"phone": PHONE, "code": code}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_status(&router, "WORKING", None).await;

    // Delete: browser gone, directory gone, 404 afterwards.
    let del = call(
        reqwest::Method::DELETE,
        &session_url(&router, &format!("/{S}")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(del.status, 200, "{:?}", del.body);
    assert!(
        !env.fleet
            .data()
            .join("workspaces")
            .join(WS)
            .join(S)
            .exists()
    );
    assert_eq!(session(&router).await.unwrap().status, 404);
    assert!(!browsers_by_profile().contains_key(&profile.display().to_string()));

    stop_sampling.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "never two browsers on one profile (and at least one was seen)"
    );
    for w in [&w0, &w1] {
        let state = w.state().await.expect("state");
        assert_eq!(state["overlaps"].as_u64().unwrap_or(0), 0, "{state}");
    }
}
