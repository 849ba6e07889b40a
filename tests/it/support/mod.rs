//! Test harness: spawns the real `wafleet` binary (`wafleet consul-dev`, `wafleet worker`,
//! `wafleet router`, …) on port 0 and waits for its readiness JSON line; plus small helpers to
//! read and write Consul KV and to call the HTTP API. Shared by every module of the
//! integration-test binary (`tests/it/main.rs`).
//!
//! Every child gets its own stderr log under the fleet's temporary directory; when a wait
//! times out the panic message includes the tail of that log. Children are killed (SIGKILL)
//! when their [`Proc`] is dropped, so a failing test leaves nothing behind.

pub mod hooks;
pub mod wa;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Admin token every fleet child is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Workspace-token secret every fleet child is started with.
pub const TOKEN_SECRET: &str = "test-token-secret-0123456789";
/// Default deadline for a child to print its readiness line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `wafleet` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wafleet")
}

/// Polls `f` every 100 ms until it returns `Some` or `deadline` passes (then panics with
/// `what`). For waiting on conditions; never a fixed sleep.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port (bound then released; for a child whose address is needed before it
/// is ready, e.g. a worker that waits for its shard lock).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

// === Proc ===

/// A running child process of the `wafleet` binary.
pub struct Proc {
    /// A label for messages (`worker-1`).
    pub name: String,
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// The readiness line, once seen.
    pub ready: Option<Value>,
    lines: Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
}

impl Proc {
    /// Starts `wafleet <args…>` with `envs`, stderr to `<logdir>/<name>.log`. Does not wait.
    pub fn start(name: &str, args: &[String], envs: &[(String, String)], logdir: &Path) -> Proc {
        Proc::start_with(name, &[], args, envs, logdir)
    }

    /// Like [`Proc::start`], run through `wrapper` (e.g. `ip netns exec <ns>`, which execs the
    /// binary: the pid is still wafleet's).
    pub fn start_with(
        name: &str,
        wrapper: &[String],
        args: &[String],
        envs: &[(String, String)],
        logdir: &Path,
    ) -> Proc {
        std::fs::create_dir_all(logdir).expect("log dir");
        let log = logdir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .env_remove("CONSUL_HTTP_TOKEN")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn wafleet");
        let stdout = child.stdout.take().expect("piped stdout");
        Proc {
            name: name.to_owned(),
            child,
            log,
            ready: None,
            lines: Some(BufReader::new(stdout).lines()),
        }
    }

    /// Starts the child and waits for its readiness line.
    pub async fn spawn(
        name: &str,
        args: &[String],
        envs: &[(String, String)],
        logdir: &Path,
    ) -> Proc {
        let mut p = Proc::start(name, args, envs, logdir);
        p.wait_ready(READY_TIMEOUT).await;
        p
    }

    /// Waits for the `{"ready":true,…}` line on stdout (panics with the log tail on timeout or
    /// exit).
    pub async fn wait_ready(&mut self, timeout: Duration) -> &Value {
        let lines = self.lines.as_mut().expect("wait_ready called twice");
        let r = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v.get("ready") == Some(&Value::Bool(true))
                {
                    return Some(v);
                }
            }
            None
        })
        .await;
        match r {
            Ok(Some(v)) => {
                // Keep draining stdout so the child never blocks on a full pipe.
                if let Some(mut lines) = self.lines.take() {
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                }
                self.ready = Some(v);
                self.ready.as_ref().expect("just set")
            }
            Ok(None) => panic!(
                "{} exited before it was ready\n{}",
                self.name,
                self.log_tail(40)
            ),
            Err(_) => panic!(
                "{} not ready within {timeout:?}\n{}",
                self.name,
                self.log_tail(40)
            ),
        }
    }

    /// An address field of the readiness line (`"http"`, `"dns"`).
    pub fn addr(&self, key: &str) -> SocketAddr {
        self.ready
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{}: no address {key:?} in {:?}", self.name, self.ready))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends a signal with `kill(1)` (`TERM`, `INT`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid();
        assert!(pid > 0, "{} already exited", self.name);
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits for the child to exit; panics with the log tail after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => panic!("{}: wait failed: {e}", self.name),
            Err(_) => panic!(
                "{} did not exit within {timeout:?}\n{}",
                self.name,
                self.log_tail(40)
            ),
        }
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines of its stderr log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[start..].join("\n")
        )
    }
}

// === Consul helpers (raw HTTP, so tests check what is really stored) ===

/// A plain HTTP client for tests (no pooling surprises across restarts).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// `GET /v1/kv/<key>` → the first entry, `None` on 404.
pub async fn kv_get(consul: SocketAddr, key: &str) -> Option<Value> {
    let r = http()
        .get(format!("http://{consul}/v1/kv/{key}"))
        .send()
        .await
        .ok()?;
    if r.status() == 404 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v.get(0).cloned()
}

