//! Router throughput and added latency, measured with `wrk` against a trivial backend, directly
//! and through the router in the same run (`scripts/bench`, or `cargo bench --bench router`).
//!
//! Everything runs on this machine: the built-in Consul agent and the router on one tokio
//! runtime, the backend on its own single-threaded runtime and thread, `wrk` as a child
//! process. The numbers are loopback numbers on a shared machine: compare the two rows of one
//! run, not runs across machines. Settings: `WAFLEET_BENCH_SECS` (default 5) per run,
//! `WAFLEET_BENCH_CONNS` (default `1,16`) connection counts.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wafleet::auth::Authority;
use wafleet::consul::{Client, Config, PutOptions, SrvResolver};
use wafleet::consul_dev::AgentConfig;
use wafleet::router::consul::{ConsulKvSource, DnsSrvResolver};
use wafleet::router::{RouterConfig, RouterDeps, WatchOptions, watch_map};
use wafleet::shard::ShardMap;
use wafleet::shutdown::{CancellationToken, TaskTracker};
use warp::Filter;

const ADMIN: &str = "bench-admin-token";
const PATH: &str = "/v1/workspaces/bench-ws/sessions";

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn parse_latency(v: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * mult)
}

fn wrk(url: &str, conns: u32, secs: u64, auth: bool) -> Run {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if auth {
        cmd.args(["-H", &format!("Authorization: Bearer {ADMIN}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = Run {
        rps: 0.0,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
    };
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["50%", v] => run.p50_us = parse_latency(v).unwrap_or(f64::NAN),
            ["99%", v] => run.p99_us = parse_latency(v).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => run.rps = v.parse().unwrap_or(0.0),
            ["Non-2xx", ..] => panic!("wrk saw errors against {url}:\n{text}"),
            _ => {}
        }
    }
    assert!(run.rps > 0.0, "wrk produced no result for {url}:\n{text}");
    run
}

/// The trivial backend: a small JSON answer for any path, on its own thread and runtime.
fn start_backend() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("backend runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind backend");
            tx.send(listener.local_addr().expect("backend addr"))
                .expect("send addr");
            let route = warp::any().map(|| {
                warp::reply::with_header(
                    warp::reply::json(&json!({"sessions": []})),
                    "x-wafleet-shard",
                    "0",
                )
            });
            warp::serve(route).incoming(listener).run().await;
        });
    });
    rx.recv().expect("backend started")
}

fn main() {
    // `cargo bench` passes `--bench`; this bench takes its settings from the environment.
    let secs: u64 = std::env::var("WAFLEET_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let conns: Vec<u32> = std::env::var("WAFLEET_BENCH_CONNS")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let backend = start_backend();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("router runtime");
    let cancel = CancellationToken::new();
    let router = rt.block_on(async {
        let agent = wafleet::consul_dev::spawn(AgentConfig::default(), cancel.clone())
            .await
            .expect("agent");
        let http = Client::new(&Config::http(agent.http_addr())).expect("consul client");
        let raw = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let reg = json!({
            "ID": "wafleet-worker-0", "Name": "wafleet-worker", "Tags": ["shard-0"],
            "Address": "127.0.0.1", "Port": backend.port(),
            "Checks": [{"CheckID": "wafleet-worker-0:ttl", "TTL": "600s"}],
        });
        for (path, body) in [
            ("/v1/agent/service/register", reg),
            ("/v1/agent/check/pass/wafleet-worker-0:ttl", json!({})),
        ] {
            let r = raw
                .put(format!("{}{path}", agent.http_url()))
                .json(&body)
                .send()
                .await
                .expect("agent");
            assert!(r.status().is_success(), "{path}");
        }
        let create = PutOptions {
            cas: Some(0),
            ..PutOptions::default()
        };
        assert!(
            http.kv_put("wafleet/shardmap", &ShardMap::uniform(1).to_json(), &create)
                .await
                .expect("put map")
        );
        let tracker = TaskTracker::new();
        let maps = watch_map(
            Arc::new(ConsulKvSource::new(http, "wafleet/shardmap".into())),
            WatchOptions::default(),
            &tracker,
            cancel.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind router");
        let addr = listener.local_addr().expect("router addr");
        let deps = RouterDeps {
            maps,
            resolver: Arc::new(DnsSrvResolver(
                SrvResolver::new(agent.dns_addr()).expect("resolver"),
            )),
            authority: Authority::new(Some(ADMIN.into()), vec![]).expect("authority"),
            shard_admin: None,
        };
        tokio::spawn(wafleet::router::run(
            listener,
            RouterConfig::default(),
            deps,
            cancel.clone(),
        ));
        // Ready when a proxied request answers 200.
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = client
                .get(format!("http://{addr}{PATH}"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "router never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        addr
    });

    println!("router bench: wrk -t1, {secs}s per run, GET {PATH} (small JSON answer)\n");
    println!(
        "| target | connections | req/s | p50 | p99 | added p50 | added p99 |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for &c in &conns {
        // Warm-up: connections, pools and caches.
        let _ = wrk(&format!("http://{backend}{PATH}"), c, 1, false);
        let _ = wrk(&format!("http://{router}{PATH}"), c, 1, true);
        let direct = wrk(&format!("http://{backend}{PATH}"), c, secs, false);
        let via = wrk(&format!("http://{router}{PATH}"), c, secs, true);
        println!(
            "| direct | {c} | {:.0} | {:.0} µs | {:.0} µs | | |",
            direct.rps, direct.p50_us, direct.p99_us
        );
        println!(
            "| router | {c} | {:.0} | {:.0} µs | {:.0} µs | {:+.0} µs | {:+.0} µs |",
            via.rps,
            via.p50_us,
            via.p99_us,
            via.p50_us - direct.p50_us,
            via.p99_us - direct.p99_us
        );
    }
    cancel.cancel();
}
