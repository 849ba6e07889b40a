//! Webhook signatures against an independent implementation (Python's hmac/hashlib/base64 and
//! the published Standard Webhooks vector), and delivery to a real receiver on loopback that in
//! turn refuses connections, times out, answers 500, 408/429, 410 and 422: nothing is lost, the
//! dead letters are exactly the non-retryable and the exhausted events, replay delivers them, and
//! each session's events arrive in order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use url::Url;
use wafleet::ids::{SessionId, WorkspaceId};
use wafleet::store::{OutboxState, Store};
use wafleet::webhook::sign::{signature_headers, spatie_signature, standard_signature};
use wafleet::webhook::{
    DeliveryConfig, Emitter, Registry, SessionHooks, WebhookConfig, WebhookSecret, delivery, events,
};

mod targets;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}
fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

/// Python's answer for each (secret, id, timestamp, body): the spatie hex signature and the
/// Standard Webhooks `v1,<base64>` signature, computed with hmac/hashlib/base64 only.
fn python_signatures(cases: &[(String, String, u64, Vec<u8>)]) -> Vec<(String, String)> {
    const SCRIPT: &str = r#"
import sys, json, hmac, hashlib, base64
for line in sys.stdin:
    c = json.loads(line)
    secret = c["secret"]
    body = base64.b64decode(c["body"])
    spatie = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    signed = c["id"].encode() + b"." + str(c["ts"]).encode() + b"." + body
    std = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    print(json.dumps([spatie, std]))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        let mut stdin = child.stdin.take().unwrap();
        for (secret, id, ts, body) in cases {
            let line = json!({"secret": secret, "id": id, "ts": ts, "body": B64.encode(body)});
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<(String, String)>(l).unwrap())
        .collect()
}

