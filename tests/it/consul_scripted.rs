//! The blocking-watch loop against a scripted HTTP server on loopback: which `?index=` it
//! sends after each answer (strictly-greater / reset-to-0 / never-below-1 rules), that errors
//! keep the last good value and are retried, that only changed whole results are published,
//! and that cancellation ends the loop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wafleet::consul::watch::{WatchOptions, WatchState, watch_key};
use wafleet::consul::{Client, Config};
use wafleet::shutdown::CancellationToken;
use warp::Filter;

type Answer = (u16, Option<u64>, String);

/// Serves `GET /v1/kv/k`; `script(n)` answers the n-th request (0-based); the `index`
/// parameter of every request is recorded (`None` when absent).
async fn serve(
    script: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Option<u64>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let script = Arc::new(script);
    let filter = warp::path!("v1" / "kv" / "k")
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .map(move |q: std::collections::HashMap<String, String>| {
            let n = {
                let mut l = log.lock().unwrap();
                l.push(q.get("index").and_then(|i| i.parse().ok()));
                l.len() - 1
            };
            let (status, index, body) = script(n);
            let mut r = warp::http::Response::builder().status(status);
            if let Some(i) = index {
                r = r.header("X-Consul-Index", i.to_string());
            }
            r.body(body).unwrap()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(filter).incoming(listener).run());
    (addr, seen)
}

fn kv(value: &str, modify: u64) -> String {
    use base64::Engine as _;
    let v = base64::engine::general_purpose::STANDARD.encode(value);
    format!(
        r#"[{{"Key":"k","CreateIndex":1,"ModifyIndex":{modify},"LockIndex":0,"Flags":0,"Value":"{v}"}}]"#
    )
}

fn fast() -> WatchOptions {
    WatchOptions {
        wait: Duration::from_secs(2),
        limiter_burst: 2,
        limiter_refill: Duration::from_millis(1),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..WatchOptions::default()
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn index_rules_reset_backwards_and_never_go_below_one() {
    // Answers' indexes: 10, 10, 5 (backwards), 7, 0 (backwards), 0, 12, then errors forever.
    let answers = [10u64, 10, 5, 7, 0, 0, 12];
    let (addr, seen) = serve(move |n| match answers.get(n) {
        Some(i) => (200, Some(*i), kv("v", 3)),
        None => (500, None, "rpc error: done".into()),
    })
    .await;
    let client = Client::new(&Config::http(addr)).unwrap();
    let cancel = CancellationToken::new();
    let _rx = watch_key(&client, "k", fast(), cancel.clone()).unwrap();
    wait_until("8 requests", || seen.lock().unwrap().len() >= 8).await;
    cancel.cancel();
    let sent: Vec<Option<u64>> = seen.lock().unwrap()[..8].to_vec();
    assert_eq!(
        sent,
        vec![
            None,
            Some(10),
            Some(10),
            None,
            Some(7),
            None,
            Some(1),
            Some(12)
        ],
        "first non-blocking; follow the index; reset to 0 when it goes backwards; 0 becomes 1"
    );
}

#[tokio::test]
async fn errors_keep_the_last_value_and_only_changes_are_published() {
    let (addr, seen) = serve(|n| match n {
        0 => (200, Some(3), kv("A", 3)),
        1 => (200, Some(4), kv("A", 3)), // woke up, same value: not republished
        2 | 3 => (500, None, "rpc error: leader lost".into()),
        4 => (429, None, "rate limited".into()),
        5 => (200, Some(9), "[{\"not\": \"a kv".into()), // undecodable: an error, not a publish
        6 => (200, Some(9), kv("B", 9)),
        _ => (503, None, "unavailable".into()),
    })
    .await;
    let client = Client::new(&Config::http(addr)).unwrap();
    let cancel = CancellationToken::new();
    let mut rx = watch_key(&client, "k", fast(), cancel.clone()).unwrap();
    let mut published = Vec::new();
    loop {
        rx.changed().await.expect("watch alive");
        let state = rx.borrow_and_update().clone();
        match state {
            WatchState::Loading => panic!("Loading is never republished"),
            WatchState::Ready { value, index } => {
                let v =
                    String::from_utf8(value.expect("key exists").value_bytes().to_vec()).unwrap();
                published.push((v.clone(), index));
                if v == "B" {
                    break;
                }
            }
        }
    }
    assert_eq!(published, vec![("A".to_string(), 3), ("B".to_string(), 9)]);
    assert!(seen.lock().unwrap().len() >= 7);
    // The failing requests after B keep B published.
    wait_until("errors after B", || seen.lock().unwrap().len() >= 9).await;
    assert!(matches!(&*rx.borrow(), WatchState::Ready { index: 9, .. }));
    cancel.cancel();
}

#[tokio::test]
async fn cancellation_and_dropping_receivers_end_the_loop() {
    let (addr, seen) = serve(|n| (200, Some(n as u64 + 1), kv("v", n as u64 + 1))).await;
    let client = Client::new(&Config::http(addr)).unwrap();
    let cancel = CancellationToken::new();
    let mut rx = watch_key(&client, "k", fast(), cancel.clone()).unwrap();
    rx.changed().await.unwrap();
    cancel.cancel();
    // The sender is dropped when the loop ends, which ends `changed()` with an error.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while rx.changed().await.is_ok() {}
    })
    .await;
    assert!(ended.is_ok(), "loop did not stop after cancel");
    let count = seen.lock().unwrap().len();
    assert!(count >= 1);

    // Dropping every receiver also stops a loop (no token cancelled).
    let (addr2, seen2) = serve(|n| (200, Some(n as u64 + 1), kv("v", n as u64 + 1))).await;
    let client2 = Client::new(&Config::http(addr2)).unwrap();
    let tracker = wafleet::shutdown::TaskTracker::new();
    let opts = WatchOptions {
        tracker: Some(tracker.clone()),
        ..fast()
    };
    let mut rx2 = watch_key(&client2, "k", opts, CancellationToken::new()).unwrap();
    rx2.changed().await.unwrap();
    drop(rx2);
    tracker.close();
    tokio::time::timeout(Duration::from_secs(20), tracker.wait())
        .await
        .expect("watch task ended after its receivers were dropped");
    assert!(!seen2.lock().unwrap().is_empty());
}

#[tokio::test]
async fn invalid_keys_never_start_a_watch() {
    let client = Client::new(&Config::http("127.0.0.1:1".parse().unwrap())).unwrap();
    assert!(watch_key(&client, "a//b", fast(), CancellationToken::new()).is_err());
}
