//! The built-in single-node Consul-compatible agent (`wafleet consul-dev`): HTTP API subset and DNS.
//!
//! It exists because the Consul binary cannot be installed on our build machines: `wafleet dev`,
//! the tests and the chaos suite run the production Consul client against this agent. It keeps
//! Consul's semantics for the subset wafleet uses (KV with CAS and locks, sessions with TTL and
//! lock delay, blocking queries, agent services and TTL/HTTP checks, health, catalog services,
//! KV transactions, DNS SRV/A) and adds fault injection on `/_dev/faults`. It is *not* a Consul
//! server: one node, in memory, no raft, no ACL policies (one optional token). See
//! `docs/consul-dev.md`.
//!
//! # Layout
//!
//! * [`state`]: PURE. The state machine (KV, sessions, locks, services, checks, indexes), time
//!   passed in.
//! * [`filter`]: PURE. The `?filter=` expression subset.
//! * [`wire`]: Consul's JSON shapes.
//! * [`duration`]: Go duration strings.
//! * `http`: the warp HTTP layer, blocking queries, ACL and fault injection.
//! * `dns`: the UDP/TCP DNS interface.
//! * [`cli`]: `wafleet consul-dev`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cancel = wafleet::shutdown::CancellationToken::new();
//! let agent = wafleet::consul_dev::spawn(wafleet::consul_dev::AgentConfig::default(), cancel.clone()).await?;
//! println!("http://{} dns {}", agent.http_addr(), agent.dns_addr());
//! cancel.cancel();
//! agent.stopped().await;
//! # Ok(()) }
//! ```

pub mod cli;
mod dns;
pub mod duration;
pub mod filter;
mod http;
pub mod state;
pub mod wire;

#[cfg(test)]
mod failure_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use state::{State, StateConfig};

/// Consul's default blocking-query wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// Consul's longest blocking-query wait.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// The earliest a real cluster marks a silent agent failed (see [`AgentConfig::serf_detect`]).
pub const DEFAULT_SERF_DETECT: Duration = Duration::from_secs(5);

/// Which HTTP listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The local agent (the node's own; `agent-restart` stops it).
    Local,
    /// Another agent or server of the datacenter ([`AgentConfig::remote_http`]).
    Remote,
}

/// Settings of the built-in agent. Defaults are Consul's (and port-0 loopback addresses).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// HTTP listen address (port 0 = any free port).
    pub http: SocketAddr,
    /// DNS listen address, UDP and TCP (port 0 = any free port, the same for both).
    pub dns: SocketAddr,
    /// When set, every `/v1/` request must carry this token (`X-Consul-Token`,
    /// `Authorization: Bearer`, or `?token=`), else 403.
    pub acl_token: Option<String>,
    /// Node name.
    pub node: String,
    /// Datacenter name.
    pub datacenter: String,
    /// Smallest session TTL accepted (Consul: 10s).
    pub session_ttl_min: Duration,
    /// Sessions are invalidated `TTL × this` after the last renewal (Consul: 2).
    pub session_ttl_multiplier: u32,
    /// Default session lock delay (Consul: 15s).
    pub default_lock_delay: Duration,
    /// Smallest `DeregisterCriticalServiceAfter` honoured (Consul: 1m).
    pub deregister_critical_min: Duration,
    /// Default blocking wait (Consul: 5m).
    pub default_wait: Duration,
    /// Longest blocking wait (Consul: 10m).
    pub max_wait: Duration,
    /// Shortest HTTP-check interval; shorter ones are raised (Consul: 1s).
    pub min_check_interval: Duration,
    /// Largest request body outside KV values (registration, sessions, txn).
    pub max_body_bytes: usize,
    /// A second HTTP listener on the same state that plays *another* agent (or a server) of
    /// the same datacenter: what a client falls back to while its local agent is away. The
    /// `agent-restart` fault does not touch it; every other fault does (they model the cluster
    /// or the network, which a client meets on any agent). `None` = not started.
    pub remote_http: Option<SocketAddr>,
    /// How long the agent must be down without leaving before the servers' failure detector
    /// declares it failed and its node's `serfHealth` turns critical. Default 5 s: memberlist's
    /// LAN defaults (probe every 1 s, suspicion `4 × max(1, log10 N) × 1 s`, at least 4 s)
    /// give about 5 s at the earliest (small cluster, or confirmations from peers), up to 25 s
    /// without confirmations (suspicion starts at 6 × its minimum). docs/consul.md.
    pub serf_detect: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            http: loopback,
            dns: loopback,
            acl_token: None,
            node: "wafleet-dev".to_string(),
            datacenter: "dc1".to_string(),
            session_ttl_min: Duration::from_secs(10),
            session_ttl_multiplier: 2,
            default_lock_delay: Duration::from_secs(15),
            deregister_critical_min: Duration::from_secs(60),
            default_wait: DEFAULT_WAIT,
            max_wait: MAX_WAIT,
            min_check_interval: Duration::from_secs(1),
            max_body_bytes: 4 * 1024 * 1024,
            remote_http: None,
            serf_detect: DEFAULT_SERF_DETECT,
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP listener could not bind.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    BindHttp {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The DNS sockets could not bind.
    #[error("cannot listen for DNS on {addr}: {source}")]
    BindDns {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A setting is unusable.
    #[error("invalid agent configuration: {0}")]
    Config(String),
}

/// A running agent. Cancel the token given to [`spawn`] to stop it.
#[derive(Clone)]
pub struct RunningAgent {
    http: SocketAddr,
    remote_http: Option<SocketAddr>,
    dns: SocketAddr,
    tracker: TaskTracker,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent")
            .field("http", &self.http)
            .field("remote_http", &self.remote_http)
            .field("dns", &self.dns)
            .finish_non_exhaustive()
    }
}

