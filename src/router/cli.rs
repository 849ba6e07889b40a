//! `wafleet router --listen ADDR [--kv-prefix wafleet] [--dns-cache-ttl-ms 2000]
//! [--upstream-timeout-secs 30]`: wires the Consul adapters to [`super::run`], registers
//! `wafleet-router` in Consul (for Prometheus discovery), and prints the readiness line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authority;
use crate::shutdown::{CancellationToken, TaskTracker};

use super::consul::{ConsulConfig, ConsulHttp, ConsulKvSource, DnsSrvResolver};
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
}

/// Runs the router until SIGINT or SIGTERM.
pub async fn run(args: Args) -> Result<(), RouterError> {
    let lookup = |k: &str| std::env::var(k).ok();
    let authority = Authority::from_lookup(lookup)?;
    let consul = ConsulConfig::from_lookup(lookup)?;
    let shutdown = crate::shutdown::token_from_signals();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    serve(listener, &args, consul, authority, shutdown).await
}

/// Everything `run` does after reading the environment (tests call this with their own).
pub async fn serve(
    listener: tokio::net::TcpListener,
    args: &Args,
    consul: ConsulConfig,
    authority: Authority,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let tracker = TaskTracker::new();
    let http = ConsulHttp::new(&consul)?;
    let key = format!("{}/shardmap", args.kv_prefix.trim_end_matches('/'));
    let maps = watch_map(
        Arc::new(ConsulKvSource::new(http.clone(), key)),
        WatchOptions::default(),
        &tracker,
        shutdown.clone(),
    );
    let resolver = Arc::new(DnsSrvResolver::new(consul.dns_addr, "wafleet-worker"));
    let local = listener.local_addr()?;
    tracker.spawn(register(http, local, shutdown.clone()));
    let config = RouterConfig {
        dns_cache_ttl: Duration::from_millis(args.dns_cache_ttl_ms.max(10)),
        upstream_timeout: Duration::from_secs(args.upstream_timeout_secs.max(1)),
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
        },
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    result
}

/// Keeps `wafleet-router` registered with a TTL check while the router runs (re-registering
/// after an agent restart), and deregisters it on shutdown. Failures are logged and retried:
/// registration is for discovery only and must never stop routing.
async fn register(http: ConsulHttp, local: SocketAddr, shutdown: CancellationToken) {
    let id = format!("wafleet-router-{}", local.port());
    let check_id = format!("{id}:ttl");
    let mut body = serde_json::json!({
        "ID": id,
        "Name": "wafleet-router",
        "Tags": ["http"],
        "Port": local.port(),
        "Meta": {"version": env!("CARGO_PKG_VERSION")},
        "Checks": [{"CheckID": check_id, "Name": "wafleet-router TTL", "TTL": "15s",
                    "DeregisterCriticalServiceAfter": "10m"}],
    });
    if !local.ip().is_unspecified() {
        body["Address"] = serde_json::json!(local.ip().to_string());
    }
    let mut registered = false;
    loop {
        let pass = if registered {
            http.pass_check(&check_id).await
        } else {
            Err(super::consul::ConsulError::Decode(String::new()))
        };
        if pass.is_err() {
            // Not registered yet, or the agent forgot us (restart): register again.
            match http.register_service(&body).await {
                Ok(()) => {
                    registered = http.pass_check(&check_id).await.is_ok();
                    if registered {
                        tracing::info!(service = %id, "registered wafleet-router in consul");
                    }
                }
                Err(e) => {
                    if registered {
                        tracing::warn!(error = %e, "consul registration lost; retrying");
                    }
                    registered = false;
                    tracing::debug!(error = %e, "consul registration failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    if registered && let Err(e) = http.deregister_service(&id).await {
        tracing::warn!(error = %e, "could not deregister wafleet-router");
    }
}
