//! The worker (`wafleet worker`): shard ownership, the session host seam and the worker HTTP
//! API. It is not the WhatsApp engine: sessions run behind [`host::SessionHost`], implemented
//! by [`engine_host::EngineHost`] (Chromium, production) and [`placeholder::PlaceholderHost`]
//! (no browser: ownership, fleet and scale tests).
//!
//! # Layout
//!
//! * [`ownership`]: PURE. The per-workspace state machine (acquire → start → stop → release,
//!   fencing, drain). Unit- and property-tested.
//! * [`coordinator`]: the [`coordinator::Coordinator`] trait (one session term: shard lock,
//!   workspace locks, registration, fencing signal), in our vocabulary.
//! * [`consul`]: the Consul adapter of that trait and the shard map watch.
//! * [`host`]: the [`host::SessionHost`] trait; [`engine_host`] runs each session in Chromium,
//!   [`placeholder`] runs none; [`layout`]: the session directories on the shared volume.
//! * [`driver`]: the async shell: terms, actions, published status.
//! * [`http`]: the composition root of the warp routes (health, readiness, metrics, state);
//!   the resources each have a module over the shared request layer [`request`]:
//!   [`session_routes`] (sessions, with create's idempotency), [`settings`] (a session's
//!   `PATCH`), [`messaging`] (messages and the event stream), [`media`], [`chats`],
//!   [`contacts`] ("is this number on WhatsApp?", with its cache and rate limit, the contact
//!   list and actions), [`lids`] (LID ↔ phone number), [`groups`], [`presence`], [`webhooks`]
//!   (dead letters and replay), [`profile_routes`] (profile import/export) and [`fleet_api`]
//!   (`GET /v1/sessions`, every session this worker hosts; the router's fleet-wide list fans
//!   out to it).
//! * [`owner`]: owner records on the shared volume (shard holder with its lease, profile owner)
//!   and the checks on them: the takeover of a dead predecessor's session, the profile check
//!   before a browser starts; [`guard`]: the browser guard process that kills this worker's
//!   browsers when it freezes (`docs/operations.md`, Healing).
//! * [`cli`]: `wafleet worker` flags.
//!
//! See `docs/worker.md` for the ownership and fencing timeline.

pub mod chats;
pub mod cli;
pub mod consul;
pub mod contacts;
pub mod coordinator;
pub mod driver;
pub mod engine_host;
pub mod fleet_api;
pub mod groups;
pub mod guard;
pub mod host;
pub mod http;
pub mod layout;
pub mod lids;
pub mod media;
pub mod messaging;
pub mod owner;
pub mod ownership;
pub mod placeholder;
pub mod presence;
pub mod profile_routes;
pub mod request;
pub mod session_routes;
pub mod settings;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Authority;
use crate::shutdown::{CancellationToken, TaskTracker};

/// Default KV prefix.
pub const DEFAULT_KV_PREFIX: &str = "wafleet";
/// Default session TTL, seconds.
pub const DEFAULT_SESSION_TTL_SECS: u64 = 15;
/// Default lock delay, seconds.
pub const DEFAULT_LOCK_DELAY_SECS: u64 = 15;
/// Default drain grace, seconds (below Nomad's 30 s `max_kill_timeout`).
pub const DEFAULT_DRAIN_GRACE_SECS: u64 = 25;
/// Clock-skew margin on another process's owner lease (`owner.rs`): hosts run NTP, and this
/// covers far more than its usual offsets.
pub const OWNER_LEASE_MARGIN_SECS: u64 = 5;
/// Default number of workspaces started at once after a (re)start.
pub const DEFAULT_RESTORE_CONCURRENCY: usize = 4;

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A flag or environment value is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The Consul client could not be built.
    #[error("consul: {0}")]
    Consul(#[from] crate::consul::ConsulError),
    /// Tokens could not be configured.
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// Socket or filesystem error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The drain did not finish within the grace period (locks expire with the session).
    #[error("drain did not finish within the grace period")]
    DrainTimedOut,
}

