//! I/O adapter: the dev fleet under test. Starts `wafleet dev` as a child process (data in a
//! temp dir, every port 0) or attaches to a running one through `<data>/dev/state.json`; reads
//! the state, signals workers, starts an extra worker for scale-out, and talks to the built-in
//! Consul agent (KV reads, fault injection). Everything stays on 127.0.0.1, except in the
//! partition's netns mode: one worker runs inside a network namespace (`wafleet dev
//! --worker-netns`) and what it must reach (Consul agent, simulator) listens on the host end
//! of its veth pair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::model::WorkerSnap;

mod running;

/// Why the fleet could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Process or file error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// HTTP error talking to the fleet.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The fleet did not reach a state in time, or answered something unexpected.
    #[error("{0}")]
    Fleet(String),
}

/// One worker in `state.json`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct WorkerEntry {
    /// Shard.
    pub shard: u32,
    /// Current pid.
    pub pid: u32,
    /// HTTP address.
    pub addr: String,
}

/// `<data>/dev/state.json` (DESIGN §10); unknown keys are ignored, missing ones are `None`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DevState {
    /// `wafleet dev` pid.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Consul HTTP address.
    #[serde(default)]
    pub consul_http: Option<String>,
    /// Consul DNS address.
    #[serde(default)]
    pub consul_dns: Option<String>,
    /// Router address.
    #[serde(default)]
    pub router: Option<String>,
    /// Simulator address.
    #[serde(default)]
    pub sim: Option<String>,
    /// WhatsApp Web URL the workers use.
    #[serde(default)]
    pub wa_url: Option<String>,
    /// Data directory.
    #[serde(default)]
    pub data: Option<String>,
    /// File holding the admin token.
    #[serde(default)]
    pub admin_token_file: Option<String>,
    /// Other children's pids.
    #[serde(default)]
    pub pids: BTreeMap<String, u32>,
    /// Workers.
    #[serde(default)]
    pub workers: Vec<WorkerEntry>,
}

/// How to start a fleet.
#[derive(Debug, Clone)]
pub struct StartConfig {
    /// The `wafleet` binary.
    pub bin: PathBuf,
    /// Workers (= shards).
    pub workers: u32,
    /// Worker session TTL, seconds.
    pub session_ttl_secs: u64,
    /// Worker lock delay, seconds.
    pub lock_delay_secs: u64,
    /// Worker drain grace, seconds.
    pub drain_grace_secs: u64,
    /// Where `wafleet dev`'s stderr goes.
    pub log: PathBuf,
    /// Run one worker inside a network namespace (netns partition mode).
    pub netns: Option<NetnsPlan>,
    /// Set to `wafleet dev`'s pid as soon as it is spawned, so a signal during start-up can
    /// stop it cleanly.
    pub dev_pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// One worker inside a network namespace, and the host address it reaches the rest through.
#[derive(Debug, Clone)]
pub struct NetnsPlan {
    /// The worker's shard.
    pub shard: u32,
    /// The namespace.
    pub netns: String,
    /// The worker's address inside the namespace.
    pub inner_ip: std::net::Ipv4Addr,
    /// The host end's address: the Consul agent and the simulator listen there.
    pub host_ip: std::net::Ipv4Addr,
}

/// A worker this suite started itself (scale-out, when `wafleet dev` cannot add one).
#[derive(Debug)]
pub struct ExtraWorker {
    /// Shard.
    pub shard: u32,
    /// Pid.
    pub pid: u32,
    /// HTTP address.
    pub addr: String,
    child: Child,
}

/// The fleet under test.
pub struct Fleet {
    /// The data directory.
    pub data: PathBuf,
    /// `<data>/dev/state.json`.
    pub state_path: PathBuf,
    /// Admin token.
    pub admin: String,
    /// Token secret (known only when we started the fleet).
    pub secret: Option<String>,
    /// The `wafleet` binary (for `shards apply` and extra workers).
    pub bin: PathBuf,
    /// Worker flags, for an extra worker.
    pub worker_flags: Vec<String>,
    /// HTTP client (short timeouts).
    pub http: reqwest::Client,
    dev: std::sync::Mutex<Option<Child>>,
    extra: std::sync::Mutex<Vec<ExtraWorker>>,
    _tmp: Option<tempfile::TempDir>,
}

fn hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the first stdout line with `"ready": true` within `timeout`.
async fn wait_ready_line(
    child: &mut Child,
    timeout: Duration,
) -> Result<serde_json::Value, FleetError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| FleetError::Fleet("child has no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + timeout;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| FleetError::Fleet(format!("no readiness line within {timeout:?}")))??;
        let Some(line) = line else {
            return Err(FleetError::Fleet("child exited before it was ready".into()));
        };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v.get("ready").and_then(|r| r.as_bool()) == Some(true)
        {
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(v);
        }
    }
}