#[test]
fn published_standard_webhooks_vector() {
    let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(
        standard_signature(
            secret.standard_key(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// The worked example of docs/webhooks.md, so the documentation cannot drift from the code.
#[test]
fn documented_example() {
    let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let env = wafleet::webhook::Envelope {
        id: "evt_01JD8X3V7Q2W9K4M6N8P0R2T4V".into(),
        event: "session.status".into(),
        workspace: ws("acme-42"),
        session: sid("main"),
        shard: 3,
        timestamp: 1_732_800_000_123,
        payload: json!({"status": "WORKING"}),
        metadata: json!({}),
    };
    let body = env.to_json();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/webhooks.md")).unwrap();
    assert!(
        doc.contains(&body),
        "the documented body is what the code serializes"
    );
    let headers: HashMap<_, _> =
        signature_headers(Some(&secret), &env.id, 1_732_800_000, body.as_bytes())
            .into_iter()
            .collect();
    for (name, value) in &headers {
        assert!(doc.contains(&format!("{name}: {value}")), "{name}: {value}");
    }
    let py = python_signatures(&[(
        secret.expose().to_owned(),
        env.id.clone(),
        1_732_800_000,
        body.into_bytes(),
    )]);
    assert_eq!(headers["Signature"], py[0].0);
    assert_eq!(headers["webhook-signature"], py[0].1);
}

#[test]
fn signatures_match_python() {
    let mut cases = Vec::new();
    for i in 0..40u32 {
        let secret = if i % 2 == 0 {
            let key: Vec<u8> = (0..(8 + i as usize))
                .map(|_| rand::random::<u8>())
                .collect();
            format!("whsec_{}", B64.encode(key))
        } else {
            format!("plain-secret-{i}-{}", rand::random::<u32>())
        };
        let body: Vec<u8> = match i % 4 {
            0 => Vec::new(),
            1 => "{\"text\":\"Grüße, 世界 🎉\"}".as_bytes().to_vec(),
            _ => (0..(i * 37) as usize)
                .map(|_| rand::random::<u8>())
                .collect(),
        };
        let id = wafleet::webhook::new_event_id();
        let ts = 1_700_000_000 + u64::from(i) * 7919;
        cases.push((secret, id, ts, body));
    }
    let expected = python_signatures(&cases);
    assert_eq!(expected.len(), cases.len());
    for ((secret, id, ts, body), (spatie, std)) in cases.iter().zip(expected) {
        let s = WebhookSecret::new(secret.clone()).unwrap();
        assert_eq!(spatie_signature(s.expose(), body), spatie);
        assert_eq!(standard_signature(s.standard_key(), id, *ts, body), std);
        let headers: HashMap<_, _> = signature_headers(Some(&s), id, *ts, body)
            .into_iter()
            .collect();
        assert_eq!(headers["Signature"], spatie);
        assert_eq!(headers["webhook-signature"], std);
        assert_eq!(headers["webhook-id"], *id);
        assert_eq!(headers["webhook-timestamp"], ts.to_string());
    }
}

// === the receiver ===

#[derive(Debug, Clone)]
struct Hit {
    mode: String,
    id: String,
    answered: u16,
    body: Vec<u8>,
    signature: Option<String>,
    wh_timestamp: u64,
    wh_signature: Option<String>,
}

#[derive(Default)]
struct Receiver {
    hits: Mutex<Vec<Hit>>,
    attempts: Mutex<HashMap<String, u32>>,
    healthy: AtomicBool,
}

impl Receiver {
    async fn handle(&self, mode: String, headers: http::HeaderMap, body: bytes::Bytes) -> u16 {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let id = h("webhook-id").unwrap_or_default();
        let n = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        let answered = if self.healthy.load(Ordering::SeqCst) {
            200
        } else {
            match mode.as_str() {
                "ok" => 200,
                "flaky" if n == 1 => 500,
                "flaky" => 200,
                "order" if n == 1 => 408,
                "order" if n == 2 => 429,
                "order" => 200,
                "gone" => 410,
                "unproc" => 422,
                "fail" => 500,
                // Longer than the client's request timeout.
                "slow" => 0,
                _ => 404,
            }
        };
        self.hits.lock().unwrap().push(Hit {
            mode: mode.clone(),
            id,
            answered,
            body: body.to_vec(),
            signature: h("signature"),
            wh_timestamp: h("webhook-timestamp")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            wh_signature: h("webhook-signature"),
        });
        if answered == 0 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            return 200;
        }
        answered
    }
}

async fn start_receiver(state: Arc<Receiver>, shutdown: CancellationToken) -> std::net::SocketAddr {
    use warp::Filter;
    let route = warp::post()
        .and(warp::path!("hook" / String))
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .and_then(move |mode: String, headers, body| {
            let state = state.clone();
            async move {
                let code = state.handle(mode, headers, body).await;
                Ok::<_, Infallible>(warp::reply::with_status(
                    warp::reply(),
                    StatusCode::from_u16(code).unwrap(),
                ))
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        warp::serve(route)
            .incoming(listener)
            .graceful(async move { shutdown.cancelled().await })
            .run(),
    );
    addr
}

async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn metric(rendered: &str, name: &str) -> f64 {
    rendered
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The delivery tests of this binary share the process-wide metrics: they run one at a time
/// and the metric assertions count from a baseline.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receiver_loses_nothing_dead_letters_replay_and_order() {
    let _serial = SERIAL.lock().await;
    let prom = wafleet::telemetry::prometheus();
    let base = {
        let r = prom.render();
        [
            "wafleet_webhook_dead_total",
            "wafleet_webhook_delivered_total",
            "wafleet_webhook_retried_total",
            "wafleet_webhook_delivery_seconds_count",
        ]
        .map(|m| metric(&r, m))
    };
    let shutdown = CancellationToken::new();
    let receiver = Arc::new(Receiver::default());
    let addr = start_receiver(receiver.clone(), shutdown.clone()).await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // dropped: connections to it are refused

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_shard(dir.path(), 2).await.unwrap();
    let registry = Arc::new(Registry::new());
    let emitter = Emitter::new(store.clone(), registry.clone(), 2);
    let w = ws("acme");
    let whsec = format!("whsec_{}", B64.encode(b"0123456789abcdef0123456789abcdef"));
    let plain = "laravel-secret".to_owned();
    // session → (receiver mode or the refused port, secret, events to emit)
    let plan: Vec<(&str, String, &String, usize)> = vec![
        ("ok", format!("http://{addr}/hook/ok"), &whsec, 3),
        ("flaky", format!("http://{addr}/hook/flaky"), &plain, 3),
        ("order", format!("http://{addr}/hook/order"), &whsec, 5),
        ("gone", format!("http://{addr}/hook/gone"), &plain, 2),
        ("unproc", format!("http://{addr}/hook/unproc"), &whsec, 2),
        ("fail", format!("http://{addr}/hook/fail"), &plain, 2),
        ("slow", format!("http://{addr}/hook/slow"), &whsec, 1),
        // The query token stands for a credential in a URL: it must not reach stored errors.
        (
            "down",
            format!("http://{refused}/hook/ok?token=s3cr3t"),
            &plain,
            2,
        ),
    ];
    let mut created: HashMap<&str, Vec<String>> = HashMap::new();
    let mut secrets: HashMap<String, String> = HashMap::new();
    for (s, url, secret, n) in &plan {
        registry.set_session(
            &w,
            &sid(s),
            SessionHooks {
                webhooks: vec![WebhookConfig::simple(
                    Url::parse(url).unwrap(),
                    Some(WebhookSecret::new((*secret).clone()).unwrap()),
                )],
                metadata: json!({"tenant": s}),
            },
        );
        for i in 0..*n {
            let env = emitter
                .emit(
                    &w,
                    &sid(s),
                    events::MESSAGE,
                    json!({"n": i, "text": "hi"}),
                    1_000 + i as u64,
                )
                .await
                .unwrap();
            secrets.insert(env.id.clone(), (*secret).clone());
            created.entry(s).or_default().push(env.id);
        }
    }
    // A session without webhook and without default: its event is skipped, not lost or dead.
    let skipped = emitter
        .session_status(&w, &sid("nohook"), "WORKING", json!({}), 5)
        .await
        .unwrap();
    let total: usize = created.values().map(Vec::len).sum();

    let config = DeliveryConfig {
        request_timeout: Duration::from_secs(2),
        max_attempts: 4,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        jitter: 0.2,
        max_in_flight: 8,
        idle_poll: Duration::from_millis(200),
    };
    let delivery_stop = CancellationToken::new();
    let task = tokio::spawn(delivery::run(
        store.clone(),
        registry.clone(),
        config,
        delivery_stop.clone(),
    ));
    wait_for("every event to be delivered or dead", || async {
        store.outbox_backlog().await.unwrap() == 0
    })
    .await;

    // Nothing lost: every event is delivered or a dead letter; exactly the expected ones are dead.
    let dead_sessions = ["gone", "unproc", "fail", "slow", "down"];
    let mut expected_dead = Vec::new();
    for (s, ids) in &created {
        for id in ids {
            let ev = store.event(id).await.unwrap().unwrap();
            if dead_sessions.contains(s) {
                assert_eq!(ev.state, OutboxState::Dead, "{s} {id}");
                expected_dead.push(id.clone());
                let attempts = if ["gone", "unproc"].contains(s) { 1 } else { 4 };
                assert_eq!(ev.attempts, attempts, "{s}");
            } else {
                assert_eq!(ev.state, OutboxState::Delivered, "{s} {id}");
            }
        }
    }
    assert_eq!(
        store.event(&skipped.id).await.unwrap().unwrap().state,
        OutboxState::Skipped
    );
    let mut dead: Vec<String> = store
        .dead_letters(&w, None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    dead.sort();
    expected_dead.sort();
    assert_eq!(dead, expected_dead);
    let gone = store
        .dead_letters(&w, Some(&sid("gone")), None, 100)
        .await
        .unwrap();
    assert!(gone.iter().all(
        |e| e.last_status == Some(410) && e.last_error.as_deref().unwrap().contains("410 Gone")
    ));
    let unproc = store
        .dead_letters(&w, Some(&sid("unproc")), None, 100)
        .await
        .unwrap();
    assert!(unproc.iter().all(|e| e.last_status == Some(422)));
    let down = store
        .dead_letters(&w, Some(&sid("down")), None, 100)
        .await
        .unwrap();
    for e in &down {
        let err = e.last_error.as_deref().unwrap();
        assert!(e.last_status.is_none());
        assert!(
            err.contains("connection failed") && err.contains("refused"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t") && !err.contains("/hook"), "{err}");
    }
    let slow = store
        .dead_letters(&w, Some(&sid("slow")), None, 100)
        .await
        .unwrap();
    assert!(
        slow[0].last_error.as_deref().unwrap().contains("timeout"),
        "{:?}",
        slow[0].last_error
    );
    // Non-retryable answers were not retried.
    let hits = receiver.hits.lock().unwrap().clone();
    for id in created["gone"].iter().chain(&created["unproc"]) {
        assert_eq!(hits.iter().filter(|h| &h.id == id).count(), 1);
    }

    // In order per session: once event k+1 was attempted, event k is never attempted again.
    for s in ["ok", "flaky", "order", "gone", "unproc", "fail"] {
        let idx: Vec<usize> = hits
            .iter()
            .filter(|h| h.mode == s)
            .map(|h| created[s].iter().position(|x| *x == h.id).unwrap())
            .collect();
        assert!(idx.windows(2).all(|p| p[0] <= p[1]), "{s}: {idx:?}");
    }
    let order_answers: Vec<u16> = hits
        .iter()
        .filter(|h| h.mode == "order")
        .map(|h| h.answered)
        .collect();
    assert_eq!(order_answers, [408, 429, 200].repeat(5));

    // What was received is the stored envelope, signed as Python computes it.
    let ok_hits: Vec<&Hit> = hits.iter().filter(|h| h.answered == 200).collect();
    assert_eq!(ok_hits.len(), 3 + 3 + 5);
    let cases: Vec<(String, String, u64, Vec<u8>)> = ok_hits
        .iter()
        .map(|h| {
            (
                secrets[&h.id].clone(),
                h.id.clone(),
                h.wh_timestamp,
                h.body.clone(),
            )
        })
        .collect();
    for (h, (spatie, std)) in ok_hits.iter().zip(python_signatures(&cases)) {
        assert_eq!(h.signature.as_deref(), Some(spatie.as_str()));
        assert_eq!(h.wh_signature.as_deref(), Some(std.as_str()));
        let env: Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(env["id"], h.id.as_str());
        assert_eq!(env["shard"], 2);
        assert_eq!(env["workspace"], "acme");
        assert_eq!(env["event"], "message");
        assert_eq!(env["metadata"]["tenant"], h.mode.as_str());
        assert_eq!(
            store
                .event(&h.id)
                .await
                .unwrap()
                .unwrap()
                .envelope
                .as_bytes(),
            &h.body[..]
        );
    }

    let rendered = prom.render();
    assert_eq!(
        metric(&rendered, "wafleet_webhook_dead_total") - base[0],
        expected_dead.len() as f64
    );
    assert_eq!(
        metric(&rendered, "wafleet_webhook_delivered_total") - base[1],
        11.0
    );
    // flaky 3×1 + order 5×2 + fail 2×3 + slow 1×3 + down 2×3
    assert_eq!(
        metric(&rendered, "wafleet_webhook_retried_total") - base[2],
        28.0
    );
    assert_eq!(
        metric(&rendered, "wafleet_webhook_delivery_seconds_count") - base[3],
        11.0
    );
    assert!(rendered.contains("wafleet_webhook_backlog 0"), "{rendered}");

    // Replay: the receiver recovers, the refused session gets a reachable URL.
    receiver.healthy.store(true, Ordering::SeqCst);
    registry.set_session(
        &w,
        &sid("down"),
        SessionHooks {
            webhooks: vec![WebhookConfig::simple(
                Url::parse(&format!("http://{addr}/hook/down")).unwrap(),
                Some(WebhookSecret::new(plain.clone()).unwrap()),
            )],
            metadata: json!({"tenant": "down"}),
        },
    );
    let before = receiver.hits.lock().unwrap().len();
    for id in &expected_dead {
        store.replay_dead(&w, id, None, 0).await.unwrap();
    }
    wait_for("replayed dead letters to be delivered", || async {
        store.outbox_backlog().await.unwrap() == 0
    })
    .await;
    assert!(
        store
            .dead_letters(&w, None, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    for (s, ids) in &created {
        for id in ids {
            let ev = store.event(id).await.unwrap().unwrap();
            assert_eq!(ev.state, OutboxState::Delivered, "{s} {id}");
        }
    }
    let replay_hits: Vec<Hit> = receiver.hits.lock().unwrap()[before..].to_vec();
    // The slow session's old request may still be sleeping; count only answered replays.
    let replayed: Vec<&Hit> = replay_hits.iter().filter(|h| h.answered == 200).collect();
    for id in &expected_dead {
        assert!(replayed.iter().any(|h| &h.id == id), "{id} not replayed");
    }
    for s in dead_sessions {
        let idx: Vec<usize> = replayed
            .iter()
            .filter(|h| created[s].contains(&h.id))
            .map(|h| created[s].iter().position(|x| *x == h.id).unwrap())
            .collect();
        assert!(idx.windows(2).all(|p| p[0] <= p[1]), "{s}: {idx:?}");
    }
    assert_eq!(
        metric(&prom.render(), "wafleet_webhook_delivered_total"),
        total as f64
    );

    delivery_stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("delivery stops on shutdown")
        .unwrap()
        .unwrap();
    shutdown.cancel();
}
