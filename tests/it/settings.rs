//! Session settings without a new QR, end to end (issue 12 item 5): consul-dev, the simulator,
//! a worker running a real Chromium session linked by QR, and the router in front; webhooks go
//! to receivers on port 0.
//!
//! `PATCH …/sessions/{s}` moves the webhook to a new URL — the next event arrives there, the
//! browser process is the same, no `session.status` event follows, the profile is not touched —
//! changes metadata (in the next envelope) and pacing (the next submission sees the new queue
//! cap); with several targets each gets the event and a refusing target ends in the dead letters
//! under its own id while the others go on; a bad PATCH is `400` and changes nothing (API and
//! `session.json`); an unknown session is `404`; concurrent PATCHes end with the file and the
//! API agreeing, and a PATCH racing a DELETE does not bring the session's file back.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::hooks::{Inbox, event, receiver};
use support::wa::{LONG, WaRig, call, get, patch, post};
use support::wait_for;

const PHONE: &str = "4915550301";
const PEER: &str = "4915550302";
const WS: &str = "settings-ws";
const S: &str = "main";

/// Main browser processes whose `--user-data-dir` is under `data` (helpers carry `--type=`).
fn browsers(data: &Path) -> BTreeMap<String, Vec<u32>> {
    let prefix = format!("--user-data-dir={}", data.display());
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
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
        if let Some(dir) = args.iter().find(|a| a.starts_with(prefix.as_bytes())) {
            let dir = String::from_utf8_lossy(&dir["--user-data-dir=".len()..]).into_owned();
            out.entry(dir).or_default().push(pid);
        }
    }
    // A child between fork and exec shows its parent's command line: keep the oldest (lowest
    // pid is not reliable; the parent is the one whose parent is not in the list).
    for list in out.values_mut() {
        let all = list.clone();
        list.retain(|pid| {
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            ppid.is_some_and(|p| !all.contains(&p))
        });
    }
    out
}

fn inbox() -> (Arc<Mutex<Inbox>>, String) {
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let addr = receiver(inbox.clone());
    (inbox, format!("http://{addr}/hook"))
}

fn count(inbox: &Arc<Mutex<Inbox>>, pred: impl Fn(&Value) -> bool) -> usize {
    inbox
        .lock()
        .unwrap()
        .events()
        .iter()
        .filter(|v| pred(v))
        .count()
}

/// The rig's worker with webhook retries short enough that a failing target's dead letter
/// shows within the test.
async fn start() -> WaRig {
    WaRig::start_with_env(
        WS,
        &[],
        &[
            ("WAFLEET_WEBHOOK_MAX_ATTEMPTS", "3"),
            ("WAFLEET_WEBHOOK_BACKOFF_BASE_MS", "100"),
            ("WAFLEET_WEBHOOK_BACKOFF_MAX_MS", "300"),
        ],
    )
    .await
}

/// Session `S` of the rig: its settings through the router, its files on the volume.
trait Settings {
    /// `PATCH` of the session.
    async fn patch(&self, body: Value) -> (u16, Value);
    /// The session as the router shows it.
    async fn get(&self) -> Value;
    /// A text message from PEER.
    async fn inbound(&self, text: &str);
    /// The session's `session.json` as stored.
    fn session_json(&self) -> Vec<u8>;
    /// The session's browser profile directory.
    fn profile(&self) -> std::path::PathBuf;
}

impl Settings for WaRig {
    async fn patch(&self, body: Value) -> (u16, Value) {
        patch(&self.session(S, ""), body).await
    }

    async fn get(&self) -> Value {
        get(&self.session(S, "")).await.1
    }

    async fn inbound(&self, text: &str) {
        let (st, v) = post(
            &self.sim("/sim/inbound"),
            json!({"to": PHONE, "from": PEER, "text": text}),
        )
        .await;
        assert!(st < 300, "inbound: {st} {v}");
    }

    fn session_json(&self) -> Vec<u8> {
        std::fs::read(
            self.data()
                .join("workspaces")
                .join(WS)
                .join(S)
                .join("session.json"),
        )
        .expect("session.json")
    }