/// Which long flags `wafleet <sub> --help` lists.
async fn supported_flags(bin: &Path, sub: &str) -> Result<Vec<String>, FleetError> {
    let out = Command::new(bin).args([sub, "--help"]).output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches([',', '=']).to_owned())
        .collect())
}

/// Sends a signal with `kill(1)` (no unsafe code in this crate).
pub async fn signal(pid: u32, sig: &str) -> Result<(), FleetError> {
    let st = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    if st.success() {
        Ok(())
    } else {
        Err(FleetError::Fleet(format!("kill -s {sig} {pid} failed")))
    }
}

impl Fleet {
    /// Starts `wafleet dev` in a fresh temp dir and waits for its readiness line and
    /// `state.json` with every worker.
    pub async fn start(cfg: &StartConfig) -> Result<Fleet, FleetError> {
        let tmp = tempfile::Builder::new()
            .prefix("wafleet-chaos-")
            .tempdir()?;
        let data = tmp.path().to_path_buf();
        let admin = hex(24);
        let secret = hex(32);
        let flags = supported_flags(&cfg.bin, "dev").await?;
        let mut args: Vec<String> = vec![
            "dev".into(),
            "--workers".into(),
            cfg.workers.to_string(),
            "--data".into(),
            data.display().to_string(),
            "--router-listen".into(),
            "127.0.0.1:0".into(),
        ];
        let mut worker_flags = Vec::new();
        // In netns mode the namespaced worker reaches the agent and the simulator over the
        // veth pair, so they listen on its host end (host processes reach it as well).
        let shared = match &cfg.netns {
            Some(plan) => {
                for flag in [
                    "--worker-netns",
                    "--consul-http",
                    "--consul-dns",
                    "--sim-listen",
                ] {
                    if !flags.iter().any(|f| f == flag) {
                        return Err(FleetError::Fleet(format!(
                            "netns mode needs `wafleet dev {flag}`, which this build does not have"
                        )));
                    }
                }
                args.extend([
                    "--worker-netns".to_owned(),
                    format!("{}={}@{}", plan.shard, plan.netns, plan.inner_ip),
                ]);
                format!("{}:0", plan.host_ip)
            }
            None => "127.0.0.1:0".to_owned(),
        };
        for (flag, value) in [
            ("--consul-http", shared.clone()),
            ("--consul-dns", shared.clone()),
            // A free port, so a chaos run never collides with a `scripts/dev` fleet on 7070.
            ("--sim-listen", shared.clone()),
            ("--session-ttl-secs", cfg.session_ttl_secs.to_string()),
            ("--lock-delay-secs", cfg.lock_delay_secs.to_string()),
            ("--drain-grace-secs", cfg.drain_grace_secs.to_string()),
        ] {
            if flags.iter().any(|f| f == flag) {
                args.extend([flag.to_owned(), value.clone()]);
                if flag.ends_with("-secs") {
                    worker_flags.extend([flag.to_owned(), value]);
                }
            } else {
                tracing::warn!(
                    flag,
                    "wafleet dev does not accept this flag; using its default"
                );
            }
        }
        if let Some(parent) = cfg.log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let log = std::fs::File::create(&cfg.log)?;
        tracing::info!(data = %data.display(), ?args, "starting wafleet dev");
        let mut child = Command::new(&cfg.bin)
            .args(&args)
            .env("WAFLEET_ADMIN_TOKEN", &admin)
            .env("WAFLEET_TOKEN_SECRET", &secret)
            .env("WAFLEET_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        if let Some(pid) = child.id() {
            cfg.dev_pid.store(pid, std::sync::atomic::Ordering::SeqCst);
        }
        if let Err(e) = wait_ready_line(&mut child, Duration::from_secs(240)).await {
            // Stop it cleanly (its workers drain) rather than leaving them behind.
            if let Some(pid) = child.id() {
                let _ = signal(pid, "TERM").await;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
            return Err(e);
        }
        let state_path = data.join("dev").join("state.json");
        let fleet = Fleet {
            data,
            state_path,
            admin,
            secret: Some(secret),
            bin: cfg.bin.clone(),
            worker_flags,
            http: client()?,
            dev: std::sync::Mutex::new(Some(child)),
            extra: std::sync::Mutex::default(),
            _tmp: Some(tmp),
        };
        fleet
            .wait_for(
                "state.json lists every worker",
                Duration::from_secs(60),
                |s| {
                    s.workers.len() as u32 >= cfg.workers
                        && s.router.is_some()
                        && s.consul_http.is_some()
                },
            )
            .await?;
        Ok(fleet)
    }

    /// Attaches to a running fleet through its `state.json`; `lookup` reads the environment
    /// (`WAFLEET_ADMIN_TOKEN`, `WAFLEET_TOKEN_SECRET`).
    pub fn attach(
        state_path: &Path,
        bin: PathBuf,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Fleet, FleetError> {
        let text = std::fs::read_to_string(state_path)?;
        let st: DevState = serde_json::from_str(&text)
            .map_err(|e| FleetError::Fleet(format!("{}: {e}", state_path.display())))?;
        let data = match &st.data {
            Some(d) => PathBuf::from(d),
            None => state_path
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| FleetError::Fleet("cannot derive the data dir".into()))?,
        };
        let admin = match (&st.admin_token_file, lookup("WAFLEET_ADMIN_TOKEN")) {
            (_, Some(t)) if !t.trim().is_empty() => t.trim().to_owned(),
            (Some(f), _) => std::fs::read_to_string(f)?.trim().to_owned(),
            _ => {
                return Err(FleetError::Fleet(
                    "no admin token: set WAFLEET_ADMIN_TOKEN or use a state.json with admin_token_file".into(),
                ));
            }
        };
        Ok(Fleet {
            data,
            state_path: state_path.to_path_buf(),
            admin,
            secret: lookup("WAFLEET_TOKEN_SECRET"),
            bin,
            worker_flags: Vec::new(),
            http: client()?,
            dev: std::sync::Mutex::new(None),
            extra: std::sync::Mutex::default(),
            _tmp: None,
        })
    }

    /// The current `state.json`.
    pub fn state(&self) -> Result<DevState, FleetError> {
        let text = std::fs::read_to_string(&self.state_path)?;
        serde_json::from_str(&text)
            .map_err(|e| FleetError::Fleet(format!("{}: {e}", self.state_path.display())))
    }

    /// Polls `state.json` until `cond` holds, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&DevState) -> bool,
    ) -> Result<DevState, FleetError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.state()
                && cond(&s)
            {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(FleetError::Fleet(format!("timed out waiting for {what}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every worker: from `state.json` plus the ones this suite started.
    pub fn workers(&self) -> Vec<WorkerEntry> {
        let mut w = self.state().map(|s| s.workers).unwrap_or_default();
        let extra = self.extra.lock().map(|e| {
            e.iter()
                .map(|e| (e.shard, e.pid, e.addr.clone()))
                .collect::<Vec<_>>()
        });
        for (shard, pid, addr) in extra.unwrap_or_default() {
            let e = WorkerEntry { shard, pid, addr };
            if !w.iter().any(|x| x.shard == e.shard) {
                w.push(e);
            }
        }
        w
    }

    /// The router's base URL.
    pub fn router(&self) -> Result<String, FleetError> {
        self.state()?
            .router
            .map(|r| format!("http://{r}"))
            .ok_or_else(|| FleetError::Fleet("state.json has no router".into()))
    }

    /// The Consul agent's base URL.
    pub fn consul(&self) -> Result<String, FleetError> {
        self.state()?
            .consul_http
            .map(|r| format!("http://{r}"))
            .ok_or_else(|| FleetError::Fleet("state.json has no consul_http".into()))
    }

    /// The simulator's base URL, when one runs.
    pub fn sim(&self) -> Option<String> {
        self.state().ok()?.sim.map(|s| format!("http://{s}"))
    }
}

/// `GET url` with a bearer token and a timeout, answered as JSON; `None` on any failure (the
/// callers sample, and a missed sample is a fact they record, not an error).
pub async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    timeout: Duration,
) -> Option<serde_json::Value> {
    http.get(url)
        .bearer_auth(token)
        .timeout(timeout)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn client() -> Result<reqwest::Client, FleetError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()?)
}

#[cfg(test)]
mod tests;