/// Everything `run` needs. Built by the CLI from flags and the environment, or by tests.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The shard this worker serves (`--shard`).
    pub shard: u32,
    /// The data directory (`--data`, the NFS host volume in production).
    pub data: PathBuf,
    /// Host registered in Consul (`--advertise` host part).
    pub advertise_host: String,
    /// Port registered in Consul (`--advertise` port part; 0 = the bound port).
    pub advertise_port: u16,
    /// KV prefix (`--kv-prefix`).
    pub kv_prefix: String,
    /// Session TTL (`--session-ttl-secs`); the fencing deadline is 2/3 of it.
    pub session_ttl: Duration,
    /// Lock delay (`--lock-delay-secs`).
    pub lock_delay: Duration,
    /// Drain grace (`--drain-grace-secs`).
    pub drain_grace: Duration,
    /// WhatsApp Web URL for the engine (`--wa-url`); unused by the placeholder host.
    pub wa_url: Option<String>,
    /// Starts at once (`--restore-concurrency`).
    pub restore_concurrency: usize,
    /// How long a session may show a QR before it is stopped (`--qr-timeout-secs`; `None`:
    /// forever).
    pub qr_timeout: Option<Duration>,
    /// How to reach Consul.
    pub consul: crate::consul::Config,
    /// Other agents or servers of the datacenter, same token and TLS settings
    /// (`--consul-fallback-addr`): the session is renewed through them while the local agent is
    /// away.
    pub consul_fallbacks: Vec<crate::consul::Config>,
    /// Sessions include the local agent's `serfHealth` (`--session-serf-health`).
    pub session_serf_health: bool,
    /// Token checks.
    pub authority: Authority,
    /// The session host; `None` = built from [`WorkerConfig::session_host`].
    pub host: Option<Arc<dyn host::SessionHost>>,
    /// Which host [`default_host`] builds (`--session-host`).
    pub session_host: HostKind,
    /// Print the readiness JSON line on stdout the first time the worker is ready.
    pub print_ready_line: bool,
    /// Volume id the data directory's sentinel must carry (`--expect-volume-id`).
    pub expect_volume_id: Option<String>,
    /// Largest profile upload accepted (`--profile-max-bytes`).
    pub profile_max_bytes: u64,
    /// The `wafleet` executable to start the browser guard from (`guard.rs`); `None` runs
    /// no guard (in-process tests, the placeholder host).
    pub browser_guard: Option<PathBuf>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("shard", &self.shard)
            .field("data", &self.data)
            .field("advertise_host", &self.advertise_host)
            .field("advertise_port", &self.advertise_port)
            .field("kv_prefix", &self.kv_prefix)
            .field("session_ttl", &self.session_ttl)
            .field("lock_delay", &self.lock_delay)
            .field("drain_grace", &self.drain_grace)
            .field("restore_concurrency", &self.restore_concurrency)
            .finish_non_exhaustive()
    }
}

/// Which session host a worker runs (`--session-host engine|placeholder`).
#[derive(Debug, Clone)]
pub enum HostKind {
    /// One Chromium per session ([`engine_host::EngineHost`]), launched per this config
    /// (`WAFLEET_CHROMIUM`, `--wa-url`).
    Engine(Box<crate::engine::EngineConfig>),
    /// No browser ([`placeholder::PlaceholderHost`]): for tests of ownership and routing.
    Placeholder,
}

/// The session host `wafleet worker` runs when [`WorkerConfig::host`] is `None`: the engine
/// host (launches bounded by `--restore-concurrency`), or the placeholder.
pub fn default_host(config: &WorkerConfig) -> Arc<dyn host::SessionHost> {
    match &config.session_host {
        HostKind::Engine(engine) => engine_host::EngineHost::new(
            config.data.clone(),
            config.shard,
            (**engine).clone(),
            config.restore_concurrency,
            config.qr_timeout,
        ),
        HostKind::Placeholder => Arc::new(placeholder::PlaceholderHost::new(
            config.data.clone(),
            config.shard,
        )),
    }
}

/// The engine host behind `host`, if it is one (what the messaging routes use to send and to
/// subscribe to session events).
pub fn engine_host_of(host: &Arc<dyn host::SessionHost>) -> Option<Arc<engine_host::EngineHost>> {
    host.engine_host()
}