    fn profile(&self) -> std::path::PathBuf {
        self.data()
            .join("workspaces")
            .join(WS)
            .join(S)
            .join("profile")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patch_changes_settings_without_a_new_qr_or_a_browser_restart() {
    let mut rig = start().await;
    let (a, a_url) = inbox();
    let (b, b_url) = inbox();

    // Created with the single `webhook` of earlier versions.
    let v = rig
        .create(
            S,
            json!({"metadata": {"tenant": 1, "plan": "free"},
                    "webhook": {"url": a_url, "secret": "old-secret-1"}}),
        )
        .await;
    assert_eq!(v["webhooks"][0]["id"], "wh1", "{v}");
    assert_eq!(v["webhook"]["url"], a_url.as_str());
    assert!(
        !v.to_string().contains("old-secret-1"),
        "secret echoed: {v}"
    );

    let qr = rig.qr(S).await;
    let (st, v) = call(
        &rig.sim("/sim/link"),
        reqwest::Method::POST,
        Some(json!({"qr": qr, "phone": PHONE})),
    )
    .await;
    assert!(st < 300, "link: {st} {v}");
    event(&a, "WORKING at the first URL", LONG, |v| {
        v["event"] == "session.status" && v["payload"]["status"] == "WORKING"
    })
    .await;
    rig.inbound("before the move").await;
    event(&a, "a message at the first URL", LONG, |v| {
        v["event"] == "message" && v["payload"]["text"] == "before the move"
    })
    .await;
    let profile = rig.profile().display().to_string();
    let before = browsers(&rig.data());
    assert_eq!(before.get(&profile).map(Vec::len), Some(1), "{before:?}");
    let statuses_before = count(&a, |v| v["event"] == "session.status");

    // Unknown session: 404. Bad patches: 400 and nothing changed, in the API or on disk.
    let (st, v) = call(
        &rig.session("nobody", ""),
        reqwest::Method::PATCH,
        Some(json!({"metadata": {"x": 1}})),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("session_not_found")),
        "{v}"
    );
    let file_before = rig.session_json();
    let info_before = rig.get().await;
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"url": format!("{b_url}/{i}")}))
        .collect();
    for (bad, code) in [
        (
            json!({"webhooks": [{"url": "ftp://x.test/"}], "metadata": {"tenant": 99}}),
            "invalid_webhook_url",
        ),
        (
            json!({"webhooks": six, "metadata": {"tenant": 99}}),
            "invalid_webhooks",
        ),
        (
            json!({"webhooks": [{"url": b_url, "events": ["nope"]}]}),
            "invalid_webhook_events",
        ),
        (
            json!({"pacing": {"interval_ms": 0}, "metadata": {"tenant": 99}}),
            "invalid_pacing",
        ),
        (json!({"session": "other"}), "invalid_body"),
        (json!({"no_such_setting": true}), "invalid_body"),
        (json!(["not", "an", "object"]), "invalid_body"),
    ] {
        let (st, v) = rig.patch(bad.clone()).await;
        assert_eq!((st, v["error"].as_str()), (400, Some(code)), "{bad}: {v}");
    }
    assert_eq!(
        rig.session_json(),
        file_before,
        "a refused PATCH wrote nothing"
    );
    let info_after = rig.get().await;
    assert_eq!(info_after["webhooks"], info_before["webhooks"]);
    assert_eq!(info_after["metadata"], info_before["metadata"]);

    // Move the webhook (same id: the secret is kept) and change the metadata.
    let (st, v) = rig
        .patch(json!({"webhooks": [{"id": "wh1", "url": b_url}],
                      "metadata": {"tenant": 2, "plan": null}}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "WORKING");
    assert_eq!(v["webhooks"][0]["url"], b_url.as_str());
    assert_eq!(v["metadata"], json!({"tenant": 2}));
    assert!(
        !v.to_string().contains("old-secret-1"),
        "secret echoed: {v}"
    );
    let on_disk: Value = serde_json::from_slice(&rig.session_json()).unwrap();
    assert_eq!(on_disk["webhooks"][0]["url"], b_url.as_str());
    assert_eq!(
        on_disk["webhooks"][0]["secret"], "old-secret-1",
        "kept by id"
    );
    assert_eq!(
        on_disk["webhook"]["url"],
        b_url.as_str(),
        "webhook = first, for old workers"
    );

    let a_messages = count(&a, |v| v["event"] == "message");
    rig.inbound("after the move").await;
    let (ev, headers, _) = event(&b, "the next message at the new URL", LONG, |v| {
        v["event"] == "message" && v["payload"]["text"] == "after the move"
    })
    .await;
    assert_eq!(ev["metadata"], json!({"tenant": 2}), "{ev}");
    assert!(
        headers.contains_key("signature"),
        "signed with the kept secret"
    );
    assert_eq!(
        count(&a, |v| v["event"] == "message"),
        a_messages,
        "nothing at the old URL"
    );
    // No restart, no QR: the same browser, no status event since, the profile in place.
    assert_eq!(browsers(&rig.data()).get(&profile), before.get(&profile));
    assert_eq!(
        count(&a, |v| v["event"] == "session.status"),
        statuses_before
    );
    assert_eq!(count(&b, |v| v["event"] == "session.status"), 0);
    assert!(count(&b, |v| v["event"] == "session.qr") == 0);
    assert!(rig.profile().is_dir(), "the profile stays");
    assert_eq!(rig.get().await["restarts"], info_before["restarts"]);

    // Several targets: b keeps getting everything while one refuses (410, a dead letter at
    // once) and one is unreachable (retried, then a dead letter), each under its own id.
    let (c, c_url) = inbox();
    c.lock().unwrap().refuse = Some(String::new());
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (st, v) = rig
        .patch(json!({"webhooks": [
            {"id": "wh1", "url": b_url},
            {"id": "refuser", "url": c_url, "secret": "c-secret"},
            {"id": "down", "url": format!("http://{unreachable}/hook"), "events": ["message"]},
        ]}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["webhooks"].as_array().map(Vec::len), Some(3));
    for text in ["to three targets", "and once more"] {
        rig.inbound(text).await;
        event(&b, "every message at the healthy target", LONG, |v| {
            v["event"] == "message" && v["payload"]["text"] == text
        })
        .await;
    }
    event(&c, "the refusing target was tried", LONG, |v| {
        v["payload"]["text"] == "to three targets"
    })
    .await;
    let dead_url = rig.api(&format!("/v1/workspaces/{WS}/webhooks/dead"));
    let dead = wait_for("dead letters of both failing targets", LONG, || async {
        let (_, v) = call(&dead_url, reqwest::Method::GET, None).await;
        let d = v["dead_letters"].as_array().cloned().unwrap_or_default();
        let of = |t: &str| {
            d.iter()
                .filter(|x| x["target"] == t && x["event"] == "message")
                .count()
        };
        (of("refuser") >= 2 && of("down") >= 2).then_some(d)
    })
    .await;
    assert!(
        dead.iter().all(|d| d["target"] != "wh1"),
        "the healthy target has no dead letter: {dead:?}"
    );

    // Pacing: a queue cap of 1 and a slow rate make the next submissions wait their turn.
    let (st, v) = rig
        .patch(json!({"webhooks": [{"id": "wh1", "url": b_url}],
                      "pacing": {"queue_cap": 1, "interval_ms": 600000, "burst": 1}}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["pacing"]["queue_cap"], 1, "{v}");
    let mut answers = Vec::new();
    for i in 0..3 {
        let (st, v) = call(
            &rig.session(S, "/messages"),
            reqwest::Method::POST,
            Some(json!({"to": PEER, "text": format!("paced {i}")})),
        )
        .await;
        answers.push((st, v["error"].as_str().map(str::to_owned)));
    }
    assert!(
        answers
            .iter()
            .any(|(st, e)| *st == 429 && e.as_deref() == Some("queue_full")),
        "the new queue cap applies: {answers:?}"
    );
    assert_eq!(browsers(&rig.data()).get(&profile), before.get(&profile));

    // Concurrent PATCHes are applied one after the other: the file and the API agree on the
    // last one, whichever it was.
    let patches = (0..6).map(|i| rig.patch(json!({"metadata": {"round": i}})));
    let answers = futures::future::join_all(patches).await;
    assert!(answers.iter().all(|(st, _)| *st == 200), "{answers:?}");
    let on_disk: Value = serde_json::from_slice(&rig.session_json()).unwrap();
    let shown = rig.get().await;
    assert_eq!(on_disk["metadata"], shown["metadata"]);
    assert!(shown["metadata"]["round"].is_u64(), "{shown}");
    // A PATCH racing a DELETE never brings the deleted session's file back.
    let url = rig.session(S, "");
    let (patched, deleted) = tokio::join!(
        rig.patch(json!({"metadata": {"late": true}})),
        call(&url, reqwest::Method::DELETE, None)
    );
    assert_eq!(deleted.0, 200, "{deleted:?}");
    assert!(matches!(patched.0, 200 | 404), "{patched:?}");
    assert!(
        !rig.data().join("workspaces").join(WS).join(S).exists(),
        "the session directory stays deleted"
    );
    let (st, v) = rig.patch(json!({"metadata": {"x": 1}})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("session_not_found")),
        "{v}"
    );

    rig.worker.signal("TERM");
    rig.worker.wait_exit(LONG).await;
}
