//! Router throughput and latency against the obvious alternative, in the same run: `wrk`
//! against a trivial backend **directly**, through **nginx `proxy_pass`** (Debian's nginx,
//! upstream keep-alive to the same backend) and through the **router** (`scripts/bench router`,
//! or `cargo bench --bench router`).
//!
//! Everything runs on this machine: the built-in Consul agent and the router on one tokio
//! runtime, the backend on its own single-threaded runtime and thread, nginx and `wrk` as child
//! processes. nginx gets a generated config in a temporary directory and a free port, and is
//! stopped when the bench ends, whichever way it ends ([`Nginx`]'s `Drop`, and the kernel's
//! parent-death signal if this process is killed). The three targets are measured in turn
//! within each round, so load drift on a shared machine hits all of them alike; the median of
//! the rounds is reported. Settings: `WAFLEET_BENCH_SECS` (default 5) per run,
//! `WAFLEET_BENCH_CONNS` (default `1,16`) connection counts, `WAFLEET_BENCH_RUNS` (default 3)
//! rounds, `WAFLEET_BENCH_THREADS` (default 2) router runtime threads = nginx worker processes.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wafleet::auth::Authority;
use wafleet::consul::{Client, Config, PutOptions, SrvResolver};
use wafleet::consul_dev::AgentConfig;
use wafleet::ids::WorkspaceId;
use wafleet::router::consul::{ConsulKvSource, DnsSrvResolver};
use wafleet::router::{RouterConfig, RouterDeps, WatchOptions, watch_map};
use wafleet::shard::ShardMap;
use wafleet::shutdown::{CancellationToken, TaskTracker};
use warp::Filter;

const ADMIN: &str = "bench-admin-token";
/// Workspace tokens are what clients send on the hot path, so the bench uses one (the router
/// checks its HMAC; nginx and the backend just pass the header on).
const SECRET: &str = "bench-secret-0123456789";
const WS: &str = "bench-ws";
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

fn wrk(url: &str, conns: u32, secs: u64, auth: &str) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {auth}"),
            url,
        ])
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

/// The median of each figure over the rounds (taken separately: a round's p99 outlier must
/// not pick the reported req/s).
fn median(runs: &[Run]) -> Run {
    let med = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Run {
        rps: med(|r| r.rps),
        p50_us: med(|r| r.p50_us),
        p99_us: med(|r| r.p99_us),
    }
}

/// A port the kernel just handed out on loopback. nginx cannot report the port it bound, so
/// it is given one that was free a moment ago (the window is microseconds).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Debian's nginx as a reverse proxy to `backend`, with upstream keep-alive, running as a
/// child for as long as this value lives. Its config, pid file, logs and temp paths live in a
/// temporary directory removed afterwards.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(backend: SocketAddr, workers: usize) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // `proxy_http_version 1.1` plus an empty `Connection` header is what lets nginx keep
        // upstream connections open (`keepalive` alone does nothing on HTTP/1.0).
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             upstream backend {{ server {backend}; keepalive 64; }}\n\
             server {{\n    listen {addr};\n    location / {{\n\
             proxy_pass http://backend;\n      proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGTERM to nginx's
        // master when this process dies (even by SIGKILL), so nginx never outlives the bench.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("nginx runs (apt-get install nginx)");
        let mut nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        // Ready when a proxied request answers 200 (deadline, not a fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log"));
                panic!("nginx exited ({status}): {}", log.unwrap_or_default());
            }
            if http_get_ok(addr) {
                return nginx;
            }
            assert!(Instant::now() < deadline, "nginx never answered on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers and exits; SIGKILL only if it hangs.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child by pid, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking `GET PATH` with a fresh connection; true on a 200.
fn http_get_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {PATH} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
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

/// A resolver that always answers the one backend (profiling mode: no Consul in the process).
struct Static(SocketAddr);

impl wafleet::router::Resolver for Static {
    fn resolve(
        &self,
        _shard: u32,
    ) -> futures::future::BoxFuture<'_, Result<Vec<SocketAddr>, wafleet::router::ResolveError>>
    {
        let addr = self.0;
        Box::pin(async move { Ok(vec![addr]) })
    }
}

/// Profiling mode (`WAFLEET_BENCH_SERVE_ONLY=<backend addr>`, used by `scripts/bench
/// router-profile`): only the router runs in this process, with a fixed one-shard map and a
/// fixed instance, so an instruction profile of the process is the request path and nothing
/// else (no Consul agent, no backend, no load generator). Prints the readiness line and serves
/// until SIGTERM.
fn serve_only(backend: &str, threads: usize) {
    let backend: SocketAddr = backend.parse().expect("WAFLEET_BENCH_SERVE_ONLY=<ip:port>");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("router runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind router");
        let addr = listener.local_addr().expect("router addr");
        let (_tx, maps) = tokio::sync::watch::channel(Some(Arc::new(ShardMap::uniform(1))));
        let deps = RouterDeps {
            maps,
            resolver: Arc::new(Static(backend)),
            authority: Authority::new(Some(ADMIN.into()), vec![SECRET.into()]).expect("authority"),
            shard_admin: None,
        };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            term.recv().await;
            stop.cancel();
        });
        println!("{}", json!({"ready": true, "http": addr}));
        wafleet::router::run(listener, RouterConfig::default(), deps, cancel)
            .await
            .expect("router");
    });
}

