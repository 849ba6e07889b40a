//! The engine end to end: real headless Chromium (Debian's `chromium`, or `WAFLEET_CHROMIUM`)
//! driving the in-process WhatsApp Web simulator through the adapter, then the supervisor on
//! top. Browser launches take seconds on a shared 2-core machine, so there are few tests, each
//! walking a whole story on as few launches as possible.
//!
//! Every wait is a condition with a deadline; nothing sleeps as synchronisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use wafleet::engine::state::{Status, Timing};
use wafleet::engine::supervisor::SessionEvent;
use wafleet::engine::{
    BrowserSession, Engine, EngineConfig, EngineEvent, EventReceiver, Media, SessionSpec,
    SupervisorConfig, WorkspaceLockGuard, spawn_session,
};
use wafleet::ids::{SessionId, WorkspaceId};
use wafleet::shutdown::CancellationToken;
use wafleet::sim::{self, SimConfig};

/// Generous: Chromium start plus page boot on a loaded shared machine.
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);

fn engine_config(sim: &sim::RunningSim) -> EngineConfig {
    let mut config = EngineConfig::from_lookup(|k| std::env::var(k).ok())
        .with_wa_url(format!("http://{}/", sim.addr()));
    // Probed often enough to see a hung page within a test; never fires on a healthy one.
    config.heartbeat_interval = Some(Duration::from_secs(10));
    config
}

async fn start_sim(config: SimConfig) -> (sim::RunningSim, CancellationToken) {
    let cancel = CancellationToken::new();
    let running = sim::spawn(config, cancel.clone()).await.unwrap();
    (running, cancel)
}