impl RunningAgent {
    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Bound address of the second listener ("another agent of the datacenter"), when
    /// [`AgentConfig::remote_http`] asked for one.
    pub fn remote_http_addr(&self) -> Option<SocketAddr> {
        self.remote_http
    }

    /// Bound DNS address (UDP and TCP).
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns
    }

    /// `http://<addr>`, for `CONSUL_HTTP_ADDR`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// How many blocking queries are parked right now, waiting for a change. Lets a test wait
    /// (with a deadline) until its watcher is really blocked before making the change it
    /// expects the watcher to see.
    pub fn parked_queries(&self) -> usize {
        self.shared.parked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once every task of the agent has stopped (after cancellation).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

/// Pause mode of the fault injector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseMode {
    /// Requests wait until resumed.
    Hang,
    /// Requests get 503.
    Unavailable,
}

/// Active faults.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    /// Pause mode, if paused.
    pub pause: Option<PauseMode>,
    /// Requests carrying one of these session IDs get their connection closed.
    pub drop_sessions: std::collections::BTreeSet<String>,
    /// Requests carrying one of these tokens get their connection closed.
    pub drop_tokens: std::collections::BTreeSet<String>,
    /// Armed `index-backwards`: the path prefix it applies to (`""` = any).
    pub index_backwards: Option<String>,
    /// (status, remaining count).
    pub errors: Option<(u16, u64)>,
    /// Path prefix the injected errors apply to (`""` = any).
    pub errors_path: String,
    /// Every answer to a matching path (prefix, `""` = any) is delayed this long.
    pub delay: Option<(std::time::Duration, String)>,
    /// Body of the injected errors (`None`: a default per status).
    pub errors_message: Option<String>,
    /// The agent is "restarting" until then: every `/v1/` connection is closed unanswered,
    /// as a stopped agent's port refuses them.
    pub down_until: Option<std::time::Instant>,
    /// When the current restart began (the failure detector's clock).
    pub down_since: Option<std::time::Instant>,
    /// The agent left the cluster when it went down (graceful leave) and joins again when it
    /// comes back.
    pub rejoin: bool,
}

