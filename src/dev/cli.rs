//! `wafleet dev`: flags and the start-up sequence — Consul agent, shard map, simulator, router,
//! workers — then supervision until Ctrl-C, then a clean stop in reverse order (workers drain
//! while Consul is still up).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::state::DevState;
use super::supervisor::{ChildEvent, ChildSpec, supervise};
use crate::consul::{Client, Config as ConsulConfig, PutOptions, QueryOptions};
use crate::shard::ShardMap;
use crate::shutdown::{CancellationToken, TaskTracker};

/// How long the agent, router and simulator get to print their readiness line.
pub const READY_TIMEOUT_SECS: u64 = 30;
/// How long `wafleet dev` waits for the router to route to every shard before announcing.
pub const ROUTE_WAIT_SECS: u64 = 20;
/// How long a worker gets (it may wait for its shard lock after a restart: TTL + lock delay).
pub const WORKER_READY_TIMEOUT_SECS: u64 = 120;

/// Arguments of `wafleet dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of workers (and shards, when the map is initialised here).
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// Data directory shared by the workers (state in `<data>/dev/`).
    #[arg(long, default_value = "./.dev-data")]
    pub data: PathBuf,
    /// Router listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub router_listen: String,
    /// Built-in Consul agent HTTP address.
    #[arg(long, default_value = "127.0.0.1:8500")]
    pub consul_http: String,
    /// Built-in Consul agent DNS address.
    #[arg(long, default_value = "127.0.0.1:8600")]
    pub consul_dns: String,
    /// Use this WhatsApp Web URL instead of starting the simulator.
    #[arg(long)]
    pub wa_url: Option<String>,
    /// Simulator listen address. Keep it fixed across restarts: a profile's credentials live in
    /// the origin's IndexedDB, so a simulator on another port means a new QR for every session.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub sim_listen: String,
    /// MiB of JS heap every simulated page allocates and keeps (`wafleet sim --page-ballast-mb`):
    /// a stand-in for WhatsApp Web's own heap in memory benchmarks. 0 = none.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::sim::MAX_PAGE_BALLAST_MB)))]
    pub page_ballast_mb: u32,
    /// Workers' Consul session TTL in seconds.
    #[arg(long, default_value_t = crate::worker::DEFAULT_SESSION_TTL_SECS)]
    pub session_ttl_secs: u64,
    /// Workers' lock delay in seconds.
    #[arg(long, default_value_t = crate::worker::DEFAULT_LOCK_DELAY_SECS)]
    pub lock_delay_secs: u64,
    /// Workers' drain grace in seconds.
    #[arg(long, default_value_t = crate::worker::DEFAULT_DRAIN_GRACE_SECS)]
    pub drain_grace_secs: u64,
    /// Run one worker inside an existing network namespace: `<SHARD>=<NETNS>@<IP>` starts it
    /// as `ip netns exec <NETNS> wafleet worker … --listen <IP>:0 --advertise <IP>:0`
    /// (repeatable; the chaos suite's real partition). The namespace must reach the Consul
    /// agent and the simulator, so pass `--consul-http`/`--consul-dns`/`--sim-listen` on an
    /// address it can reach.
    #[arg(long = "worker-netns", value_name = "SHARD=NETNS@IP")]
    pub worker_netns: Vec<super::netns::WorkerNetns>,
}

/// Why `wafleet dev` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Filesystem or process error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The Consul client failed.
    #[error("consul: {0}")]
    Consul(#[from] crate::consul::ConsulError),
    /// A child did not come up.
    #[error("{0}")]
    Startup(String),
    /// A flag value is inconsistent with the others.
    #[error("{0}")]
    Flag(#[from] super::netns::NetnsFlagError),
}

/// Runs `wafleet dev` until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<(), DevError> {
    let shutdown = crate::shutdown::token_from_signals();
    run_with(args, |k| std::env::var(k).ok(), shutdown).await
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())
}

fn write_state(path: &Path, state: &DevState) {
    let r = serde_json::to_vec_pretty(state)
        .map_err(std::io::Error::other)
        .and_then(|b| crate::worker::layout::write_atomic(path, &b));
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "cannot write state.json");
    }
}

/// This binary. When it was replaced on disk while running (a rebuild during `cargo run`),
/// Linux reports `<path> (deleted)`; the new binary at `<path>` is what children should run.
fn current_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

