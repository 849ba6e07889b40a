//! The store's write path under concurrent writers: many sessions enqueueing at once into one
//! shard database (`journal_mode=DELETE`, `synchronous=FULL`, as in production), the way a
//! worker does when clients send while its queues drain (`scripts/bench store`, or
//! `cargo bench --bench store`).
//!
//! Writers × enqueues per writer, several rounds; each enqueue's latency is measured from the
//! call to its commit. What matters is the tail (a slow commit is a slow `202` for a client)
//! and the commits per second. A custom harness rather than criterion: criterion reports a
//! mean per iteration, and the question here is the distribution under contention. Settings:
//! `WAFLEET_BENCH_WRITERS` (default 30), `WAFLEET_BENCH_ENQUEUES` (default 20),
//! `WAFLEET_BENCH_ROUNDS` (default 5).

use std::time::{Duration, Instant};

use wafleet::ids::{SessionId, WorkspaceId};
use wafleet::store::{EnqueueRequest, MessageKind, NewMessage, Store};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One round: `writers` tasks each enqueue `per_writer` messages; answers every latency and
/// the round's wall time.
async fn round(
    store: &Store,
    round: usize,
    writers: usize,
    per_writer: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let ws = WorkspaceId::new(format!("bench-{w}")).expect("valid id");
            let session = SessionId::new("default").expect("valid id");
            let mut lat = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let message = NewMessage {
                    id: format!("msg_{round}_{w}_{i}"),
                    workspace: ws.clone(),
                    session: session.clone(),
                    to: "4915112345678".into(),
                    kind: MessageKind::Text,
                    body: serde_json::json!({"to": "4915112345678", "text": "bench"}),
                };
                let t = Instant::now();
                store
                    .enqueue_message(EnqueueRequest {
                        message: &message,
                        idempotency: None,
                        queue_cap: u64::MAX,
                        event: None,
                        now_ms: 0,
                    })
                    .await
                    .expect("enqueue");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    (all, started.elapsed())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let writers = setting("WAFLEET_BENCH_WRITERS", 30);
    let per_writer = setting("WAFLEET_BENCH_ENQUEUES", 20);
    let rounds = setting("WAFLEET_BENCH_ROUNDS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("bench.db"))
            .await
            .expect("open store");
        println!(
            "store: {writers} writers x {per_writer} enqueues, {rounds} rounds (latency in ms)"
        );
        println!("| round | commits/s | p50 | p90 | p99 | max |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for r in 0..rounds {
            let (mut lat, wall) = round(&store, r, writers, per_writer).await;
            lat.sort();
            println!(
                "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
                r + 1,
                lat.len() as f64 / wall.as_secs_f64(),
                pct(&lat, 0.5),
                pct(&lat, 0.9),
                pct(&lat, 0.99),
                pct(&lat, 1.0)
            );
        }
    });
}