/// What the HTTP, DNS and timer tasks share.
pub(crate) struct Shared {
    /// The agent's settings.
    pub cfg: AgentConfig,
    /// The state machine. A std mutex: it is never held across an await.
    state: Mutex<State>,
    /// Bumped (with the new global index) after every change, to wake blocking queries and the
    /// timer loop.
    pub changed: watch::Sender<u64>,
    faults: Mutex<Faults>,
    /// Bumped after every fault change, to wake hung requests and blocking queries.
    pub faults_changed: watch::Sender<u64>,
    /// Client for HTTP checks, built on first use: building one loads the system's CA roots,
    /// which agents without HTTP checks (most test agents) need not pay for.
    http_client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    /// Number of blocking queries currently waiting (see [`RunningAgent::parked_queries`]).
    pub parked: std::sync::atomic::AtomicUsize,
    /// `/v1/` requests received, by `METHOD /v1/<area>/<endpoint>` (`GET /_dev/stats`).
    pub requests: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Shared {
    /// Locks the state; a poisoned lock (a panic elsewhere) still yields the data, since every
    /// state method leaves it consistent before anything can panic.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a mutation and wakes watchers if the global index moved.
    pub fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, before, after) = {
            let mut st = self.state();
            let before = st.index();
            let r = f(&mut st);
            (r, before, st.index())
        };
        if after != before {
            self.changed.send_replace(after);
        }
        r
    }

    /// Locks the active faults (never held across an await).
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The HTTP-check client (built on first use).
    pub fn http_client(&self) -> Result<&reqwest::Client, &str> {
        self.http_client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .build()
                    .map_err(|e| format!("cannot build the HTTP check client: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Counts one `/v1/` request under its endpoint class; requests on the remote listener
    /// are counted apart, under `remote METHOD class`.
    pub fn count_request(&self, listener: Listener, method: &str, path: &str) {
        let class = endpoint_class(path);
        let prefix = match listener {
            Listener::Local => "",
            Listener::Remote => "remote ",
        };
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(format!("{prefix}{method} {class}")).or_default() += 1;
    }

    /// Whether the agent is down (an `agent/restart` fault); ends the restart — rejoining the
    /// node when it had left, clearing a failed `serfHealth` — once its time is up.
    pub fn agent_down(&self) -> bool {
        let now = now();
        let (down, back, rejoin) = {
            let mut f = self.faults();
            match f.down_until {
                Some(until) if now < until => (true, false, false),
                Some(_) => {
                    f.down_until = None;
                    f.down_since = None;
                    (false, true, std::mem::take(&mut f.rejoin))
                }
                None => (false, false, false),
            }
        };
        if back {
            self.agent_back(rejoin);
            tracing::info!(node = %self.cfg.node, rejoin, "consul-dev: agent back");
        }
        down
    }

    /// The agent is back: a node that left joins again, a node declared failed is alive again
    /// (its agent rejoins the gossip pool at once on start).
    pub fn agent_back(&self, rejoin: bool) {
        let node = self.cfg.node.clone();
        self.mutate(|st| {
            if rejoin {
                st.node_join(&node);
            }
            st.node_alive(&node);
        });
    }

    /// The servers' failure detector, run by the timer loop: an agent down without leaving for
    /// [`AgentConfig::serf_detect`] is declared failed (`serfHealth` critical, its sessions
    /// that include `serfHealth` invalidated). Also ends a restart whose time is up. Returns
    /// when it next has something to do.
    pub fn serf_tick(&self) -> Option<std::time::Instant> {
        if !self.agent_down() {
            return None;
        }
        let now = now();
        let (since, until, left) = {
            let f = self.faults();
            (f.down_since, f.down_until, f.rejoin)
        };
        let (Some(since), Some(until)) = (since, until) else {
            return None;
        };
        if left {
            // A node that left is deregistered already; there is nothing to detect.
            return Some(until);
        }
        let detect_at = since + self.cfg.serf_detect;
        if now < detect_at {
            return Some(detect_at.min(until));
        }
        let node = self.cfg.node.clone();
        let failed = self.mutate(|st| {
            let was = st.serf_critical(&node);
            let n = st.node_fail(&node, now);
            (!was).then_some(n)
        });
        if let Some(n) = failed {
            tracing::info!(node = %node, sessions_invalidated = n, "consul-dev: agent failed (no gossip answer), serfHealth critical");
        }
        Some(until)
    }

    /// Changes the faults and wakes everything waiting on them (hung requests, parked queries).
    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults());
        self.faults_changed.send_modify(|g| *g += 1);
    }
}

/// The endpoint a path belongs to, without the ids and keys that follow it:
/// `/v1/kv/wafleet/shardmap` → `/v1/kv`, `/v1/agent/check/update/x:ttl` →
/// `/v1/agent/check/update`, `/v1/session/renew/<id>` → `/v1/session/renew`.
pub(crate) fn endpoint_class(path: &str) -> String {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let keep = match segs.get(1).copied() {
        Some("kv") => 2,
        Some("agent") => match segs.get(2).copied() {
            Some("service" | "check" | "health") => 4,
            _ => 3,
        },
        Some("health") => 4,
        _ => 3,
    };
    let kept: Vec<&str> = segs.into_iter().take(keep).collect();
    format!("/{}", kept.join("/"))
}