/// Writes a uniform map of `count` shards unless a map exists (CAS create).
async fn init_map(consul: SocketAddr, prefix: &str, count: u32) -> Result<(), DevError> {
    let client = Client::new(&ConsulConfig::http(consul))?;
    let key = format!("{prefix}/shardmap");
    let (existing, _) = client.kv_get(&key, &QueryOptions::default()).await?;
    if let Some(pair) = existing {
        match ShardMap::from_json(pair.value_bytes()) {
            Ok(m) if m.shards.len() as u32 != count => tracing::warn!(
                shards = m.shards.len(),
                workers = count,
                "the existing shard map does not match --workers; keeping it"
            ),
            Ok(m) => tracing::info!(version = m.version, "shard map present"),
            Err(e) => {
                tracing::warn!(error = %e, "the existing shard map is invalid; leaving it to the operator")
            }
        }
        return Ok(());
    }
    let map = ShardMap::uniform(count.max(1));
    let opts = PutOptions {
        cas: Some(0),
        ..PutOptions::default()
    };
    if client.kv_put(&key, &map.to_json(), &opts).await? {
        tracing::info!(shards = count, "shard map initialised");
    }
    Ok(())
}

/// Waits (bounded) until the router sends a request to every shard that has a worker and gets a
/// 200, so the first curl printed to the user works. Probe workspaces are never created: a list
/// of a workspace that does not exist answers 200 with no sessions.
async fn wait_router_routes(
    router: &str,
    consul: SocketAddr,
    prefix: &str,
    workers: u32,
    admin: &str,
) {
    let client = match Client::new(&ConsulConfig::http(consul)) {
        Ok(c) => c,
        Err(_) => return,
    };
    let map = match client
        .kv_get(&format!("{prefix}/shardmap"), &QueryOptions::default())
        .await
    {
        Ok((Some(pair), _)) => match ShardMap::from_json(pair.value_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
        _ => return,
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(ROUTE_WAIT_SECS);
    for k in map
        .shard_ids()
        .filter(|k| *k < workers && !map.is_draining(*k))
    {
        let probe = (0..10_000)
            .filter_map(|i| crate::ids::WorkspaceId::new(format!("probe-{i}")).ok())
            .find(|ws| map.owner(ws) == Some(k));
        let Some(probe) = probe else { continue };
        let url = format!("http://{router}/v1/workspaces/{probe}/sessions");
        loop {
            let ok = http
                .get(&url)
                .bearer_auth(admin)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    shard = k,
                    "the router does not route to this shard yet; continuing"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits for the first `Ready` or `Skipped` of `name` (looking at `pending` first), recording
/// every event in `pending` for the state document.
async fn wait_first(
    name: &str,
    rx: &mut mpsc::UnboundedReceiver<ChildEvent>,
    pending: &mut Vec<ChildEvent>,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<serde_json::Value>, DevError> {
    // It may have come while we waited for another child.
    for ev in pending.iter() {
        match ev {
            ChildEvent::Ready { name: n, ready, .. } if n == name => {
                return Ok(Some(ready.clone()));
            }
            ChildEvent::Skipped { name: n } if n == name => return Ok(None),
            _ => {}
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tokio::time::sleep_until(deadline) => {
                return Err(DevError::Startup(format!("{name} was not ready within {timeout:?} (see its log under <data>/dev/logs/)")));
            }
            _ = shutdown.cancelled() => return Ok(None),
        };
        let Some(ev) = ev else {
            return Err(DevError::Startup("supervisors stopped".into()));
        };
        tracing::debug!(waiting_for = name, event = ?ev, "child event");
        match &ev {
            ChildEvent::Ready { name: n, ready, .. } if n == name => {
                let ready = ready.clone();
                pending.push(ev);
                return Ok(Some(ready));
            }
            ChildEvent::Skipped { name: n } if n == name => {
                pending.push(ev);
                return Ok(None);
            }
            _ => pending.push(ev),
        }
    }
}

/// `wafleet dev` with an environment lookup and a shutdown token (tests pass their own).
pub async fn run_with(
    args: Args,
    lookup: impl Fn(&str) -> Option<String>,
    shutdown: CancellationToken,
) -> Result<(), DevError> {
    super::netns::validate(&args.worker_netns, args.workers)?;
    let data = std::path::absolute(&args.data)?;
    let devdir = data.join("dev");
    let logs = devdir.join("logs");
    std::fs::create_dir_all(&logs)?;
    // The one-machine fleet's data directory stands for the shared volume: mark it as one.
    crate::volume::init(&data, None).map_err(|e| DevError::Startup(e.to_string()))?;
    let state_path = devdir.join("state.json");
    let exe = current_exe()?;

    let admin = lookup(crate::auth::ENV_ADMIN_TOKEN)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| random_hex(24));
    let secret = lookup(crate::auth::ENV_TOKEN_SECRET)
        .filter(|s| s.len() >= 16)
        .unwrap_or_else(|| random_hex(32));
    let token_file = devdir.join("admin-token");
    write_private(&token_file, &admin)?;

    let mut state = DevState {
        pid: std::process::id(),
        data: data.display().to_string(),
        admin_token_file: token_file.display().to_string(),
        ..DevState::default()
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut pending = Vec::new();
    // One stop token and tracker per tier, stopped in reverse order of start.
    let tiers: BTreeMap<&str, (CancellationToken, TaskTracker)> =
        ["1-consul", "2-sim", "3-router", "4-workers"]
            .into_iter()
            .map(|t| (t, (CancellationToken::new(), TaskTracker::new())))
            .collect();
    let spec = |name: &str,
                args: Vec<String>,
                pin: &[(&str, &str)],
                optional: bool,
                envs: Vec<(String, String)>| ChildSpec {
        name: name.to_owned(),
        args,
        envs,
        pin: pin
            .iter()
            .map(|(f, k)| ((*f).to_owned(), (*k).to_owned()))
            .collect(),
        log: logs.join(format!("{name}.log")),
        ready_timeout: Duration::from_secs(READY_TIMEOUT_SECS),
        stop_grace: Duration::from_secs(5),
        optional,
    };

    let result = async {
        // 1. The Consul agent.
        let (stop, tracker) = &tiers["1-consul"];
        // The remote listener plays another agent of the datacenter: the workers' fallback while
        // the local agent restarts (fault `agent-restart`, chaos scenario consul-agent-restart).
        // It listens on the same address as the agent (any port), so a worker in a network
        // namespace reaches it over the veth pair as it reaches the agent.
        let remote_http = args.consul_http.parse::<SocketAddr>().map(|a| SocketAddr::new(a.ip(), 0).to_string()).unwrap_or_else(|_| "127.0.0.1:0".to_owned());
        let consul_args = vec!["consul-dev".into(), "--http".into(), args.consul_http.clone(), "--dns".into(), args.consul_dns.clone(), "--remote-http".into(), remote_http];
        supervise(exe.clone(), spec("consul", consul_args, &[("--http", "http"), ("--dns", "dns"), ("--remote-http", "remote_http")], false, Vec::new()), tx.clone(), stop.clone(), tracker);
        let Some(ready) = wait_first("consul", &mut rx, &mut pending, Duration::from_secs(READY_TIMEOUT_SECS), &shutdown).await? else {
            return Ok(false);
        };
        let field = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let consul_http = field(&ready, "http").ok_or_else(|| DevError::Startup("consul-dev readiness line has no http".into()))?;
        let consul_dns = field(&ready, "dns").unwrap_or_else(|| args.consul_dns.clone());
        let consul_addr: SocketAddr = consul_http.parse().map_err(|_| DevError::Startup(format!("bad consul address {consul_http}")))?;
        state.consul_http = Some(consul_http.clone());
        state.consul_dns = Some(consul_dns.clone());
        init_map(consul_addr, crate::worker::DEFAULT_KV_PREFIX, args.workers).await?;

        let mut env = vec![
            ("CONSUL_HTTP_ADDR".to_owned(), format!("http://{consul_http}")),
            ("WAFLEET_CONSUL_DNS".to_owned(), consul_dns.clone()),
            (crate::auth::ENV_ADMIN_TOKEN.to_owned(), admin.clone()),
            (crate::auth::ENV_TOKEN_SECRET.to_owned(), secret.clone()),
        ];
        if let Some(prev) = lookup(crate::auth::ENV_TOKEN_SECRET_PREVIOUS) {
            env.push((crate::auth::ENV_TOKEN_SECRET_PREVIOUS.to_owned(), prev));
        }
        if let Some(remote) = field(&ready, "remote_http") {
            env.push(("WAFLEET_CONSUL_FALLBACK_ADDRS".to_owned(), format!("http://{remote}")));
        }

        // 2. The simulator, unless a WhatsApp Web URL was given.
        let mut wa_url = args.wa_url.clone();
        if wa_url.is_none() {
            let (stop, tracker) = &tiers["2-sim"];
            let mut sim_args = vec!["sim".into(), "--listen".into(), args.sim_listen.clone(), "--state-file".into(), devdir.join("sim-state.json").display().to_string()];
            if args.page_ballast_mb > 0 {
                sim_args.extend(["--page-ballast-mb".to_owned(), args.page_ballast_mb.to_string()]);
            }
            supervise(exe.clone(), spec("sim", sim_args, &[("--listen", "http")], true, env.clone()), tx.clone(), stop.clone(), tracker);
            match wait_first("sim", &mut rx, &mut pending, Duration::from_secs(READY_TIMEOUT_SECS), &shutdown).await? {
                Some(ready) => {
                    let addr = field(&ready, "http").unwrap_or_default();
                    state.sim = Some(addr.clone());
                    wa_url = Some(format!("http://{addr}/"));
                }
                None if shutdown.is_cancelled() => return Ok(false),
                None => tracing::warn!("the simulator is not available in this build; workers run without a WhatsApp Web URL"),
            }
        }
        state.wa_url = wa_url.clone();

        // 3. The router.
        let (stop, tracker) = &tiers["3-router"];
        let router_args = vec!["router".into(), "--listen".into(), args.router_listen.clone()];
        supervise(exe.clone(), spec("router", router_args, &[("--listen", "http")], true, env.clone()), tx.clone(), stop.clone(), tracker);
        match wait_first("router", &mut rx, &mut pending, Duration::from_secs(READY_TIMEOUT_SECS), &shutdown).await? {
            Some(ready) => state.router = field(&ready, "http"),
            None if shutdown.is_cancelled() => return Ok(false),
            None => tracing::warn!("the router is not available in this build; call the workers directly"),
        }

        // 4. The workers.
        let (stop, tracker) = &tiers["4-workers"];
        for k in 0..args.workers {
            let mut wargs: Vec<String> = vec![
                "worker".into(), "--shard".into(), k.to_string(),
                "--data".into(), data.display().to_string(),
                "--listen".into(), "127.0.0.1:0".into(),
                "--advertise".into(), "127.0.0.1:0".into(),
                "--session-ttl-secs".into(), args.session_ttl_secs.to_string(),
                "--lock-delay-secs".into(), args.lock_delay_secs.to_string(),
                "--drain-grace-secs".into(), args.drain_grace_secs.to_string(),
            ];
            if let Some(u) = &wa_url {
                wargs.extend(["--wa-url".to_owned(), u.clone()]);
            }
            // A worker in a network namespace runs through `ip netns exec`, which execs it: the
            // pid the supervisor sees and signals is still the worker's.
            let (program, wargs) = match args.worker_netns.iter().find(|n| n.shard == k) {
                Some(n) => {
                    let (p, a) = n.command(&exe, &wargs);
                    (PathBuf::from(p), a)
                }
                None => (exe.clone(), wargs),
            };
            let mut s = spec(&format!("worker-{k}"), wargs, &[("--listen", "http"), ("--advertise", "http")], false, env.clone());
            s.ready_timeout = Duration::from_secs(WORKER_READY_TIMEOUT_SECS);
            s.stop_grace = Duration::from_secs(args.drain_grace_secs + 5);
            supervise(program, s, tx.clone(), stop.clone(), tracker);
        }
        for k in 0..args.workers {
            if wait_first(&format!("worker-{k}"), &mut rx, &mut pending, Duration::from_secs(WORKER_READY_TIMEOUT_SECS), &shutdown).await?.is_none() {
                return Ok(false);
            }
        }
        Ok::<bool, DevError>(true)
    }
    .await;

    let started = match result {
        Ok(s) => s,
        Err(e) => {
            stop_all(&tiers).await;
            return Err(e);
        }
    };
    // Apply what happened during start-up (pids of Ready events).
    let apply = |state: &mut DevState, ev: &ChildEvent| {
        let (name, pid, addr) = match ev {
            ChildEvent::Ready { name, pid, ready } => (
                name,
                *pid,
                ready
                    .get("http")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
            ),
            ChildEvent::Started { name, pid } => (name, *pid, None),
            ChildEvent::Skipped { name } => {
                state.pids.remove(name);
                return;
            }
            ChildEvent::Exited { .. } => return,
        };
        if let Some(k) = name.strip_prefix("worker-").and_then(|k| k.parse().ok()) {
            // A restarted worker keeps its pinned address; a first start has none yet.
            let known = state
                .workers
                .iter()
                .find(|w| w.shard == k)
                .map(|w| w.addr.clone());
            if let Some(addr) = addr.or(known) {
                state.set_worker(k, pid, addr);
            }
        } else {
            state.pids.insert(name.clone(), pid);
        }
    };
    for ev in pending.drain(..) {
        apply(&mut state, &ev);
    }
    write_state(&state_path, &state);

    if started {
        if let (Some(router), Some(consul)) = (
            state.router.as_deref(),
            state.consul_http.as_deref().and_then(|s| s.parse().ok()),
        ) {
            tokio::select! {
                _ = wait_router_routes(router, consul, crate::worker::DEFAULT_KV_PREFIX, args.workers, &admin) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        let router = state.router.clone();
        let base = router
            .as_deref()
            .map(|r| format!("http://{r}"))
            .unwrap_or_else(|| {
                state
                    .workers
                    .first()
                    .map(|w| format!("http://{}", w.addr))
                    .unwrap_or_default()
            });
        eprintln!();
        eprintln!("wafleet dev is running ({} workers).", args.workers);
        eprintln!(
            "  router:      {}",
            router.as_deref().unwrap_or("(not available in this build)")
        );
        eprintln!(
            "  consul:      http://{}",
            state.consul_http.as_deref().unwrap_or_default()
        );
        eprintln!("  admin token: {admin}");
        eprintln!("  state:       {}", state_path.display());
        eprintln!("  logs:        {}", logs.display());
        eprintln!("Try:");
        eprintln!(
            "  curl -s -X POST -H 'Authorization: Bearer {admin}' -H 'Content-Type: application/json' \\"
        );
        eprintln!("       -d '{{\"session\":\"default\"}}' {base}/v1/workspaces/demo/sessions");
        for line in link_hint(&base, state.sim.as_deref()) {
            eprintln!("{line}");
        }
        eprintln!("Ctrl-C stops everything.");
        let line = serde_json::json!({
            "ready": true,
            "http": state.router,
            "router": state.router,
            "consul_http": state.consul_http,
            "consul_dns": state.consul_dns,
            "sim": state.sim,
            "state": state_path.display().to_string(),
        });
        println!("{line}");

        // Supervise: keep state.json current; re-initialise the map if the agent restarted.
        let consul_addr: Option<SocketAddr> =
            state.consul_http.as_deref().and_then(|s| s.parse().ok());
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = shutdown.cancelled() => break,
            };
            let Some(ev) = ev else { break };
            if let ChildEvent::Ready { name, .. } = &ev
                && name == "consul"
                && let Some(addr) = consul_addr
            {
                tracing::warn!(
                    "the Consul agent restarted with an empty state; re-initialising the shard map"
                );
                if let Err(e) = init_map(addr, crate::worker::DEFAULT_KV_PREFIX, args.workers).await
                {
                    tracing::error!(error = %e, "shard map re-initialisation failed");
                }
            }
            apply(&mut state, &ev);
            write_state(&state_path, &state);
        }
    }
    tracing::info!("stopping the fleet");
    stop_all(&tiers).await;
    Ok(())
}

async fn stop_all(tiers: &BTreeMap<&str, (CancellationToken, TaskTracker)>) {
    // Reverse order: workers drain while Consul is still there.
    for (name, (stop, tracker)) in tiers.iter().rev() {
        stop.cancel();
        tracker.close();
        tracker.wait().await;
        tracing::info!(tier = name, "stopped");
    }
}

/// The banner lines that tell a newcomer how to link the session the first curl created: with
/// the simulator its `/phone` page plays the phone (it lists the QR and a "Scan" button), and
/// the dashboard at `<router>/ui/` shows the session and its QR. Against a real WhatsApp Web
/// (`--wa-url`) the QR is scanned with the phone's WhatsApp app.
pub fn link_hint(base: &str, sim: Option<&str>) -> Vec<String> {
    let mut out = vec![format!(
        "Then link it: the dashboard {base}/ui/ shows the session and its QR (or GET {base}/v1/workspaces/demo/sessions/default/qr),"
    )];
    match sim {
        Some(sim) => out.push(format!(
            "  and the simulator plays the phone: open http://{sim}/phone and press \"Scan\" next to the QR."
        )),
        None => out.push(
            "  and scan it with WhatsApp on your phone (Settings > Linked devices > Link a device).".into(),
        ),
    }
    out
}

#[cfg(test)]
mod banner_tests {
    use super::link_hint;

    #[test]
    fn the_banner_says_where_to_scan_the_first_qr() {
        let lines = link_hint("http://127.0.0.1:8080", Some("127.0.0.1:7070")).join("\n");
        assert!(lines.contains("http://127.0.0.1:8080/ui/"), "{lines}");
        assert!(lines.contains("http://127.0.0.1:7070/phone"), "{lines}");
        assert!(
            lines.contains("/v1/workspaces/demo/sessions/default/qr"),
            "{lines}"
        );
        let real = link_hint("http://r", None).join("\n");
        assert!(
            real.contains("Linked devices") && !real.contains("/phone"),
            "{real}"
        );
    }
}
