//! The send queue over a real SQLite store with a fake engine that fails sometimes:
//! status transitions and their events, retries, order per session, backpressure,
//! idempotency, acks, and sends interrupted by a restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wafleet::ids::{SessionId, WorkspaceId};
use wafleet::sendq::{
    MessageSender, OutgoingMessage, PacingConfig, SendError, SendQueue, SendRequest, SendqError,
    WaMessageId,
};
use wafleet::store::{IdempotencyKey, MessageKind, MessageStatus, Store, request_hash};
use wafleet::webhook::{Registry, SessionHooks, events};

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}
fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

/// Waits for `cond` with a deadline (no fixed sleeps as synchronisation).
async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake engine scripted by the message text: `reject…` is refused, `flaky…` fails once,
/// `broken…` always fails transiently, `offline…` finds the session not ready once.
#[derive(Default)]
struct FakeEngine {
    calls: Mutex<Vec<(String, String, bool)>>, // (session, message id, succeeded)
    per_message: Mutex<HashMap<String, u32>>,
    presence: Mutex<Vec<wafleet::sendq::PresencePlan>>,
}

impl MessageSender for FakeEngine {
    async fn send(&self, msg: OutgoingMessage) -> Result<WaMessageId, SendError> {
        let text = msg.body["text"].as_str().unwrap_or_default().to_owned();
        let n = {
            let mut m = self.per_message.lock().unwrap();
            let n = m.entry(msg.id.clone()).or_default();
            *n += 1;
            *n
        };
        self.presence.lock().unwrap().push(msg.presence.clone());
        let r = if text.starts_with("reject") {
            Err(SendError::Rejected("invalid recipient".into()))
        } else if text.starts_with("flaky") && n < 2 {
            Err(SendError::Transient("page busy".into()))
        } else if text.starts_with("broken") {
            Err(SendError::Transient("page crashed".into()))
        } else if text.starts_with("offline") && n < 2 {
            Err(SendError::NotReady("STARTING".into()))
        } else {
            Ok(WaMessageId(format!("wa-{}", msg.id)))
        };
        self.calls
            .lock()
            .unwrap()
            .push((msg.session.to_string(), msg.id.clone(), r.is_ok()));
        r
    }
}

fn fast_pacing() -> PacingConfig {
    PacingConfig {
        interval_ms: 10,
        jitter_ms: 5,
        burst: 2,
        retry_delay_ms: 20,
        max_attempts: 3,
        ..PacingConfig::default()
    }
}

fn request(s: &str, text: &str) -> SendRequest {
    SendRequest {
        workspace: ws("acme"),
        session: sid(s),
        to: "4915112345678".into(),
        kind: MessageKind::Text,
        body: json!({"to": "4915112345678", "text": text}),
    }
}

