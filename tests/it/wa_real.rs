//! The adapter against WhatsApp Web's real shape, end to end with real parts: consul-dev, the
//! simulator (which follows WhatsApp Web's own module sources, docs/wa-surface.md), a worker
//! running real Chromium sessions, the router and a webhook receiver.
//!
//! * media of four kinds goes through WhatsApp Web's upload pipeline (the simulator records it
//!   as uploaded, with the file's sha256), a LID chat is sent from the account's LID, a group
//!   message carries the sender as participant, and an inbound message that first arrives as
//!   ciphertext is reported once, with its final type (both ways WhatsApp Web resolves it);
//! * QR rotation keeps producing scannable codes across at least ten refs and several ADV
//!   secrets, a link whose history sync outlasts the QR window is not cut off, and a passkey
//!   step is reported as PASSKEY_REQUIRED;
//! * a WhatsApp Web without a member the adapter needs, at boot or in a lazily loaded bundle,
//!   fails the session at once with the names, and sets the metric.

use crate::support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::hooks::{Inbox, event, receiver};
use support::{ADMIN_TOKEN, Fleet, Proc, Router, free_port, http, put_map, wait_for};

const PHONE: &str = "4915550001";
const PEER: &str = "4915550002";
const PEER2: &str = "4915550003";
const WS: &str = "real-ws";
const LONG: Duration = Duration::from_secs(120);

async fn req(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = http().request(method, url).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    req(reqwest::Method::POST, url, Some(body)).await
}

async fn get(url: &str) -> (u16, Value) {
    req(reqwest::Method::GET, url, None).await
}

/// A fleet of one engine worker behind the router, with a simulator started with `sim_args`.
struct Rig {
    sim: Proc,
    worker: Proc,
    router: Router,
    inbox: Arc<Mutex<Inbox>>,
    hook: SocketAddr,
    /// Its agent and temporary directory; declared last so it is dropped last.
    _fleet: Fleet,
}

impl Rig {
    async fn start(sim_args: &[&str], worker_args: &[&str]) -> Rig {
        let fleet = Fleet::start().await;
        put_map(fleet.consul_http(), &wafleet::shard::ShardMap::uniform(1)).await;
        let mut args: Vec<String> = ["sim", "--listen", "127.0.0.1:0"].map(String::from).into();
        args.extend(sim_args.iter().map(|a| a.to_string()));
        let sim = Proc::spawn("sim", &args, &[], &fleet.logs()).await;
        let inbox: Arc<Mutex<Inbox>> = Arc::default();
        let hook = receiver(inbox.clone());
        let mut wargs = fleet.engine_worker_args(free_port(), sim.addr("http"));
        wargs.extend(worker_args.iter().map(|a| a.to_string()));
        let mut worker = Proc::start("worker", &wargs, &fleet.env(), &fleet.logs());
        worker.wait_ready(support::READY_TIMEOUT).await;
        let router = fleet.router().await;
        Rig {
            _fleet: fleet,
            sim,
            worker,
            router,
            inbox,
            hook,
        }
    }

