//! `wafleet router --listen ADDR [--kv-prefix wafleet] [--dns-cache-ttl-ms 2000]
//! [--upstream-timeout-secs 30] [--table-file PATH]`: wires the Consul adapters to [`super::run`], registers
//! `wafleet-router` in Consul (for Prometheus discovery), and prints the readiness line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authority;
use crate::shutdown::{CancellationToken, TaskTracker};

use crate::consul::{
    Client, ROUTER_SERVICE, Registration, RegistrationKeeper, ServiceRegistration, SrvResolver,
};

use super::consul::{ConsulKvSource, DnsSrvResolver};
use super::{RouterConfig, RouterDeps, RouterError, WatchOptions, watch_map};

/// Arguments of `wafleet router`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The Consul KV prefix; the map is read from `<prefix>/shardmap`.
    #[arg(long, default_value = "wafleet")]
    pub kv_prefix: String,
    /// How long resolved shard instances are cached before a background refresh.
    #[arg(long, default_value_t = 2000)]
    pub dns_cache_ttl_ms: u64,
    /// How long to wait for a worker's response headers (then 504).
    #[arg(long, default_value_t = 30)]
    pub upstream_timeout_secs: u64,
    /// Keep the last good table (shard map and instances) in this file, and start from it
    /// when Consul cannot be reached; Consul's answers always replace it.
    #[arg(long)]
    pub table_file: Option<std::path::PathBuf>,
    /// Body cap of profile uploads (`PUT …/sessions/{s}/profile`), bytes; keep it at least the
    /// workers' `--profile-max-bytes`.
    #[arg(long, env = "WAFLEET_PROFILE_MAX_BYTES", default_value_t = crate::migrate::profile::DEFAULT_MAX_PROFILE_BYTES)]
    pub profile_max_bytes: u64,
}

/// Runs the router until SIGINT or SIGTERM.
pub async fn run(args: Args) -> Result<(), RouterError> {
    let lookup = |k: &str| std::env::var(k).ok();
    let authority = Authority::from_lookup(lookup)?;
    let client = Client::new(&crate::consul::Config::from_lookup(lookup)?)?;
    let dns = SrvResolver::from_lookup(lookup)?;
    let shutdown = crate::shutdown::token_from_signals();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    serve(listener, &args, client, dns, authority, shutdown).await
}

/// Everything `run` does after reading the environment (tests call this with their own).
pub async fn serve(
    listener: tokio::net::TcpListener,
    args: &Args,
    client: Client,
    dns: SrvResolver,
    authority: Authority,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let tracker = TaskTracker::new();
    let key = format!("{}/shardmap", args.kv_prefix.trim_end_matches('/'));
    let maps = watch_map(
        Arc::new(ConsulKvSource::new(client.clone(), key)),
        WatchOptions::default(),
        &tracker,
        shutdown.clone(),
    );
    let resolver = Arc::new(DnsSrvResolver(dns));
    let local = listener.local_addr()?;
    let shard_admin = Some(super::shards_api::ShardAdmin {
        consul: client.clone(),
        kv_prefix: args.kv_prefix.clone(),
    });
    let registering = tracker.clone();
    tracker.spawn(register(client, local, registering, shutdown.clone()));
    let config = RouterConfig {
        dns_cache_ttl: Duration::from_millis(args.dns_cache_ttl_ms.max(10)),
        upstream_timeout: Duration::from_secs(args.upstream_timeout_secs.max(1)),
        table_file: args.table_file.clone(),
        max_profile_body_bytes: args.profile_max_bytes,
        ..RouterConfig::default()
    };
    // The one readiness line on stdout (COMMON.md); /readyz tells when a table is loaded.
    println!("{}", serde_json::json!({"ready": true, "http": local}));
    let result = super::run(
        listener,
        config,
        RouterDeps {
            maps,
            resolver,
            authority,
            shard_admin,
        },
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    result
}

/// Registers `wafleet-router` with a TTL check kept passing (and re-registered after an agent
/// restart) by the shared [`RegistrationKeeper`], which deregisters on shutdown. Registration
/// is for discovery only: while the agent cannot be reached it is retried, and routing goes on.
async fn register(
    client: Client,
    local: SocketAddr,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let service = ServiceRegistration {
        id: format!("{ROUTER_SERVICE}-{}", local.port()),
        name: ROUTER_SERVICE.into(),
        tags: vec!["http".into()],
        address: if local.ip().is_unspecified() {
            String::new()
        } else {
            local.ip().to_string()
        },
        port: local.port(),
        meta: [("version".to_string(), env!("CARGO_PKG_VERSION").to_string())].into(),
        checks: Vec::new(),
    };
    let mut registration = Registration::new(service, Duration::from_secs(15));
    registration.deregister_critical_after = Some(Duration::from_secs(600));
    let mut logged = false;
    loop {
        match RegistrationKeeper::start(&client, registration.clone(), &tracker, shutdown.clone())
            .await
        {
            // The keeper runs until shutdown, then deregisters.
            Ok(_keeper) => return,
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "cannot register wafleet-router in consul yet; retrying");
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