fn main() {
    // `cargo bench` passes `--bench`; this bench takes its settings from the environment.
    let env = |k: &str| std::env::var(k).ok();
    let secs: u64 = env("WAFLEET_BENCH_SECS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rounds: usize = env("WAFLEET_BENCH_RUNS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let threads: usize = env("WAFLEET_BENCH_THREADS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    if let Some(backend) = env("WAFLEET_BENCH_SERVE_ONLY") {
        return serve_only(&backend, threads);
    }
    let conns: Vec<u32> = env("WAFLEET_BENCH_CONNS")
        .unwrap_or_else(|| "1,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let authority = Authority::new(Some(ADMIN.into()), vec![SECRET.into()]).expect("authority");
    let token = authority
        .mint(&WorkspaceId::new(WS).expect("workspace id"))
        .expect("a secret is configured");
    let backend = start_backend();
    let nginx = Nginx::start(backend, threads);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("router runtime");
    let cancel = CancellationToken::new();
    let router = rt.block_on(start_router(backend, authority, cancel.clone()));

    println!(
        "router bench: wrk -t1, {secs}s per run, median of {rounds} rounds, GET {PATH} (small JSON \
         answer), workspace token; router threads = nginx workers = {threads}\n"
    );
    println!(
        "| target | connections | req/s | p50 | p99 | req/s vs nginx | p99 vs nginx |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    let targets = [
        ("direct", format!("http://{backend}{PATH}")),
        ("nginx", format!("http://{}{PATH}", nginx.addr)),
        ("router", format!("http://{router}{PATH}")),
    ];
    for &c in &conns {
        // Warm-up: connections, pools and caches.
        for (_, url) in &targets {
            let _ = wrk(url, c, 1, &token);
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
        for _ in 0..rounds {
            for (i, (_, url)) in targets.iter().enumerate() {
                runs[i].push(wrk(url, c, secs, &token));
            }
        }
        let med: Vec<Run> = runs.iter().map(|r| median(r)).collect();
        let reference = med[1];
        for ((name, _), (m, all)) in targets.iter().zip(med.iter().zip(&runs)) {
            let each: Vec<String> = all.iter().map(|r| format!("{:.0}", r.rps)).collect();
            println!(
                "| {name} | {c} | {:.0} | {:.0} µs | {:.0} µs | {:.2}× | {:.2}× |",
                m.rps,
                m.p50_us,
                m.p99_us,
                m.rps / reference.rps,
                m.p99_us / reference.p99_us,
            );
            eprintln!("  {name} -c{c} req/s per round: {}", each.join(", "));
        }
    }
    cancel.cancel();
    drop(nginx);
}

/// Starts the built-in Consul agent, registers the backend as shard 0's worker, writes a
/// one-shard map and runs the production router wiring; returns its address once a proxied
/// request answers 200.
async fn start_router(
    backend: SocketAddr,
    authority: Authority,
    cancel: CancellationToken,
) -> SocketAddr {
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
        authority,
        shard_admin: None,
    };
    tokio::spawn(wafleet::router::run(
        listener,
        RouterConfig::default(),
        deps,
        cancel.clone(),
    ));
    // Ready when a proxied request answers 200 (the map and the instance are loaded).
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
            return addr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "router never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