/// `GET /v1/kv/<prefix>?recurse` → key → entry.
pub async fn kv_list(consul: SocketAddr, prefix: &str) -> BTreeMap<String, Value> {
    let r = http()
        .get(format!("http://{consul}/v1/kv/{prefix}?recurse"))
        .send()
        .await
        .expect("kv list");
    if r.status() == 404 {
        return BTreeMap::new();
    }
    let v: Vec<Value> = r.json().await.expect("kv list json");
    v.into_iter()
        .filter_map(|e| Some((e.get("Key")?.as_str()?.to_owned(), e)))
        .collect()
}

/// Workspace → holder session for every workspace lock key that is held.
pub async fn workspace_lock_holders(consul: SocketAddr) -> BTreeMap<String, String> {
    kv_list(consul, "wafleet/locks/workspaces/")
        .await
        .into_iter()
        .filter_map(|(k, e)| {
            let s = e.get("Session")?.as_str()?.to_owned();
            (!s.is_empty()).then(|| (k.rsplit('/').next().unwrap_or_default().to_owned(), s))
        })
        .collect()
}

/// `PUT /v1/kv/<key>` with raw bytes (no CAS: tests set up state).
pub async fn kv_put(consul: SocketAddr, key: &str, body: impl Into<reqwest::Body>) {
    let r = http()
        .put(format!("http://{consul}/v1/kv/{key}"))
        .body(body)
        .send()
        .await
        .expect("kv put");
    assert!(r.status().is_success(), "kv put {key}: {}", r.status());
}

/// Writes a shard map.
pub async fn put_map(consul: SocketAddr, map: &wafleet::shard::ShardMap) {
    kv_put(consul, "wafleet/shardmap", map.to_json()).await;
}

// === Fleet ===

/// A temporary data directory, a built-in Consul agent, and the children started on it.
pub struct Fleet {
    /// Holds data and logs; removed on drop.
    pub dir: tempfile::TempDir,
    /// The built-in agent.
    pub consul: Proc,
}

impl Fleet {
    /// Starts `wafleet consul-dev` on port 0, with its remote listener (another agent of the
    /// datacenter) that every worker gets as its fallback.
    pub async fn start() -> Fleet {
        Fleet::start_with(&[]).await
    }

    /// [`Fleet::start`] with extra `consul-dev` arguments.
    pub async fn start_with(extra: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        // Workers refuse a data directory without the shared-volume sentinel.
        wafleet::volume::init(&dir.path().join("data"), Some("test-volume")).expect("volume init");
        let mut args: Vec<String> = [
            "consul-dev",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "127.0.0.1:0",
            "--remote-http",
            "127.0.0.1:0",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        let consul = Proc::spawn("consul-dev", &args, &[], &dir.path().join("logs")).await;
        Fleet { dir, consul }
    }

    /// The agent's remote listener ("another agent of the datacenter", not stopped by the
    /// `agent-restart` fault).
    pub fn consul_remote(&self) -> SocketAddr {
        self.consul.addr("remote_http")
    }

    /// The agent's HTTP address.
    pub fn consul_http(&self) -> SocketAddr {
        self.consul.addr("http")
    }

    /// The agent's DNS address.
    pub fn consul_dns(&self) -> SocketAddr {
        self.consul.addr("dns")
    }

    /// The shared data directory (NFS in production).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The log directory.
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Environment for every child: Consul address and DNS, tokens.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CONSUL_HTTP_ADDR".into(),
                format!("http://{}", self.consul_http()),
            ),
            ("WAFLEET_CONSUL_DNS".into(), self.consul_dns().to_string()),
            (
                "WAFLEET_CONSUL_FALLBACK_ADDRS".into(),
                format!("http://{}", self.consul_remote()),
            ),
            ("WAFLEET_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("WAFLEET_TOKEN_SECRET".into(), TOKEN_SECRET.into()),
        ]
    }

    /// Arguments of a worker for `shard` on `listen`, with short test timings: TTL 10 s (Consul's
    /// minimum; fencing at ~6.7 s), lock delay 1 s, drain grace 20 s.
    pub fn worker_args(&self, shard: u32, listen: &str) -> Vec<String> {
        [
            "worker",
            "--shard",
            &shard.to_string(),
            "--data",
            &self.data().display().to_string(),
            "--listen",
            listen,
            "--advertise",
            listen,
            "--session-ttl-secs",
            "10",
            "--lock-delay-secs",
            "1",
            "--drain-grace-secs",
            "20",
            // No Chromium: ownership and routing tests; tests of real sessions replace it.
            "--session-host",
            "placeholder",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Arguments of a worker for shard 0 on `127.0.0.1:<port>` running the real engine (Chromium
    /// per session) against the simulator at `sim`.
    pub fn engine_worker_args(&self, port: u16, sim: SocketAddr) -> Vec<String> {
        let mut args = self.worker_args(0, &format!("127.0.0.1:{port}"));
        if let Some(i) = args.iter().position(|a| a == "--session-host") {
            args.drain(i..i + 2);
        }
        args.extend(["--wa-url".into(), format!("http://{sim}/")]);
        args
    }

    /// Starts a worker on a fresh port and waits until it is ready.
    pub async fn worker(&self, shard: u32) -> Worker {
        let port = free_port();
        let mut w = self.worker_unready(shard, port);
        w.proc.wait_ready(READY_TIMEOUT).await;
        w
    }

    /// Starts a worker on `port` without waiting (it may wait for its shard lock).
    pub fn worker_unready(&self, shard: u32, port: u16) -> Worker {
        let listen = format!("127.0.0.1:{port}");
        let name = format!("worker-{shard}-{port}");
        let proc = Proc::start(
            &name,
            &self.worker_args(shard, &listen),
            &self.env(),
            &self.logs(),
        );
        Worker {
            shard,
            addr: listen.parse().expect("addr"),
            proc,
        }
    }
}

/// A worker child and where it listens.
pub struct Worker {
    /// Its shard.
    pub shard: u32,
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// The process.
    pub proc: Proc,
}

/// One HTTP answer, reduced to what the tests check.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `X-Wafleet-Shard`, parsed.
    pub shard: Option<u32>,
    /// `Retry-After` present.
    pub retry_after: bool,
    /// JSON body (Null when not JSON).
    pub body: Value,
}

/// Sends a request with the admin token; `None` on a transport error (connection refused…).
pub async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> Option<Answer> {
    let mut req = http().request(method, url).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    Some(answer(req.send().await.ok()?).await)
}

/// Reads a response into an [`Answer`] (status, serving shard, `Retry-After`, JSON body).
pub async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let shard = r
        .headers()
        .get("x-wafleet-shard")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let retry_after = r.headers().contains_key("retry-after");
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        shard,
        retry_after,
        body,
    }
}