    fn sim(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim.addr("http"))
    }

    fn session(&self, s: &str) -> String {
        format!(
            "http://{}/v1/workspaces/{WS}/sessions/{s}",
            self.router.addr
        )
    }

    /// Creates session `s` with the receiver as its webhook.
    async fn create(&self, s: &str) {
        let (st, body) = post(
            &format!("http://{}/v1/workspaces/{WS}/sessions", self.router.addr),
            json!({"session": s, "webhook": {"url": format!("http://{}/hook", self.hook)}}),
        )
        .await;
        assert_eq!(st, 201, "create {s}: {body}");
    }

    /// Every `session.qr` value of session `s` delivered so far, in order.
    fn qrs(&self, s: &str) -> Vec<String> {
        self.inbox
            .lock()
            .unwrap()
            .events()
            .into_iter()
            .filter(|v| v["event"] == "session.qr" && v["session"] == s)
            .filter_map(|v| v["payload"]["value"].as_str().map(str::to_owned))
            .collect()
    }

    /// Statuses of session `s` in the order they were delivered.
    fn statuses(&self, s: &str) -> Vec<Value> {
        self.inbox
            .lock()
            .unwrap()
            .events()
            .into_iter()
            .filter(|v| v["event"] == "session.status" && v["session"] == s)
            .map(|v| v["payload"].clone())
            .collect()
    }

    async fn wait_status(&self, s: &str, status: &str) -> Value {
        let what = format!("session {s} {status}");
        wait_for(&what, LONG, || async {
            self.statuses(s).into_iter().find(|p| p["status"] == status)
        })
        .await
    }

    async fn first_qr(&self, s: &str) -> String {
        wait_for(&format!("first QR of {s}"), LONG, || async {
            self.qrs(s).into_iter().next()
        })
        .await
    }

    /// Links session `s` to `phone` with `qr`, as the phone's camera would.
    async fn link(&self, qr: &str, phone: &str) {
        let (st, body) = post(&self.sim("/sim/link"), json!({"qr": qr, "phone": phone})).await;
        assert!(st < 300, "link: {st} {body}");
    }

    async fn working(&self, s: &str, phone: &str) {
        self.create(s).await;
        let qr = self.first_qr(s).await;
        self.link(&qr, phone).await;
        self.wait_status(s, "WORKING").await;
    }

    /// The message the simulator received from `phone` that satisfies `pred` (waits for it;
    /// fails at once with the reason when the worker reports the send failed).
    async fn sent(&self, phone: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, LONG, || async {
            let failed = self
                .inbox
                .lock()
                .unwrap()
                .events()
                .into_iter()
                .find(|v| v["event"] == "message.failed");
            if let Some(f) = failed {
                let (_, all) = get(&self.sim(&format!("/sim/messages?phone={phone}"))).await;
                panic!("{what}: the send failed: {f}; the simulator has {all}");
            }
            let (_, v) = get(&self.sim(&format!("/sim/messages?phone={phone}"))).await;
            v.as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|m| pred(m))
        })
        .await
    }

    async fn send(&self, s: &str, body: Value) -> String {
        let (st, v) = post(&format!("{}/messages", self.session(s)), body.clone()).await;
        assert_eq!(st, 202, "send {body}: {v}");
        v["id"].as_str().expect("message id").to_owned()
    }

    async fn faults(&self, body: Value) {
        let (st, v) = post(&self.sim("/sim/faults"), body).await;
        assert!(st < 300, "faults: {st} {v}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A media entry's plaintext sha256 as the simulator recorded it (top level or under `media`).
fn recorded_sha(m: &Value) -> Option<String> {
    m["sha256"]
        .as_str()
        .or_else(|| m["media"]["sha256"].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_lid_groups_and_ciphertext_go_as_whatsapp_web_does() {
    let rig = Rig::start(&["--ack-device-ms", "100", "--ack-read-ms", "100"], &[]).await;
    rig.working("main", PHONE).await;

    // Four media kinds, each through the upload pipeline: the simulator decrypts the upload and
    // records the plaintext's sha256.
    let b64 = base64::engine::general_purpose::STANDARD;
    let files: [(&str, &str, &str, Vec<u8>); 4] = [
        ("image", "image/png", "dot.png", {
            let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
            v.extend_from_slice(&[7u8; 300]);
            v
        }),
        (
            "document",
            "application/pdf",
            "terms.pdf",
            b"%PDF-1.4 wafleet terms".repeat(40),
        ),
        (
            "audio",
            "audio/mpeg",
            "hello.mp3",
            [b"ID3".as_slice(), &[3u8; 500]].concat(),
        ),
        (
            "video",
            "video/mp4",
            "clip.mp4",
            [b"\0\0\0\x18ftypmp42".as_slice(), &[9u8; 700]].concat(),
        ),
    ];
    for (kind, mimetype, filename, bytes) in &files {
        rig.send(
            "main",
            json!({"to": PEER, "media": {"data": b64.encode(bytes), "mimetype": mimetype,
                   "filename": filename, "caption": format!("a {kind}")}}),
        )
        .await;
        let want = sha256_hex(bytes);
        let m = rig
            .sent(PHONE, &format!("{kind} at the simulator"), |m| {
                recorded_sha(m).as_deref() == Some(want.as_str())
            })
            .await;
        assert_eq!(m["uploaded"], true, "{kind} went through the upload: {m}");
        assert_eq!(m["type"], *kind, "{m}");
    }

    // A LID chat: sent from the account's own LID.
    let (st, lid) = get(&rig.sim(&format!("/sim/lid?phone={PEER2}"))).await;
    assert_eq!(st, 200, "{lid}");
    let lid = match lid["lid"].as_str().expect("lid") {
        l if l.contains('@') => l.to_owned(),
        digits => format!("{digits}@lid"),
    };
    assert!(lid.ends_with("@lid"), "{lid}");
    rig.send("main", json!({"to": lid, "text": "hello lid"}))
        .await;
    let m = rig
        .sent(PHONE, "LID message", |m| m["text"] == "hello lid")
        .await;
    assert_eq!(m["addressing"], "lid", "{m}");

    // A group: the message carries the sender as participant.
    let (st, group) = post(
        &rig.sim("/sim/groups"),
        json!({"subject": "team", "participants": [PHONE, PEER, PEER2]}),
    )
    .await;
    assert!(st < 300, "group: {st} {group}");
    let gid = group["id"].as_str().expect("group id").to_owned();
    rig.send("main", json!({"to": gid, "text": "hello group"}))
        .await;
    let m = rig
        .sent(PHONE, "group message", |m| m["text"] == "hello group")
        .await;
    assert!(
        m["participant"]
            .as_str()
            .is_some_and(|p| p.starts_with(PHONE)),
        "group message without the sender as participant: {m}"
    );

    // Inbound ciphertext, resolved both ways WhatsApp Web does: one report each, final type.
    for (text, path) in [("late change", "change"), ("late readd", "readd")] {
        let (st, v) = post(
            &rig.sim("/sim/inbound"),
            json!({"to": PHONE, "from": PEER, "text": text,
                   "ciphertext": {"after_ms": 300, "path": path}}),
        )
        .await;
        assert!(st < 300, "inbound: {st} {v}");
        event(&rig.inbox, text, LONG, |v| {
            v["event"] == "message" && v["payload"]["text"] == text
        })
        .await;
    }
    // A group message names its author; a LID sender comes with its phone number.
    post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE, "from": PEER2, "group": gid, "author": PEER2, "text": "in the group"}),
    )
    .await;
    let (g, _, _) = event(&rig.inbox, "group inbound", LONG, |v| {
        v["event"] == "message" && v["payload"]["text"] == "in the group"
    })
    .await;
    assert_eq!(g["payload"]["chat"], gid.as_str(), "{g}");
    let author = g["payload"]["author"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        author.starts_with(PEER2)
            || g["payload"]["author_pn"]
                .as_str()
                .is_some_and(|p| p.starts_with(PEER2)),
        "group author: {g}"
    );
    post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE, "from": PEER2, "lid": true, "text": "from a lid"}),
    )
    .await;
    let (l, _, _) = event(&rig.inbox, "LID inbound", LONG, |v| {
        v["event"] == "message" && v["payload"]["text"] == "from a lid"
    })
    .await;
    assert_eq!(l["payload"]["from"], lid.as_str(), "{l}");
    assert_eq!(l["payload"]["from_pn"], format!("{PEER2}@c.us"), "{l}");

    // A later plain message: once it is delivered, any duplicate of the earlier two would be too.
    post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE, "from": PEER, "text": "sentinel"}),
    )
    .await;
    event(&rig.inbox, "sentinel", LONG, |v| {
        v["event"] == "message" && v["payload"]["text"] == "sentinel"
    })
    .await;
    let events = rig.inbox.lock().unwrap().events();
    for text in ["late change", "late readd"] {
        let hits: Vec<_> = events
            .iter()
            .filter(|v| v["event"] == "message" && v["payload"]["text"] == text)
            .collect();
        assert_eq!(hits.len(), 1, "{text} reported once: {hits:?}");
        assert_eq!(
            hits[0]["payload"]["type"], "text",
            "final type: {:?}",
            hits[0]
        );
    }
    drop(rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qr_rotation_sync_past_the_window_and_passkey() {
    // Short refs (a batch is used up within seconds, then the adapter asks for a new one), and
    // a QR window short enough that the second session's sync outlasts it.
    let rig = Rig::start(
        &["--qr-first-ms", "1000", "--qr-next-ms", "400"],
        &["--qr-timeout-secs", "25"],
    )
    .await;

    // At least ten rotations, across more than one ADV secret; the tenth is still scannable.
    rig.create("rot").await;
    let qrs = wait_for("ten QR codes", LONG, || async {
        let q = rig.qrs("rot");
        (q.len() >= 10).then_some(q)
    })
    .await;
    let refs: BTreeSet<_> = qrs.iter().map(|q| q.split(',').next().unwrap()).collect();
    assert_eq!(refs.len(), qrs.len(), "every QR has a new ref: {qrs:?}");
    let secrets: BTreeSet<_> = qrs.iter().map(|q| q.split(',').nth(3).unwrap()).collect();
    assert!(secrets.len() >= 2, "a new ADV secret per batch: {qrs:?}");
    for q in &qrs {
        let parts: Vec<_> = q.split(',').collect();
        assert!((5..=6).contains(&parts.len()), "{q}");
        assert!(
            parts[4].len() == 1 && parts[4].as_bytes()[0].is_ascii_digit(),
            "DEVICE_PLATFORM is a digit: {q}"
        );
    }
    let newest = rig.qrs("rot").last().cloned().unwrap();
    rig.link(&newest, PHONE).await;
    rig.wait_status("rot", "WORKING").await;

    // A sync longer than the whole QR window: the link is not cut off.
    rig.faults(json!({"sync_delay_ms": 30_000})).await;
    rig.create("late").await;
    let qr = rig.first_qr("late").await;
    rig.link(&qr, PEER).await;
    rig.wait_status("late", "WORKING").await;
    let seen: Vec<String> = rig
        .statuses("late")
        .iter()
        .filter_map(|p| p["status"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !seen.iter().any(|s| s == "STOPPED" || s == "FAILED"),
        "the QR window cut the sync off: {seen:?}"
    );
    let after = |from: usize, s: &str| seen[from..].iter().position(|x| x == s).map(|i| i + from);
    let order = after(0, "SCAN_QR_CODE")
        .and_then(|q| after(q, "STARTING"))
        .and_then(|st| after(st, "WORKING"));
    assert!(
        order.is_some(),
        "SCAN_QR_CODE, then STARTING during the sync, then WORKING: {seen:?}"
    );
    rig.faults(json!({"sync_delay_ms": 0})).await;

    // A passkey step: reported, and the link completes once the phone finishes it.
    rig.faults(json!({"passkey": "linking"})).await;
    rig.create("pk").await;
    let qr = rig.first_qr("pk").await;
    rig.link(&qr, PEER2).await;
    rig.wait_status("pk", "PASSKEY_REQUIRED").await;
    let (st, v) = post(
        &rig.sim("/sim/passkey"),
        json!({"phone": PEER2, "action": "complete"}),
    )
    .await;
    assert!(st < 300, "passkey: {st} {v}");
    rig.wait_status("pk", "WORKING").await;
    drop(rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_surface_fails_the_session_with_the_names() {
    let rig = Rig::start(&[], &[]).await;
    let metrics = format!("http://{}/metrics", rig.worker.addr("http"));

    // A member needed at boot.
    rig.faults(json!({"missing_members": ["WAWebSendMsgChatAction.addAndSendMsgToChat"]}))
        .await;
    rig.create("boot").await;
    let failed = rig.wait_status("boot", "FAILED").await;
    let reason = failed.to_string();
    assert!(
        reason.contains("unsupported_wa_web")
            && reason.contains("WAWebSendMsgChatAction.addAndSendMsgToChat"),
        "{failed}"
    );
    assert!(
        rig.qrs("boot").is_empty(),
        "no QR from a page that cannot work"
    );
    wait_for("surface metric", LONG, || async {
        let text = http()
            .get(&metrics)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .any(|l| {
                l.starts_with("wafleet_wa_surface_missing")
                    && l.contains(r#"module="WAWebSendMsgChatAction""#)
                    && l.contains(r#"member="addAndSendMsgToChat""#)
                    && l.ends_with(" 1")
            })
            .then_some(())
    })
    .await;

    // A module of the lazily loaded media bundle: noticed once the session is ready.
    rig.faults(json!({"missing_members": [], "missing_modules": ["WAWebMediaMmsV4Upload"]}))
        .await;
    rig.working("lazy", PHONE).await;
    let failed = rig.wait_status("lazy", "FAILED").await;
    assert!(
        failed.to_string().contains("WAWebMediaMmsV4Upload"),
        "{failed}"
    );
    drop(rig);
}