/// Runs a worker on `listener` until `shutdown` fires, then drains: deregisters, answers 503,
/// stops every workspace, releases every lock, destroys the session. Returns an error only for
/// bad configuration or a drain that ran out of grace.
pub async fn run(
    listener: TcpListener,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    crate::consul::validate_prefix(&config.kv_prefix)?;
    let local = listener.local_addr()?;
    let _ = crate::telemetry::prometheus();
    metrics::gauge!("wafleet_worker_ready", "shard" => config.shard.to_string()).set(0.0);
    std::fs::create_dir_all(config.data.join("workspaces"))?;

    let tracker = TaskTracker::new();
    let background = CancellationToken::new();
    let client = crate::consul::Client::new(&config.consul)?;
    let fallbacks = config
        .consul_fallbacks
        .iter()
        .map(crate::consul::Client::new)
        .collect::<Result<Vec<_>, _>>()?;
    let map = consul::watch_shard_map(&client, &config.kv_prefix, &tracker, background.clone())?;
    let host = config.host.clone().unwrap_or_else(|| default_host(&config));
    let shared = driver::Shared::new(config.shard, config.data.clone(), host, map);
    // Messaging (issue 5): its store opens once the shard lock is held (driver).
    let messaging = Arc::new(
        messaging::Messaging::from_lookup(config.shard, config.data.clone(), |k| {
            std::env::var(k).ok()
        })
        .map_err(|e| WorkerError::Config(e.to_string()))?,
    );
    if let Some(engine) = shared.host.engine_host() {
        // WhatsApp Web version control: the fleet setting in Consul (blocking watch), the
        // index.html cache on the data volume; applied at every session launch.
        let setting =
            crate::webver::watch_setting(&client, &config.kv_prefix, &tracker, background.clone())?;
        engine.use_versions(crate::webver::VersionControl::new(
            &config.data,
            config.shard,
            Some(setting),
        ));
        messaging.set_engine(engine.clone());
        tracker.spawn(messaging::pump(
            messaging.clone(),
            engine.subscribe(),
            background.clone(),
        ));
    }
    let _ = shared.messaging.set(messaging.clone());
    // Item 10 of issue 13: profile owner records, and a guard process that kills the browsers
    // if this process freezes (its threads cannot).
    let mut _guard = None;
    if let Some(engine) = shared.host.engine_host() {
        if let Err(e) = engine.use_owner_records(Duration::from_secs(OWNER_LEASE_MARGIN_SECS)) {
            tracing::error!(error = %e, "profile owner records disabled");
        }
        if let Some(exe) = &config.browser_guard {
            let host = engine.clone();
            match guard::BrowserGuard::spawn(exe, config.session_ttl / 3, move || {
                host.browser_pids()
            }) {
                Ok(g) => _guard = Some(g),
                Err(e) => {
                    tracing::error!(error = %e, "no browser guard: a frozen worker's browsers would outlive its lease")
                }
            }
        }
    }

    let api = request::Api {
        shared: shared.clone(),
        authority: Arc::new(config.authority.clone()),
        profile_max_bytes: config.profile_max_bytes,
    };
    let server_stop = CancellationToken::new();
    let server = tracker.spawn(
        warp::serve(http::filters(api))
            .incoming(listener)
            .graceful(server_stop.clone().cancelled_owned())
            .run(),
    );

    let settings = consul::ConsulSettings {
        client,
        prefix: config.kv_prefix.clone(),
        shard: config.shard,
        advertise_host: config.advertise_host.clone(),
        advertise_port: if config.advertise_port == 0 {
            local.port()
        } else {
            config.advertise_port
        },
        session_ttl: config.session_ttl,
        lock_delay: config.lock_delay,
        fallbacks,
        serf_health: config.session_serf_health,
    };
    let connector = Arc::new(consul::ConsulConnector::new(settings, tracker.clone()));
    let shard = config.shard;
    let on_first_ready: Option<Arc<dyn Fn() + Send + Sync>> = if config.print_ready_line {
        Some(Arc::new(move || {
            use std::io::Write;
            let line =
                serde_json::json!({"ready": true, "http": local.to_string(), "shard": shard});
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }))
    } else {
        None
    };
    tracing::info!(shard, http = %local, "worker starting");
    let clean = driver::run_terms(
        shared,
        connector,
        driver::DriverConfig {
            restore_concurrency: config.restore_concurrency,
            drain_grace: config.drain_grace,
            on_first_ready,
            volume: Some(config.expect_volume_id.clone()),
            owner: Some(driver::OwnerSettings {
                ttl: config.session_ttl,
                margin: Duration::from_secs(OWNER_LEASE_MARGIN_SECS),
            }),
        },
        shutdown,
    )
    .await;

    server_stop.cancel();
    background.cancel();
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        tracing::warn!("HTTP server did not stop within 2 s (open connections); exiting anyway");
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(3), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 3 s; exiting anyway");
    }
    if clean {
        tracing::info!(shard, "worker stopped");
        Ok(())
    } else {
        Err(WorkerError::DrainTimedOut)
    }
}

#[cfg(test)]
mod tests;