/// The current instant on tokio's clock (pausable in tests) as a std `Instant`.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Starts the agent: binds HTTP and DNS (UDP and TCP on the same port), starts the timer loop,
/// and returns once everything is listening. Everything stops when `shutdown` is cancelled.
pub async fn spawn(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    if config.node.is_empty() || config.datacenter.is_empty() {
        return Err(AgentError::Config(
            "node and datacenter must not be empty".to_string(),
        ));
    }
    let http_listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| AgentError::BindHttp {
            addr: config.http,
            source,
        })?;
    let http = http_listener
        .local_addr()
        .map_err(|source| AgentError::BindHttp {
            addr: config.http,
            source,
        })?;
    let remote_listener = match config.remote_http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::BindHttp { addr, source })?,
        ),
        None => None,
    };
    let remote_http = match &remote_listener {
        Some(l) => Some(l.local_addr().map_err(|source| AgentError::BindHttp {
            addr: config.remote_http.unwrap_or(config.http),
            source,
        })?),
        None => None,
    };
    let (udp, tcp) = dns::bind(config.dns)
        .await
        .map_err(|source| AgentError::BindDns {
            addr: config.dns,
            source,
        })?;
    let dns_addr = udp.local_addr().map_err(|source| AgentError::BindDns {
        addr: config.dns,
        source,
    })?;
    let state_cfg = StateConfig {
        node: config.node.clone(),
        datacenter: config.datacenter.clone(),
        session_ttl_min: config.session_ttl_min,
        session_ttl_multiplier: config.session_ttl_multiplier.max(1),
        default_lock_delay: config.default_lock_delay,
        deregister_critical_min: config.deregister_critical_min,
        min_check_interval: config.min_check_interval,
        seed: rand::random(),
        ..StateConfig::default()
    };
    let (changed, _) = watch::channel(1);
    let (faults_changed, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        cfg: config,
        state: Mutex::new(State::new(state_cfg)),
        changed,
        faults: Mutex::new(Faults::default()),
        faults_changed,
        requests: Mutex::new(std::collections::BTreeMap::new()),
        http_client: std::sync::OnceLock::new(),
        parked: std::sync::atomic::AtomicUsize::new(0),
    });
    let tracker = TaskTracker::new();
    tracker.spawn(http::serve(
        http_listener,
        Listener::Local,
        shared.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    if let Some(l) = remote_listener {
        tracker.spawn(http::serve(
            l,
            Listener::Remote,
            shared.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    tracker.spawn(dns::serve_udp(udp, shared.clone(), shutdown.clone()));
    tracker.spawn(dns::serve_tcp(
        tcp,
        shared.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(timers(shared.clone(), shutdown.clone(), tracker.clone()));
    tracker.close();
    tracing::info!(%http, ?remote_http, dns = %dns_addr, "consul-dev agent listening");
    Ok(RunningAgent {
        http,
        remote_http,
        dns: dns_addr,
        tracker,
        shared,
    })
}

/// Applies the state machine's timers (session TTLs, TTL checks, critical-service reaping) and
/// runs HTTP checks, sleeping until the next deadline or the next change.
async fn timers(shared: Arc<Shared>, shutdown: CancellationToken, tracker: TaskTracker) {
    let mut changed = shared.changed.subscribe();
    // A restart fault starts the failure detector's clock: wake for it too.
    let mut faults = shared.faults_changed.subscribe();
    loop {
        let now = now();
        let jobs = shared.mutate(|st| {
            st.tick(now);
            st.take_due_http_checks(now)
        });
        for job in jobs {
            tracker.spawn(run_http_check(shared.clone(), job));
        }
        let serf = shared.serf_tick();
        let next = match (shared.state().next_deadline(), serf) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Wake at the next deadline, or at least every second so nothing is missed if a
        // deadline moves earlier without an index change (e.g. a TTL check pass).
        let fallback = now + Duration::from_secs(1);
        let deadline = next.map_or(fallback, |d| d.min(fallback));
        let sleep_for = deadline.saturating_duration_since(now);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep_for) => {}
            r = changed.changed() => { if r.is_err() { return; } }
            r = faults.changed() => { if r.is_err() { return; } }
        }
    }
}

async fn run_http_check(shared: Arc<Shared>, job: state::HttpCheckJob) {
    let method = reqwest::Method::from_bytes(job.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let client = match shared.http_client() {
        Ok(c) => c.clone(),
        Err(e) => {
            let output = e.to_string();
            let now = now();
            shared.mutate(|st| {
                st.record_check_result(&job.check_id, state::Status::Critical, &output, now)
            });
            return;
        }
    };
    let mut req = client
        .request(method.clone(), &job.url)
        .timeout(job.timeout);
    for (name, values) in &job.header {
        for v in values {
            req = req.header(name.as_str(), v.as_str());
        }
    }
    let (status, output) = match req.send().await {
        Ok(resp) => {
            let code = resp.status();
            let status = if code.is_success() {
                state::Status::Passing
            } else if code.as_u16() == 429 {
                state::Status::Warning
            } else {
                state::Status::Critical
            };
            (
                status,
                format!("HTTP {method} {}: {} Output: ", job.url, code),
            )
        }
        Err(e) => (
            state::Status::Critical,
            format!("HTTP {method} {}: {e}", job.url),
        ),
    };
    let now = now();
    shared.mutate(|st| st.record_check_result(&job.check_id, status, &output, now));
}