fn fast_acks() -> SimConfig {
    SimConfig {
        ack_device_ms: 200,
        ack_read_ms: 200,
        ..SimConfig::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post(sim: &sim::RunningSim, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("http://{}{path}", sim.addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(sim: &sim::RunningSim, path: &str) -> Value {
    client()
        .get(format!("http://{}{path}", sim.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The next event matching `pick`, skipping others (collected into `skipped`).
async fn next_event<T>(
    rx: &mut EventReceiver,
    what: &str,
    skipped: &mut Vec<EngineEvent>,
    mut pick: impl FnMut(&EngineEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {skipped:?}"))
            .unwrap_or_else(|| panic!("event stream ended waiting for {what}; saw {skipped:?}"));
        if let Some(v) = pick(&event) {
            return v;
        }
        skipped.push(event);
    }
}

/// Polls `f` until it yields `Some`, or panics after the deadline naming `what`.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Pids of live (non-zombie) processes whose command line names this profile.
fn processes_on(profile: &Path) -> Vec<u32> {
    let wanted = format!("--user-data-dir={}", profile.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && cmdline.split(|b| *b == 0).any(|a| a == wanted.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

/// The browser's whole process tree (browser, zygotes, renderer, utilities).
fn tree(pid: u32) -> Vec<u32> {
    let tree = wafleet::engine::memory::process_tree(pid).unwrap();
    assert!(tree.len() > 1, "chromium has helper processes: {tree:?}");
    tree
}

/// The browser is gone: every process of its tree has exited and been reaped (no zombie: a
/// zombie keeps its /proc entry) and nothing runs on the profile.
async fn assert_gone(tree: &[u32], profile: &Path) {
    wait_for("chromium processes to exit", || async {
        (processes_on(profile).is_empty()
            && tree
                .iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .then_some(())
    })
    .await;
}

async fn wait_qr(rx: &mut EventReceiver, skipped: &mut Vec<EngineEvent>) -> String {
    next_event(rx, "a QR", skipped, |e| match e {
        EngineEvent::Qr { value } => Some(value.clone()),
        _ => None,
    })
    .await
}

async fn wait_ready(
    rx: &mut EventReceiver,
    skipped: &mut Vec<EngineEvent>,
) -> (Option<String>, Option<String>) {
    next_event(rx, "ready", skipped, |e| match e {
        EngineEvent::Ready { me, wa_version } => Some((me.clone(), wa_version.clone())),
        _ => None,
    })
    .await
}

async fn launch(engine: &Engine, profile: &Path) -> (BrowserSession, EventReceiver) {
    let browser = engine.launch(profile).await.unwrap();
    let rx = browser.take_events().unwrap();
    assert!(browser.take_events().is_none(), "events are taken once");
    (browser, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_link_send_receive_acks_relaunch_without_qr_and_logout() {
    // QRs rotate every second and go idle after two rotations, so rotation and the adapter's
    // refreshQR on UNPAIRED_IDLE are seen within a few seconds.
    let (sim, cancel) = start_sim(SimConfig {
        qr_first_ms: 1_000,
        qr_next_ms: 1_000,
        qr_max_rotations: 2,
        ..fast_acks()
    })
    .await;
    let engine = Engine::new(engine_config(&sim));
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let phone = "4915550001";

    // 1. A fresh profile shows a five-part QR; linking it logs the session in.
    let (browser, mut rx) = launch(&engine, &profile).await;
    let pid = browser.pid().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let mut seen = Vec::new();
    let first = wait_qr(&mut rx, &mut seen).await;
    assert_eq!(first.split(',').count(), 5, "{first}");
    assert!(first.starts_with("2@"));
    // Rotation: new refs with the same key material; then idle, refreshed, and QRs again.
    let mut qrs = vec![first.clone()];
    let mut idle_seen = false;
    while !(idle_seen && qrs.len() >= 4) {
        let event = next_event(&mut rx, "QR rotation and refresh", &mut seen, |e| match e {
            EngineEvent::Qr { .. } => Some(e.clone()),
            EngineEvent::State { state } if state == "UNPAIRED_IDLE" => Some(e.clone()),
            _ => None,
        })
        .await;
        match event {
            EngineEvent::Qr { value } => {
                // Within a batch only the ref rotates; a refresh (after idle) is a new batch,
                // which brings a new ADV secret (part 4) as WhatsApp does.
                let (now, then): (Vec<&str>, Vec<&str>) =
                    (value.split(',').collect(), first.split(',').collect());
                if idle_seen {
                    assert_eq!((now[1], now[2], now[4]), (then[1], then[2], then[4]));
                    assert_ne!(now[3], then[3], "a new batch has a new ADV secret");
                } else {
                    assert_eq!(now[1..], then[1..], "only the ref rotates");
                }
                assert!(!qrs.contains(&value), "a rotated QR is new");
                qrs.push(value);
            }
            _ => idle_seen = true,
        }
    }
    // Link the current QR (it may rotate away between reading and scanning: take the next).
    let mut qr = qrs.last().unwrap().clone();
    loop {
        let (s, body) = post(&sim, "/sim/link", json!({"qr": qr, "phone": phone})).await;
        if s == 200 {
            break;
        }
        assert_eq!(
            (s, body["error"].as_str()),
            (409, Some("qr_expired")),
            "{body}"
        );
        qr = wait_qr(&mut rx, &mut seen).await;
    }
    let (me, version) = wait_ready(&mut rx, &mut seen).await;
    assert_eq!(me.as_deref(), Some("4915550001@c.us"));
    assert!(version.unwrap().ends_with("-sim"));
    let procs = tree(pid);
    assert!(
        seen.iter()
            .any(|e| matches!(e, EngineEvent::State { state } if state == "CONNECTED")),
        "{seen:?}"
    );

    // 2. Send a text: the phone's server has it, and acks advance to read.
    let sent = browser
        .send_text("4915550002", "hello from wafleet")
        .await
        .unwrap();
    assert!(sent.id.starts_with("true_4915550002@c.us_"), "{}", sent.id);
    let mut acks = Vec::new();
    next_event(&mut rx, "ack 3", &mut seen, |e| match e {
        EngineEvent::Ack { id, ack } if *id == sent.id => {
            acks.push(*ack);
            (*ack == 3).then_some(())
        }
        _ => None,
    })
    .await;
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "acks {acks:?}");
    assert!(acks.contains(&1) && acks.contains(&2), "acks {acks:?}");
    let messages = get(&sim, &format!("/sim/messages?phone={phone}")).await;
    let record = messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == sent.id.as_str())
        .unwrap_or_else(|| panic!("{messages}"));
    assert_eq!(record["text"], "hello from wafleet");
    assert_eq!(record["ack"], 3);

    // Media: bytes + mimetype + filename reach the phone intact.
    let png = wafleet::engine::qr_png("media test").unwrap();
    let sent_media = browser
        .send_media(
            "4915550002@c.us",
            &Media {
                data: png.clone().into(),
                mimetype: "image/png".into(),
                filename: Some("qr.png".into()),
                caption: Some("a picture".into()),
            },
        )
        .await
        .unwrap();
    let media = wait_for("the media message at the sim", || async {
        let messages = get(&sim, &format!("/sim/messages?phone={phone}")).await;
        messages
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == sent_media.id.as_str())
            .map(|m| m["media"].clone())
    })
    .await;
    assert_eq!(media["mimetype"], "image/png");
    assert_eq!(media["filename"], "qr.png");
    assert_eq!(media["size"], png.len());
    assert_eq!(media["sha256"], hex::encode(Sha256::digest(&png)));

    // Bad input is refused before it reaches the page.
    assert!(browser.send_text("nope", "x").await.is_err());

    // 3. An inbound message arrives as a Message event.
    let (s, body) = post(
        &sim,
        "/sim/inbound",
        json!({"to": phone, "from": "4915550003", "text": "hi there"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let inbound_id = body["id"].as_str().unwrap().to_string();
    let msg = next_event(&mut rx, "the inbound message", &mut seen, |e| match e {
        EngineEvent::Message(m) if m.id == inbound_id => Some(m.clone()),
        _ => None,
    })
    .await;
    assert!(!msg.from_me);
    assert_eq!(msg.body.as_deref(), Some("hi there"));
    assert_eq!(msg.from.as_deref(), Some("4915550003@c.us"));

    // 4. Clean close: the process is reaped, nothing runs on the profile, the profile stays.
    browser.close().await;
    assert!(browser.is_closed());
    assert_eq!(browser.pid(), None);
    assert!(matches!(
        browser.send_text("4915550002", "x").await,
        Err(wafleet::engine::EngineError::Closed)
    ));
    assert_gone(&procs, &profile).await;
    assert!(profile.join("Default").exists());

    // 5. Relaunch on the same profile: logged in again without a QR (LocalAuth). This browser
    // gets WhatsApp Web's index.html from a pinned copy (request interception): the copy names
    // the bundles of the version that was live when it was saved, and the simulator has since
    // deployed a newer one, so the version the page boots proves the copy was served.
    let live = client()
        .get(format!("http://{}/", sim.addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let old_version = get(&sim, "/sim/web-version").await["live"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, v) = post(
        &sim,
        "/sim/web-version",
        json!({"version": "2.3000.1099999999-sim"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let pinned_path = dir.path().join("index.html");
    std::fs::write(&pinned_path, live).unwrap();
    let mut config = engine_config(&sim);
    config.pinned_index_html = Some(pinned_path);
    // A document served by interception has no network address, so Chromium's local network
    // access checks would treat it as public and block its websocket to the loopback simulator
    // (the real WhatsApp Web is public on both sides).
    config
        .extra_args
        .push("--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessChecks".into());
    let pinned_engine = Engine::new(config);
    let (browser, mut rx) = launch(&pinned_engine, &profile).await;
    let pid = browser.pid().unwrap();
    let mut seen = Vec::new();
    let (me, version) = wait_ready(&mut rx, &mut seen).await;
    assert_eq!(me.as_deref(), Some("4915550001@c.us"));
    assert_eq!(version.as_deref(), Some(old_version.as_str()), "{seen:?}");
    let procs = tree(pid);
    assert!(
        !seen.iter().any(|e| matches!(e, EngineEvent::Qr { .. })),
        "a restored profile must not show a QR: {seen:?}"
    );

    // 6. Logout from WhatsApp Web: the phone forgets the device.
    browser.logout().await.unwrap();
    next_event(&mut rx, "logged out", &mut seen, |e| {
        matches!(e, EngineEvent::LoggedOut { .. }).then_some(())
    })
    .await;
    let devices = get(&sim, "/sim/devices").await;
    assert!(
        !devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["phone"] == phone && d["state"] == "CONNECTED"),
        "{devices}"
    );
    browser.close().await;
    assert_gone(&procs, &profile).await;
    cancel.cancel();
}

/// A workspace lock that the test holds for the whole session.
struct HeldLock(WorkspaceId);
impl WorkspaceLockGuard for HeldLock {
    fn workspace(&self) -> &WorkspaceId {
        &self.0
    }
    fn is_held(&self) -> bool {
        true
    }
}

async fn wait_status(
    handle: &wafleet::engine::SessionHandle,
    what: &str,
    pred: impl Fn(&wafleet::engine::SessionStatus) -> bool,
) -> wafleet::engine::SessionStatus {
    let mut watch = handle.watch_status();
    let result = tokio::time::timeout(DEADLINE, watch.wait_for(|s| pred(s))).await;
    match result {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("timed out waiting for {what}; status {:?}", handle.status()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_pairs_by_code_recovers_from_kill_and_hang_and_logs_out() {
    // The process-wide recorder, installed before any metric is recorded.
    let prometheus = wafleet::telemetry::prometheus();
    let (sim, cancel) = start_sim(fast_acks()).await;
    let engine = Engine::new(engine_config(&sim));
    let dir = tempfile::tempdir().unwrap();
    let ws = WorkspaceId::new("ws1").unwrap();
    let profile: PathBuf =
        wafleet::engine::config::profile_dir(dir.path(), &ws, &SessionId::new("s1").unwrap());
    let spec = SessionSpec {
        workspace: ws.clone(),
        session: SessionId::new("s1").unwrap(),
        profile_dir: profile.clone(),
        lock: Some(Arc::new(HeldLock(ws.clone()))),
    };
    let config = SupervisorConfig {
        timing: Timing {
            backoff_base: Duration::from_millis(200),
            ..Timing::default()
        },
        memory_interval: Some(Duration::from_secs(1)),
        limiter: Some(wafleet::engine::LaunchLimiter::new(1)),
        versions: None,
    };
    let session_cancel = CancellationToken::new();
    let handle = spawn_session(engine.clone(), spec, config, session_cancel.clone());
    assert_eq!(handle.status().status, Status::Stopped);
    let mut events = handle.subscribe();

    // Start: a QR shows; pairing by code logs the session in instead.
    let status = handle.start().await.unwrap();
    assert_eq!(status.status, Status::Starting);
    let status = wait_status(&handle, "SCAN_QR_CODE", |s| s.status == Status::ScanQrCode).await;
    let qr = status.qr.unwrap();
    assert_eq!(qr.value.split(',').count(), 5);
    assert!(qr.expires_unix_ms > qr.received_unix_ms);
    assert!(matches!(
        handle.send_text("4915550002", "x").await,
        Err(wafleet::engine::SessionCommandError::WrongStatus(
            Status::ScanQrCode
        ))
    ));
    let phone = "4915550010";
    let code = handle.request_pairing_code(phone).await.unwrap();
    assert_eq!(code.len(), 8, "{code}");
    let pretty = format!("{}-{}", &code[..4], &code[4..]);
    let (s, body) = post(&sim, "/sim/pair", json!({"phone": phone, "code": pretty})).await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "WORKING", |s| s.status == Status::Working).await;
    assert_eq!(status.me.as_deref(), Some("4915550010@c.us"));
    assert!(status.wa_version.as_deref().unwrap().ends_with("-sim"));
    let pid = status.pid.unwrap();
    let procs = tree(pid);
    // The PairingCode event reached subscribers.
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(SessionEvent::Engine(EngineEvent::PairingCode { code: c }))) => {
                assert_eq!(c, code);
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("no pairing code event: {other:?}"),
        }
    }

    // Memory of the process tree is sampled.
    let status = wait_status(&handle, "a PSS sample", |s| s.memory_bytes.is_some()).await;
    assert!(status.memory_bytes.unwrap() > 10 << 20, "{status:?}");

    // Sending through the handle works while WORKING.
    let sent = handle
        .send_text("4915550002", "via supervisor")
        .await
        .unwrap();
    assert!(sent.id.starts_with("true_"));

    // kill -9 the browser: detected as a crash, relaunched, back to WORKING without a QR
    // (the profile and a stale SingletonLock survive the kill).
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_status(&handle, "the crash to be seen", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("crashed"))
    })
    .await;
    assert!(status.restarts <= 1, "{status:?}");
    let status = wait_status(&handle, "WORKING again", |s| {
        s.status == Status::Working && s.restarts >= 1 && s.pid.is_some_and(|p| p != pid)
    })
    .await;
    assert_eq!(status.me.as_deref(), Some("4915550010@c.us"));
    // The killed browser is reaped and its helpers are gone too.
    assert_gone(&procs, Path::new("/nonexistent")).await;
    let procs = tree(status.pid.unwrap());

    // A renderer stuck in an endless loop answers nothing: the heartbeat reports it, the
    // supervisor relaunches, and the session is WORKING again.
    let hung_pid = status.pid.unwrap();
    let (s, body) = post(&sim, "/sim/faults", json!({"crash": phone, "mode": "hang"})).await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "WORKING after the hang", |s| {
        s.status == Status::Working && s.pid.is_some_and(|p| p != hung_pid)
    })
    .await;
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unresponsive")),
        "{status:?}"
    );
    assert!(status.restarts >= 2, "{status:?}");
    assert_gone(&procs, Path::new("/nonexistent")).await;
    let procs = tree(status.pid.unwrap());

    // Logout: unlinked, closed, profile deleted, STOPPED.
    let status = handle.logout().await.unwrap();
    assert_eq!(status.status, Status::Stopped);
    assert_gone(&procs, &profile).await;
    assert!(!profile.exists(), "profile deleted on logout");
    let devices = get(&sim, "/sim/devices").await;
    assert!(
        !devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["phone"] == phone && d["state"] == "CONNECTED"),
        "{devices}"
    );

    handle.shutdown().await;
    assert!(matches!(
        handle.start().await,
        Err(wafleet::engine::SessionCommandError::Gone)
    ));
    // Every task of every browser this engine launched has ended (what a drain waits for).
    engine.tracker().close();
    tokio::time::timeout(DEADLINE, engine.tracker().wait())
        .await
        .expect("engine tasks end once their browsers are gone");

    // The metrics the dashboards use were recorded.
    let text = prometheus.render();
    for needle in [
        "wafleet_sessions{status=\"STOPPED\"}",
        "wafleet_session_memory_bytes{workspace=\"ws1\",session=\"s1\"}",
        "wafleet_session_restarts_total",
        "wafleet_qr_latency_seconds_bucket",
        "wafleet_send_latency_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_handles_a_stuck_start_and_a_long_disconnect() {
    let (sim, cancel) = start_sim(SimConfig::default()).await;
    // Every page load stalls: WhatsApp Web never boots.
    let (s, body) = post(&sim, "/sim/faults", json!({"slow_load_ms": 600_000})).await;
    assert_eq!(s, 200, "{body}");
    let engine = Engine::new(engine_config(&sim));
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let spec = SessionSpec {
        workspace: WorkspaceId::new("ws2").unwrap(),
        session: SessionId::new("stuck").unwrap(),
        profile_dir: profile.clone(),
        lock: None,
    };
    let config = SupervisorConfig {
        timing: Timing {
            start_timeout: Duration::from_secs(5),
            disconnect_timeout: Duration::from_secs(3),
            backoff_base: Duration::from_millis(100),
            max_failures: 2,
            ..Timing::default()
        },
        memory_interval: None,
        limiter: None,
        versions: None,
    };
    let handle = spawn_session(engine, spec, config, CancellationToken::new());
    handle.start().await.unwrap();
    let status = wait_status(&handle, "FAILED", |s| s.status == Status::Failed).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("stuck in STARTING"),
        "{status:?}"
    );
    assert_eq!(status.consecutive_failures, 2);
    assert_eq!(status.restarts, 1, "one relaunch before giving up");
    assert_eq!(status.pid, None);
    wait_for("no browser on the profile", || async {
        processes_on(&profile).is_empty().then_some(())
    })
    .await;

    // Once the fault is gone, a start command recovers it.
    let (s, _) = post(&sim, "/sim/faults", json!({"clear": true})).await;
    assert_eq!(s, 200);
    handle.start().await.unwrap();
    let status = wait_status(&handle, "SCAN_QR_CODE", |s| s.status == Status::ScanQrCode).await;
    let phone = "4915550020";
    let (s, body) = post(
        &sim,
        "/sim/link",
        json!({"qr": status.qr.unwrap().value, "phone": phone}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "WORKING", |s| s.status == Status::Working).await;
    let restarts = status.restarts;

    // The socket drops and reconnects are refused beyond the disconnect deadline: the
    // watchdog relaunches, and once the phone's server answers again the session is back.
    let (s, body) = post(
        &sim,
        "/sim/faults",
        json!({"drop_socket": phone, "refuse_ms": 4_000}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "the disconnect to be acted on", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("disconnected"))
    })
    .await;
    assert!(status.restarts <= restarts + 1, "{status:?}");
    let status = wait_status(&handle, "WORKING after the relaunch", |s| {
        s.status == Status::Working && s.restarts > restarts
    })
    .await;
    assert_eq!(status.me.as_deref(), Some("4915550020@c.us"));
    handle.shutdown().await;
    wait_for("no browser on the profile", || async {
        processes_on(&profile).is_empty().then_some(())
    })
    .await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_restarts_a_working_session_cleanly_without_a_qr() {
    let (sim, cancel) = start_sim(fast_acks()).await;
    let mut config = engine_config(&sim);
    // Every browser tree is far above 1 MiB: the first sample while WORKING is over budget.
    config.memory_budget_mb = Some(1);
    let engine = Engine::new(config);
    let dir = tempfile::tempdir().unwrap();
    let ws = WorkspaceId::new("ws1").unwrap();
    let spec = SessionSpec {
        workspace: ws.clone(),
        session: SessionId::new("budget").unwrap(),
        profile_dir: dir.path().join("profile"),
        lock: Some(Arc::new(HeldLock(ws))),
    };
    let config = SupervisorConfig {
        memory_interval: Some(Duration::from_secs(1)),
        limiter: None,
        ..SupervisorConfig::default()
    };
    let session_cancel = CancellationToken::new();
    let handle = spawn_session(engine.clone(), spec, config, session_cancel.clone());
    let mut events = handle.subscribe();
    handle.start().await.unwrap();
    let status = wait_status(&handle, "SCAN_QR_CODE", |s| s.status == Status::ScanQrCode).await;
    let phone = "4915550077";
    let (s, body) = post(
        &sim,
        "/sim/link",
        json!({"qr": status.qr.unwrap().value, "phone": phone}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let first = wait_status(&handle, "WORKING", |s| s.status == Status::Working).await;
    let first_pid = first.pid.unwrap();

    // Over the budget: a clean restart (new browser, same profile), WORKING again, no QR.
    let status = wait_status(&handle, "WORKING after the budget restart", |s| {
        s.status == Status::Working && s.restarts >= 1 && s.pid.is_some_and(|p| p != first_pid)
    })
    .await;
    assert_eq!(status.me.as_deref(), Some("4915550077@c.us"));
    // Restarts are spaced: the new browser is sampled (and over budget too) without another.
    let new_pid = status.pid;
    let status = wait_status(&handle, "a PSS sample of the new browser", |s| {
        s.memory_bytes.is_some() && s.pid == new_pid
    })
    .await;
    assert_eq!(status.restarts, 1, "{status:?}");
    let mut logged_in = false;
    loop {
        match events.try_recv() {
            Ok(SessionEvent::Status(s)) => {
                logged_in |= s.status == Status::Working;
                assert!(
                    !(logged_in && s.status == Status::ScanQrCode),
                    "a QR after the login: {s:?}"
                );
            }
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(logged_in);
    handle.shutdown().await;
    cancel.cancel();
}
