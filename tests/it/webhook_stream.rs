//! The `…/events` server-sent-event stream served by a real warp route from the outbox, with
//! `Last-Event-ID` resume; and outbox durability: events committed before a crash are delivered
//! by the next process.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use url::Url;
use wafleet::ids::{SessionId, WorkspaceId};
use wafleet::store::{OutboxState, Store};
use wafleet::webhook::{DeliveryConfig, Emitter, Registry, WebhookConfig, delivery, events, sse};
use warp::Filter;

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}
fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

async fn serve<F>(filter: F, shutdown: CancellationToken) -> std::net::SocketAddr
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        warp::serve(filter)
            .incoming(listener)
            .graceful(async move { shutdown.cancelled().await })
            .run(),
    );
    addr
}

/// Reads SSE frames from a streaming response.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Frame {
    id: String,
    event: String,
    data: String,
}

impl SseReader {
    async fn next(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in raw.lines() {
                    let Some((k, v)) = line.split_once(':') else {
                        continue;
                    };
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    match k {
                        "id" => id = v.to_owned(),
                        "event" => event = v.to_owned(),
                        "data" => data.push_str(v),
                        _ => {} // keep-alive comments
                    }
                }
                if !data.is_empty() {
                    return Frame { id, event, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("an SSE frame within the deadline")
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn sse_streams_new_events_and_resumes_after_last_event_id() {
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let emitter = Emitter::new(store.clone(), Arc::new(Registry::new()), 1);
    let (w, s) = (ws("acme"), sid("main"));
    // An event from before the client connects: not part of a fresh stream.
    let old = emitter
        .session_status(&w, &s, "STARTING", json!({}), 1)
        .await
        .unwrap();

    let route = {
        let (store, shutdown) = (store.clone(), shutdown.clone());
        warp::path!("events")
            .and(warp::header::optional::<String>("last-event-id"))
            .and_then(move |last: Option<String>| {
                let (store, shutdown) = (store.clone(), shutdown.clone());
                async move {
                    let stream = sse::sse_events(store, ws("acme"), sid("main"), last, shutdown)
                        .await
                        .map_err(|_| warp::reject::not_found())?;
                    Ok::<_, warp::Rejection>(warp::sse::reply(
                        warp::sse::keep_alive().stream(stream),
                    ))
                }
            })
    };
    let addr = serve(route, shutdown.clone()).await;
    let client = reqwest::Client::new();
    let open = |last: Option<String>| {
        let mut req = client.get(format!("http://{addr}/events"));
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers()["content-type"].to_str().unwrap(),
                "text/event-stream"
            );
            SseReader {
                resp,
                buf: String::new(),
            }
        }
    };

    let mut first = open(None).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        // Another session's events never appear in this stream.
        emitter
            .emit(&w, &sid("other"), events::MESSAGE, json!({"n": i}), 2)
            .await
            .unwrap();
        sent.push(
            emitter
                .emit(&w, &s, events::MESSAGE, json!({"n": i}), 2)
                .await
                .unwrap(),
        );
    }
    for env in &sent {
        let f = first.next().await;
        assert_eq!(f.id, env.id);
        assert_ne!(f.id, old.id);
        assert_eq!(f.event, "message");
        assert_eq!(f.data, env.to_json());
        let v: Value = serde_json::from_str(&f.data).unwrap();
        assert_eq!(v["session"], "main");
    }
    drop(first);

    // Resume after the first: the two others, then new ones as they come.
    let mut resumed = open(Some(sent[0].id.clone())).await;
    assert_eq!(resumed.next().await.id, sent[1].id);
    assert_eq!(resumed.next().await.id, sent[2].id);
    let later = emitter
        .session_status(&w, &s, "WORKING", json!({"me": "4915100000000"}), 3)
        .await
        .unwrap();
    let f = resumed.next().await;
    assert_eq!(f.id, later.id);
    assert_eq!(f.event, "session.status");
    let v: Value = serde_json::from_str(&f.data).unwrap();
    assert_eq!(
        v["payload"],
        json!({"status": "WORKING", "me": "4915100000000"})
    );

    // Resuming from the very first event replays everything after it.
    let mut all = open(Some(old.id.clone())).await;
    for env in sent.iter().chain([&later]) {
        assert_eq!(all.next().await.id, env.id);
    }
    shutdown.cancel();
}

#[tokio::test]
async fn events_committed_before_a_crash_are_delivered_after_restart() {
    let shutdown = CancellationToken::new();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let route = {
        let got = got.clone();
        warp::post()
            .and(warp::path!("hook"))
            .and(warp::header::<String>("webhook-id"))
            .and_then(move |id: String| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(id);
                    Ok::<_, Infallible>(warp::reply())
                }
            })
    };
    let addr = serve(route, shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::new());
    registry.set_default(Some(WebhookConfig::simple(
        Url::parse(&format!("http://{addr}/hook")).unwrap(),
        None,
    )));
    let mut ids = Vec::new();
    {
        // The first process commits events and dies before delivering them.
        let store = Store::open_shard(dir.path(), 0).await.unwrap();
        let emitter = Emitter::new(store.clone(), registry.clone(), 0);
        for i in 0..4 {
            ids.push(
                emitter
                    .emit(&ws("w"), &sid("s"), events::MESSAGE, json!({"n": i}), 1)
                    .await
                    .unwrap()
                    .id,
            );
        }
        drop(emitter);
        drop(store);
    }
    let store = Store::open_shard(dir.path(), 0).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(delivery::run(
        store.clone(),
        registry,
        DeliveryConfig {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..DeliveryConfig::default()
        },
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.outbox_backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery after restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Delivered in order, each at least once (exactly once here: no failure on the way).
    assert_eq!(*got.lock().unwrap(), ids);
    for id in &ids {
        assert_eq!(
            store.event(id).await.unwrap().unwrap().state,
            OutboxState::Delivered
        );
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn dead_letter_handlers_page_filter_replay_and_refuse_bad_input() {
    use wafleet::webhook::api::{self, DeadLetterQuery};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let emitter = Emitter::new(store.clone(), Arc::new(Registry::new()), 0);
    let w = ws("acme");
    let mut dead = Vec::new();
    for s in ["a", "b", "a"] {
        let env = emitter
            .emit(&w, &sid(s), events::MESSAGE, json!({}), 1)
            .await
            .unwrap();
        store
            .outbox_fan_out(&env.id, &["wh1".into()], 2)
            .await
            .unwrap();
        store
            .delivery_dead(&env.id, "wh1", Some(422), "non-retryable answer 422", 2)
            .await
            .unwrap();
        dead.push(env.id);
    }
    let q = |session: Option<&str>, after: Option<&str>, limit: Option<u32>| DeadLetterQuery {
        session: session.map(str::to_owned),
        after: after.map(str::to_owned),
        limit,
    };
    let page = api::list_dead_letters(&store, &w, &q(None, None, Some(2)))
        .await
        .unwrap();
    let ids: Vec<&str> = page["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [dead[0].as_str(), dead[1].as_str()]);
    assert_eq!(page["next_after"], dead[1].as_str());
    assert_eq!(page["dead_letters"][0]["last_status"], 422);
    assert_eq!(page["dead_letters"][0]["target"], "wh1");
    assert_eq!(page["dead_letters"][0]["envelope"]["id"], dead[0].as_str());
    let rest = api::list_dead_letters(&store, &w, &q(None, Some(&dead[1]), Some(2)))
        .await
        .unwrap();
    assert_eq!(rest["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_after"], Value::Null);
    let only_a = api::list_dead_letters(&store, &w, &q(Some("a"), None, None))
        .await
        .unwrap();
    assert_eq!(only_a["dead_letters"].as_array().unwrap().len(), 2);
    // Another workspace sees none of them and cannot replay them.
    let other = api::list_dead_letters(&store, &ws("other"), &q(None, None, None))
        .await
        .unwrap();
    assert!(other["dead_letters"].as_array().unwrap().is_empty());
    let e = api::replay_dead_letter(&store, &ws("other"), &dead[0], 3)
        .await
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 404);

    for (bad, code) in [
        (q(Some("../x"), None, None), "invalid_session"),
        (q(None, Some("nope"), None), "invalid_cursor"),
        (
            q(None, Some("evt_00000000000000000000000000"), None),
            "invalid_cursor",
        ),
        (q(None, None, Some(0)), "invalid_limit"),
        (q(None, None, Some(501)), "invalid_limit"),
    ] {
        let e = api::list_dead_letters(&store, &w, &bad).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.body.error.as_str()), (400, code));
    }

    let r = api::replay_dead_letter(&store, &w, &dead[0], 3)
        .await
        .unwrap();
    assert_eq!(r, json!({"id": dead[0], "state": "pending"}));
    assert_eq!(
        store.event(&dead[0]).await.unwrap().unwrap().state,
        OutboxState::Pending
    );
    for id in [dead[0].as_str(), "evt_x", "../etc"] {
        let e = api::replay_dead_letter(&store, &w, id, 4)
            .await
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 404);
    }
    let e = api::event_stream(
        &store,
        &w,
        &sid("a"),
        Some("garbage".into()),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
}
