//! Messaging end to end with real parts: consul-dev, the WhatsApp simulator, a worker running
//! real Chromium sessions, the router, and a signed-webhook receiver (warp, port 0).
//!
//! One session is linked through the simulator (the QR comes by webhook), then: an idempotent
//! send through the router (202, same id on repeat, 422 with another body) reaches the
//! simulator and moves queued → sent → server/device/read; an inbound message arrives as a
//! `message` webhook with both signatures valid and on the SSE stream; a receiver answering 410
//! makes a dead letter that the API lists and replays; `kill -9` right after a 202 loses
//! nothing (after the restart the message is delivered or failed with a reason).

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::hooks::{self, Inbox, receiver};
use support::{ADMIN_TOKEN, Fleet, Proc, free_port, http, put_map, wait_for};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PHONE: &str = "4915550001";
const WS: &str = "msg-ws";
const LONG: Duration = Duration::from_secs(90);

/// Both signatures of a delivery, checked independently of the product code.
fn verify(headers: &http::HeaderMap, body: &[u8]) {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    // The session's extra header travels with every delivery.
    assert_eq!(h("x-receiver-token"), "hook-credential", "extra header");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    assert_eq!(
        h("signature"),
        hex::encode(mac.finalize().into_bytes()),
        "Signature"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert!(
        h("webhook-signature").split(' ').any(|s| s == expected),
        "webhook-signature {} != {expected}",
        h("webhook-signature")
    );
    let env: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(env["id"], h("webhook-id"));
}

/// The first delivered event matching `pred` (waits for it).
async fn event(
    inbox: &Arc<Mutex<Inbox>>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Value, http::HeaderMap, Bytes) {
    hooks::event(inbox, what, LONG, pred).await
}

async fn req(
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value, http::HeaderMap) {
    let mut r = http().request(method, url).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

fn worker_args(fleet: &Fleet, port: u16, sim: std::net::SocketAddr) -> Vec<String> {
    fleet.engine_worker_args(port, sim)
}

fn worker_env(fleet: &Fleet) -> Vec<(String, String)> {
    let mut env = fleet.env();
    env.push(("WAFLEET_WEBHOOK_BACKOFF_BASE_MS".into(), "200".into()));
    env
}

/// Every descendant of `pid` (through `/proc/<pid>/task/*/children`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_receive_webhooks_sse_dead_letters_and_crash() {
    let fleet = Fleet::start().await;
    put_map(fleet.consul_http(), &wafleet::shard::ShardMap::uniform(1)).await;
    let sim = Proc::spawn(
        "sim",
        &["sim".into(), "--listen".into(), "127.0.0.1:0".into()],
        &[],
        &fleet.logs(),
    )
    .await;
    let sim_addr = sim.addr("http");
    let inbox: Arc<Mutex<Inbox>> = Arc::default();
    let hook = receiver(inbox.clone());
    let port = free_port();
    let mut worker = Proc::start(
        "worker",
        &worker_args(&fleet, port, sim_addr),
        &worker_env(&fleet),
        &fleet.logs(),
    );
    worker.wait_ready(support::READY_TIMEOUT).await;
    let router = fleet.router().await;
    let base = format!("http://{}/v1/workspaces/{WS}/sessions", router.addr);

    // Create the session with a signed webhook (idempotently); the QR arrives by webhook.
    let create = json!({"session": "main", "webhook": {"url": format!("http://{hook}/hook"), "secret": SECRET, "headers": {"X-Receiver-Token": "hook-credential"}}, "metadata": {"tenant": 7}});
    let (st, body, _) = req(
        reqwest::Method::POST,
        &base,
        Some(create.clone()),
        Some("create-1"),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(
        body["webhook"]["headers"]["X-Receiver-Token"], "<redacted>",
        "header values are not echoed: {body}"
    );
    assert!(
        body["webhook"].get("secret").is_none(),
        "secret echoed: {body}"
    );
    let (st, again, headers) =
        req(reqwest::Method::POST, &base, Some(create), Some("create-1")).await;
    assert_eq!((st, &again["session"]), (201, &body["session"]), "{again}");
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let (st, other, _) = req(
        reqwest::Method::POST,
        &base,
        Some(json!({"session": "other"})),
        Some("create-1"),
    )
    .await;
    assert_eq!(
        (st, other["error"].as_str()),
        (422, Some("idempotency_conflict"))
    );
    // A webhook URL outside the operator's allow-list is refused at configuration time.
    let (st, refused, _) = req(
        reqwest::Method::POST,
        &base,
        Some(json!({"session": "ftp", "webhook": {"url": "ftp://example.com/x"}})),
        None,
    )
    .await;
    assert_eq!(
        (st, refused["error"].as_str()),
        (400, Some("invalid_webhook_url"))
    );

    // The event stream, opened early (SSE through the router).
    let sse = http()
        .get(format!("{base}/main/events"))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    let sse_text = Arc::new(Mutex::new(String::new()));
    {
        let sse_text = sse_text.clone();
        tokio::spawn(async move {
            let mut s = sse.bytes_stream();
            while let Some(Ok(chunk)) = s.next().await {
                sse_text
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        });
    }

    let (qr, h, b) = event(&inbox, "session.qr webhook", |v| v["event"] == "session.qr").await;
    verify(&h, &b);
    assert_eq!(qr["metadata"], json!({"tenant": 7}));
    let (st, body, _) = req(
        reqwest::Method::POST,
        &format!("http://{sim_addr}/sim/link"),
        Some(json!({"qr": qr["payload"]["value"], "phone": PHONE})),
        None,
    )
    .await;
    assert!(st < 300, "link: {st} {body}");
    event(&inbox, "session.status WORKING", |v| {
        v["event"] == "session.status" && v["payload"]["status"] == "WORKING"
    })
    .await;

    // Idempotent send through the router.
    let send = json!({"to": "4915550002", "text": "hello from wafleet"});
    let (st, first, headers) = req(
        reqwest::Method::POST,
        &format!("{base}/main/messages"),
        Some(send.clone()),
        Some("k-1"),
    )
    .await;
    assert_eq!(st, 202, "{first}");
    assert_eq!(first["status"], "queued");
    assert!(headers.contains_key("x-wafleet-shard"));
    let id = first["id"].as_str().unwrap().to_owned();
    let (st, again, _) = req(
        reqwest::Method::POST,
        &format!("{base}/main/messages"),
        Some(send.clone()),
        Some("k-1"),
    )
    .await;
    assert_eq!((st, again["id"].as_str()), (202, Some(id.as_str())));
    let (st, conflict, _) = req(
        reqwest::Method::POST,
        &format!("{base}/main/messages"),
        Some(json!({"to": "4915550002", "text": "something else"})),
        Some("k-1"),
    )
    .await;
    assert_eq!(
        (st, conflict["error"].as_str()),
        (422, Some("idempotency_conflict"))
    );

    // It reaches the simulator exactly once and is read.
    let sent = wait_for("message at the simulator", LONG, || async {
        let (_, v, _) = req(
            reqwest::Method::GET,
            &format!("http://{sim_addr}/sim/messages?phone={PHONE}"),
            None,
            None,
        )
        .await;
        let list = v.as_array().cloned().unwrap_or_default();
        let hits: Vec<_> = list
            .into_iter()
            .filter(|m| m["text"] == "hello from wafleet")
            .collect();
        (!hits.is_empty()).then_some(hits)
    })
    .await;
    assert_eq!(sent.len(), 1, "one message despite the repeated request");
    let status = wait_for("status read", LONG, || async {
        let (st, m, _) = req(
            reqwest::Method::GET,
            &format!("{base}/main/messages/{id}"),
            None,
            None,
        )
        .await;
        (st == 200 && m["status"] == "read").then_some(m)
    })
    .await;
    assert_eq!(status["to"], "4915550002");
    for step in ["sent", "server", "device", "read"] {
        let (ev, h, b) = event(&inbox, &format!("{step} event"), |v| {
            v["payload"]["id"] == id.as_str() && v["payload"]["status"] == step
        })
        .await;
        verify(&h, &b);
        let name = if step == "sent" {
            "message.sent"
        } else {
            "message.ack"
        };
        assert_eq!(ev["event"], name);
    }

    // Inbound: signed `message` webhook and the same event on the SSE stream.
    let (st, body, _) = req(
        reqwest::Method::POST,
        &format!("http://{sim_addr}/sim/inbound"),
        Some(json!({"to": PHONE, "from": "4915550003", "text": "hi there"})),
        None,
    )
    .await;
    assert!(st < 300, "inbound: {st} {body}");
    let (msg, h, b) = event(&inbox, "inbound message webhook", |v| {
        v["event"] == "message" && v["payload"]["text"] == "hi there"
    })
    .await;
    verify(&h, &b);
    let evt_id = msg["id"].as_str().unwrap().to_owned();
    wait_for("inbound on SSE", LONG, || {
        let t = sse_text.lock().unwrap().clone();
        let ok = t.contains(&format!("id:{evt_id}")) && t.contains("hi there");
        async move { ok.then_some(()) }
    })
    .await;

    // A receiver answering 410: a dead letter at once, listed and replayed through the API.
    inbox.lock().unwrap().refuse = Some("please refuse".into());
    req(
        reqwest::Method::POST,
        &format!("http://{sim_addr}/sim/inbound"),
        Some(json!({"to": PHONE, "from": "4915550003", "text": "please refuse"})),
        None,
    )
    .await;
    let dead_url = format!("http://{}/v1/workspaces/{WS}/webhooks/dead", router.addr);
    let dead = wait_for("dead letter listed", LONG, || async {
        let (st, v, _) = req(reqwest::Method::GET, &dead_url, None, None).await;
        let d = v["dead_letters"].as_array().cloned().unwrap_or_default();
        (st == 200 && !d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["last_status"], 410);
    let dead_id = dead[0]["id"].as_str().unwrap().to_owned();
    inbox.lock().unwrap().refuse = None;
    let (st, v, _) = req(
        reqwest::Method::POST,
        &format!("{dead_url}/{dead_id}/replay"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    wait_for("replayed delivery", LONG, || {
        let ok = inbox.lock().unwrap().got.iter().any(|(h, _, code)| {
            *code == 200
                && h.get("webhook-id").and_then(|v| v.to_str().ok()) == Some(dead_id.as_str())
        });
        async move { ok.then_some(()) }
    })
    .await;
    let (_, v, _) = req(reqwest::Method::GET, &dead_url, None, None).await;
    assert_eq!(v["dead_letters"], json!([]));

    // kill -9 right after a 202: after the restart the message is delivered or failed with a
    // reason, never lost.
    let (st, queued, _) = req(
        reqwest::Method::POST,
        &format!("{base}/main/messages"),
        Some(json!({"to": "4915550002", "text": "survives a crash"})),
        Some("k-crash"),
    )
    .await;
    assert_eq!(st, 202, "{queued}");
    let crash_id = queued["id"].as_str().unwrap().to_owned();
    // The whole allocation dies, as when Nomad's cgroup or the host goes: the worker and the
    // browsers it started (which would otherwise keep the profiles open as orphans).
    let tree = descendants(worker.pid());
    worker.kill9().await;
    for pid in tree {
        // SAFETY: plain kill(2) on pids of our own process tree.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let mut worker = Proc::start(
        "worker-2",
        &worker_args(&fleet, port, sim_addr),
        &worker_env(&fleet),
        &fleet.logs(),
    );
    worker.wait_ready(support::READY_TIMEOUT).await;
    let deadline = tokio::time::Instant::now() + LONG;
    let end = loop {
        let (st, m, _) = req(
            reqwest::Method::GET,
            &format!("{base}/main/messages/{crash_id}"),
            None,
            None,
        )
        .await;
        let s = m["status"].as_str().unwrap_or_default().to_owned();
        if st == 200 && ["sent", "server", "device", "read", "failed"].contains(&s.as_str()) {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "crashed send did not settle: {st} {m}\n{}",
            worker.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if end["status"] == "failed" {
        assert!(
            end["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{end}"
        );
    } else {
        let (_, v, _) = req(
            reqwest::Method::GET,
            &format!("http://{sim_addr}/sim/messages?phone={PHONE}"),
            None,
            None,
        )
        .await;
        let n = v
            .as_array()
            .map(|l| l.iter().filter(|m| m["text"] == "survives a crash").count());
        assert_eq!(n, Some(1), "delivered exactly once");
    }
    drop(worker);
}