#[tokio::test]
async fn statuses_events_retries_and_order_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let registry = Arc::new(Registry::new());
    registry.set_session(
        &ws("acme"),
        &sid("a"),
        SessionHooks {
            webhooks: Vec::new(),
            metadata: json!({"tenant": 42}),
        },
    );
    let engine = Arc::new(FakeEngine::default());
    let q = SendQueue::new(store.clone(), engine.clone(), registry, 5, fast_pacing());
    let texts_a = [
        "hello",
        "reject me",
        "flaky one",
        "offline first",
        "broken",
        "bye",
    ];
    let texts_b = ["b1", "flaky b", "b3"];
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut order: HashMap<&str, Vec<String>> = HashMap::new();
    for (s, texts) in [("a", &texts_a[..]), ("b", &texts_b[..])] {
        for t in texts {
            let sub = q.submit(request(s, t), None).await.unwrap();
            assert_eq!(sub.response.status, 202);
            let body: Value = serde_json::from_slice(&sub.response.body).unwrap();
            assert_eq!(body["status"], "queued");
            let id = sub.id.unwrap();
            assert_eq!(body["id"], id.as_str());
            assert_eq!(
                store.message(&id).await.unwrap().unwrap().status,
                MessageStatus::Queued
            );
            order.entry(s).or_default().push(id.clone());
            ids.insert(t.to_string(), id);
        }
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(q.clone().run(shutdown.clone()));
    wait_for("both queues to drain", || async {
        store.queue_len(&ws("acme"), &sid("a")).await.unwrap() == 0
            && store.queue_len(&ws("acme"), &sid("b")).await.unwrap() == 0
    })
    .await;

    let m = |t: &str| {
        let store = store.clone();
        let id = ids[t].clone();
        async move { store.message(&id).await.unwrap().unwrap() }
    };
    for t in ["hello", "bye", "b1", "b3"] {
        let msg = m(t).await;
        assert_eq!(msg.status, MessageStatus::Sent, "{t}");
        assert_eq!(msg.wa_id, Some(format!("wa-{}", msg.id)));
        assert_eq!(msg.attempts, 1, "{t}");
    }
    let rejected = m("reject me").await;
    assert_eq!(rejected.status, MessageStatus::Failed);
    assert_eq!(rejected.reason.as_deref(), Some("invalid recipient"));
    for t in ["flaky one", "flaky b"] {
        let msg = m(t).await;
        assert_eq!((msg.status, msg.attempts), (MessageStatus::Sent, 2), "{t}");
    }
    let offline = m("offline first").await;
    // Not-ready waits do not count as attempts.
    assert_eq!((offline.status, offline.attempts), (MessageStatus::Sent, 1));
    let broken = m("broken").await;
    assert_eq!(broken.status, MessageStatus::Failed);
    assert_eq!(broken.attempts, 3);
    assert!(
        broken
            .reason
            .unwrap()
            .starts_with("gave up after 3 attempts")
    );

    // In order per session: once message k+1 was tried, message k is never tried again.
    let calls = engine.calls.lock().unwrap().clone();
    for s in ["a", "b"] {
        let tried: Vec<usize> = calls
            .iter()
            .filter(|(sess, _, _)| sess == s)
            .map(|(_, id, _)| order[s].iter().position(|x| x == id).unwrap())
            .collect();
        assert!(tried.windows(2).all(|w| w[0] <= w[1]), "{s}: {tried:?}");
        assert_eq!(tried.last(), Some(&(order[s].len() - 1)));
    }
    // Typing and seen settings reach the engine.
    assert!(
        engine
            .presence
            .lock()
            .unwrap()
            .iter()
            .all(|p| p.send_seen && p.typing == Some(Duration::from_millis(1000)))
    );

    // Each outcome appended its event, with the session metadata.
    let evs = store
        .events_after(&ws("acme"), &sid("a"), None, 100)
        .await
        .unwrap();
    let names: Vec<(String, String)> = evs
        .iter()
        .map(|e| {
            let env: Value = serde_json::from_str(&e.envelope).unwrap();
            assert_eq!(env["metadata"]["tenant"], 42);
            assert_eq!(env["shard"], 5);
            (
                e.event.clone(),
                env["payload"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(names.len(), texts_a.len());
    for t in ["hello", "flaky one", "offline first", "bye"] {
        assert!(
            names.contains(&(events::MESSAGE_SENT.into(), ids[t].clone())),
            "{t}"
        );
    }
    for t in ["reject me", "broken"] {
        assert!(
            names.contains(&(events::MESSAGE_FAILED.into(), ids[t].clone())),
            "{t}"
        );
    }

    // Acks: forward only, each with a message.ack event; a late "device" after "read" is ignored.
    let hello = m("hello").await;
    let wa = hello.wa_id.clone().unwrap();
    let r = q
        .on_ack(&ws("acme"), &sid("a"), &wa, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, MessageStatus::Server);
    let r = q
        .on_ack(&ws("acme"), &sid("a"), &wa, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, MessageStatus::Read);
    assert!(
        q.on_ack(&ws("acme"), &sid("a"), &wa, 2)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        q.on_ack(&ws("acme"), &sid("a"), "unknown", 2)
            .await
            .unwrap()
            .is_none()
    );
    let acks: Vec<Value> = store
        .events_after(&ws("acme"), &sid("a"), None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == events::MESSAGE_ACK)
        .map(|e| serde_json::from_str::<Value>(&e.envelope).unwrap()["payload"].clone())
        .collect();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0]["status"], "server");
    assert_eq!(acks[0]["ack"], 1);
    assert_eq!(acks[1]["status"], "read");
    assert_eq!(m("hello").await.status, MessageStatus::Read);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("dispatcher stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn backpressure_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let engine = Arc::new(FakeEngine::default());
    let q = SendQueue::new(
        store.clone(),
        engine,
        Arc::new(Registry::new()),
        0,
        PacingConfig::default(),
    );
    q.set_pacing(
        &ws("acme"),
        &sid("a"),
        Some(PacingConfig {
            queue_cap: 2,
            ..PacingConfig::default()
        }),
    );
    let key = |body: &str| IdempotencyKey {
        workspace: ws("acme"),
        key: "k-1".into(),
        request_hash: request_hash(&[b"POST", body.as_bytes()]),
        expires_at: u64::MAX / 2,
    };
    let first = q
        .submit(request("a", "one"), Some(key("one")))
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = q
        .submit(request("a", "one"), Some(key("one")))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.id, first.id);
    assert_eq!(again.response, first.response);
    assert_eq!(store.queue_len(&ws("acme"), &sid("a")).await.unwrap(), 1);
    let conflict = q
        .submit(request("a", "two"), Some(key("two")))
        .await
        .unwrap_err();
    assert!(matches!(conflict, SendqError::IdempotencyConflict));
    assert_eq!(conflict.to_api_error().status.as_u16(), 422);

    q.submit(request("a", "two"), None).await.unwrap();
    let full = q.submit(request("a", "three"), None).await.unwrap_err();
    let SendqError::QueueFull { retry_after_secs } = full else {
        panic!("expected QueueFull, got {full:?}");
    };
    assert_eq!(retry_after_secs, PacingConfig::default().retry_after_secs());
    let api = full.to_api_error();
    assert_eq!(api.status.as_u16(), 429);
    assert_eq!(api.body.error, "queue_full");
    assert!(
        api.headers
            .iter()
            .any(|(n, v)| n == http::header::RETRY_AFTER && v == "4")
    );
    assert_eq!(store.queue_len(&ws("acme"), &sid("a")).await.unwrap(), 2);
    // The cap is per session: another session still accepts.
    q.submit(request("b", "other"), None).await.unwrap();
    // A replay is answered even when the queue is full.
    assert!(
        q.submit(request("a", "one"), Some(key("one")))
            .await
            .unwrap()
            .replayed
    );
}

#[tokio::test]
async fn queue_survives_a_restart_and_interrupted_sends_fail_instead_of_resending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shards/0/wafleet.db");
    let (interrupted, waiting) = {
        let store = Store::open(&path).await.unwrap();
        let q = SendQueue::new(
            store.clone(),
            Arc::new(FakeEngine::default()),
            Arc::new(Registry::new()),
            0,
            fast_pacing(),
        );
        let a = q.submit(request("a", "in flight"), None).await.unwrap();
        let b = q.submit(request("a", "waiting"), None).await.unwrap();
        // The process "dies" after claiming the head for sending.
        store
            .claim_queued(a.id.as_deref().unwrap(), 1)
            .await
            .unwrap();
        store.close().await;
        (a.id.unwrap(), b.id.unwrap())
    };
    let store = Store::open(&path).await.unwrap();
    let engine = Arc::new(FakeEngine::default());
    let q = SendQueue::new(
        store.clone(),
        engine.clone(),
        Arc::new(Registry::new()),
        0,
        fast_pacing(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(q.run(shutdown.clone()));
    wait_for("the queue to drain after restart", || async {
        store.queue_len(&ws("acme"), &sid("a")).await.unwrap() == 0
    })
    .await;
    let m = store.message(&interrupted).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Failed);
    assert_eq!(m.reason.as_deref(), Some("interrupted"));
    assert_eq!(
        store.message(&waiting).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
    let calls = engine.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, waiting);
    shutdown.cancel();
    task.await.unwrap();
}

/// PURE: a greedy sender against the default bucket (1 per 3 s ± 1 s, burst 3) for one
/// simulated hour with real random jitter keeps the documented rate.
#[test]
fn pacing_holds_the_configured_rate() {
    let cfg = PacingConfig::default();
    let mut bucket = wafleet::sendq::TokenBucket::new(&cfg);
    let mut rand = rand::random::<f64>;
    let mut now = 0u64;
    let mut sent = Vec::new();
    while now <= 3_600_000 {
        match bucket.try_take(now, &cfg, &mut rand) {
            Ok(()) => sent.push(now),
            Err(at) => {
                assert!(at > now);
                now = at;
            }
        }
    }
    assert_eq!(&sent[..3], &[0, 0, 0], "the burst goes at once");
    let gaps: Vec<u64> = sent[3..].windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| (2_000..=4_000).contains(g)),
        "every gap within 3 s ± 1 s"
    );
    let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
    assert!((2_900.0..=3_100.0).contains(&mean), "mean gap {mean} ms");
    assert!(sent.len() <= 3 + 3_600_000 / 2_000 + 1);
}