impl Worker {
    /// `GET /v1/workspaces/<ws>/sessions` on this worker.
    pub async fn list(&self, ws: &str) -> Option<Answer> {
        call(
            reqwest::Method::GET,
            &format!("http://{}/v1/workspaces/{ws}/sessions", self.addr),
            None,
        )
        .await
    }

    /// `POST /v1/workspaces/<ws>/sessions` on this worker.
    pub async fn create(&self, ws: &str, session: &str) -> Option<Answer> {
        call(
            reqwest::Method::POST,
            &format!("http://{}/v1/workspaces/{ws}/sessions", self.addr),
            Some(serde_json::json!({"session": session, "metadata": {"test": true}})),
        )
        .await
    }

    /// `GET /v1/worker/state` (admin).
    pub async fn state(&self) -> Option<Value> {
        let a = call(
            reqwest::Method::GET,
            &format!("http://{}/v1/worker/state", self.addr),
            None,
        )
        .await?;
        (a.status == 200).then_some(a.body)
    }

    /// `GET /readyz` status code.
    pub async fn readyz(&self) -> Option<u16> {
        call(
            reqwest::Method::GET,
            &format!("http://{}/readyz", self.addr),
            None,
        )
        .await
        .map(|a| a.status)
    }
}

// === Router ===

/// A router child.
pub struct Router {
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// The process (killed when this is dropped).
    #[allow(dead_code)]
    pub proc: Proc,
}

impl Fleet {
    /// Starts `wafleet router --listen 127.0.0.1:0` and waits until its `/readyz` answers 200
    /// (a shard map is loaded).
    pub async fn router(&self) -> Router {
        let args = [
            "router",
            "--listen",
            "127.0.0.1:0",
            "--dns-cache-ttl-ms",
            "500",
        ]
        .map(String::from);
        let proc = Proc::spawn("router", &args, &self.env(), &self.logs()).await;
        let addr = proc.addr("http");
        let url = format!("http://{addr}/readyz");
        wait_for("router ready (map loaded)", READY_TIMEOUT, || {
            let url = url.clone();
            async move {
                let a = call(reqwest::Method::GET, &url, None).await?;
                (a.status == 200).then_some(())
            }
        })
        .await;
        Router { addr, proc }
    }
}

impl Router {
    /// `GET /v1/workspaces/<ws>/sessions` through the router.
    pub async fn list(&self, ws: &str) -> Option<Answer> {
        call(
            reqwest::Method::GET,
            &format!("http://{}/v1/workspaces/{ws}/sessions", self.addr),
            None,
        )
        .await
    }
}
