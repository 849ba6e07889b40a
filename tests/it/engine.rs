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

mod supervisor;

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