/// The dispatcher never sends a session's messages closer together than the bucket allows
/// (a lower bound: machine load can only make the gaps longer).
#[tokio::test]
async fn dispatcher_respects_the_bucket() {
    #[derive(Default)]
    struct Clocked(Mutex<Vec<std::time::Instant>>);
    impl MessageSender for Clocked {
        async fn send(&self, msg: OutgoingMessage) -> Result<WaMessageId, SendError> {
            self.0.lock().unwrap().push(std::time::Instant::now());
            Ok(WaMessageId(format!("wa-{}", msg.id)))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let engine = Arc::new(Clocked::default());
    let cfg = PacingConfig {
        interval_ms: 200,
        jitter_ms: 0,
        burst: 1,
        ..PacingConfig::default()
    };
    let q = SendQueue::new(
        store.clone(),
        engine.clone(),
        Arc::new(Registry::new()),
        0,
        cfg,
    );
    for i in 0..4 {
        q.submit(request("a", &format!("m{i}")), None)
            .await
            .unwrap();
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(q.run(shutdown.clone()));
    wait_for("four sends", || async {
        engine.0.lock().unwrap().len() == 4
    })
    .await;
    let at = engine.0.lock().unwrap().clone();
    for w in at.windows(2) {
        // Generous slack for scheduling noise between the bucket and the engine's clock; without
        // pacing the four sends would be a few milliseconds apart.
        assert!(
            w[1] - w[0] >= Duration::from_millis(150),
            "{:?}",
            w[1] - w[0]
        );
    }
    shutdown.cancel();
    task.await.unwrap();
}

/// WhatsApp may ack a message before the dispatcher has recorded its WhatsApp id: the ack is
/// kept and applied right after the send is recorded, in order (sent, then ack).
#[tokio::test]
async fn an_ack_that_overtakes_the_send_record_is_not_lost() {
    #[derive(Default)]
    struct FastAcker(std::sync::OnceLock<std::sync::Weak<SendQueue<FastAcker>>>);
    impl MessageSender for FastAcker {
        async fn send(&self, msg: OutgoingMessage) -> Result<WaMessageId, SendError> {
            let wa = format!("wa-{}", msg.id);
            let q = self.0.get().unwrap().upgrade().unwrap();
            let r = q
                .on_ack(&msg.workspace, &msg.session, &wa, 1)
                .await
                .unwrap();
            assert!(r.is_none(), "not applicable yet");
            Ok(WaMessageId(wa))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let engine = Arc::new(FastAcker::default());
    let q = SendQueue::new(
        store.clone(),
        engine.clone(),
        Arc::new(Registry::new()),
        0,
        fast_pacing(),
    );
    engine.0.set(Arc::downgrade(&q)).unwrap();
    let id = q
        .submit(request("a", "hi"), None)
        .await
        .unwrap()
        .id
        .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(q.clone().run(shutdown.clone()));
    wait_for("the early ack to be applied", || async {
        store.message(&id).await.unwrap().unwrap().status == MessageStatus::Server
    })
    .await;
    let names: Vec<String> = store
        .events_after(&ws("acme"), &sid("a"), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(names, [events::MESSAGE_SENT, events::MESSAGE_ACK]);
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn cancelling_a_session_fails_its_queue_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let q = SendQueue::new(
        store.clone(),
        Arc::new(FakeEngine::default()),
        Arc::new(Registry::new()),
        0,
        fast_pacing(),
    );
    let mut ids = Vec::new();
    for t in ["x", "y", "z"] {
        ids.push(q.submit(request("a", t), None).await.unwrap().id.unwrap());
    }
    q.submit(request("b", "keep"), None).await.unwrap();
    assert_eq!(
        q.cancel_session(&ws("acme"), &sid("a"), "session deleted")
            .await
            .unwrap(),
        3
    );
    for id in &ids {
        let m = store.message(id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Failed);
        assert_eq!(m.reason.as_deref(), Some("session deleted"));
    }
    assert_eq!(store.queue_len(&ws("acme"), &sid("a")).await.unwrap(), 0);
    assert_eq!(store.queue_len(&ws("acme"), &sid("b")).await.unwrap(), 1);
    let failed = store
        .events_after(&ws("acme"), &sid("a"), None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == events::MESSAGE_FAILED)
        .count();
    assert_eq!(failed, 3);
}
