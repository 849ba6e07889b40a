//! `wafleet worker`: flags, environment, and the call into [`super::run`].

use std::path::PathBuf;
use std::time::Duration;

use super::{WorkerConfig, WorkerError};

/// Arguments of `wafleet worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shard this worker owns (Nomad: `${NOMAD_ALLOC_INDEX}`).
    #[arg(long)]
    pub shard: u32,
    /// Data directory: `workspaces/<ws>/<session>/…` and `shards/<k>/` (shared storage).
    #[arg(long)]
    pub data: PathBuf,
    /// Listen address (port 0 picks a free port).
    #[arg(long)]
    pub listen: String,
    /// `HOST:PORT` registered in Consul; port 0 means the bound port.
    #[arg(long)]
    pub advertise: String,
    /// Consul KV prefix.
    #[arg(long, default_value = super::DEFAULT_KV_PREFIX)]
    pub kv_prefix: String,
    /// Consul session TTL in seconds (Consul accepts 10..=86400); fencing at 2/3 of it.
    #[arg(long, default_value_t = super::DEFAULT_SESSION_TTL_SECS)]
    pub session_ttl_secs: u64,
    /// Another Consul agent or server of the datacenter (`host:port` or URL; repeatable), used
    /// with the same token and TLS settings to renew the session while the local agent does
    /// not answer (a restart), so the worker is not fenced by it.
    #[arg(
        long = "consul-fallback-addr",
        env = "WAFLEET_CONSUL_FALLBACK_ADDRS",
        value_delimiter = ','
    )]
    pub consul_fallback_addrs: Vec<String>,
    /// Tie the session to the local agent's `serfHealth` (Consul's default): a lost host frees
    /// its shard within seconds, but a local agent restart longer than the servers' failure
    /// detection (~5 s) fences the worker. Off: the TTL alone bounds the session.
    #[arg(long, env = "WAFLEET_SESSION_SERF_HEALTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub session_serf_health: bool,
    /// Consul lock delay in seconds (0..=60).
    #[arg(long, default_value_t = super::DEFAULT_LOCK_DELAY_SECS)]
    pub lock_delay_secs: u64,
    /// Seconds allowed for a drain on SIGTERM/SIGINT (keep below Nomad's kill_timeout).
    #[arg(long, default_value_t = super::DEFAULT_DRAIN_GRACE_SECS)]
    pub drain_grace_secs: u64,
    /// WhatsApp Web URL (the simulator in dev and tests).
    #[arg(long)]
    pub wa_url: Option<String>,
    /// How many workspaces start at once after a restart (and how many Chromiums launch at
    /// once).
    #[arg(long, default_value_t = super::DEFAULT_RESTORE_CONCURRENCY)]
    pub restore_concurrency: usize,
    /// How long a session may wait in SCAN_QR_CODE (nobody scans the QR or enters the pairing
    /// code) before it is stopped, freeing its browser; a start command opens a new window.
    /// 0 = no limit.
    #[arg(long, default_value_t = crate::engine::DEFAULT_QR_TIMEOUT.as_secs())]
    pub qr_timeout_secs: u64,
    /// Session host: `engine` (Chromium per session) or `placeholder` (no browser; tests of
    /// ownership and routing).
    #[arg(long, default_value = "engine", value_parser = ["engine", "placeholder"])]
    pub session_host: String,
    /// Require this id in the data directory's volume sentinel (`wafleet volume init`); the
    /// sentinel itself is always required.
    #[arg(long, env = "WAFLEET_VOLUME_ID")]
    pub expect_volume_id: Option<String>,
    /// Largest profile upload (`PUT …/sessions/{s}/profile`, a tar), bytes.
    #[arg(long, env = "WAFLEET_PROFILE_MAX_BYTES", default_value_t = crate::migrate::profile::DEFAULT_MAX_PROFILE_BYTES)]
    pub profile_max_bytes: u64,
    /// Fewer Chromium processes per session: no spare or WebUI renderer, the GPU, network and
    /// audio services inside the browser process (docs/engine.md §9); `false` restores
    /// Chromium's own process layout.
    #[arg(long, env = "WAFLEET_TRIM_CHROMIUM_HELPERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub trim_chromium_helpers: bool,
    /// V8 flags for every session's renderer (`--js-flags`, space-separated; "" for none).
    #[arg(
        long,
        env = "WAFLEET_JS_FLAGS",
        default_value = "--optimize-for-size",
        allow_hyphen_values = true
    )]
    pub js_flags: String,
    /// Seconds between memory purges of a WORKING session's browser (memory-pressure
    /// notification and a full GC); 0 = never.
    #[arg(long, env = "WAFLEET_PURGE_INTERVAL_SECS", default_value_t = crate::engine::config::DEFAULT_PURGE_INTERVAL.as_secs())]
    pub purge_interval_secs: u64,
    /// V8 old-generation heap cap per renderer in MiB; 0 = Chromium's default.
    #[arg(long, env = "WAFLEET_MAX_OLD_SPACE_MB", default_value_t = 0)]
    pub max_old_space_mb: u32,
    /// Restart a WORKING session cleanly (profile kept, no QR) once its browser's PSS grows
    /// past this many MiB; 0 = never.
    #[arg(long, env = "WAFLEET_SESSION_MEMORY_BUDGET_MB", default_value_t = 0)]
    pub session_memory_budget_mb: u64,
}

/// Splits `host:port` (IPv6 in brackets) into its parts.
pub fn split_host_port(s: &str) -> Result<(String, u16), WorkerError> {
    let bad = || WorkerError::Config(format!("--advertise {s:?}: expected HOST:PORT"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
}

/// Builds the config from flags and an environment lookup.
pub fn config(
    args: &Args,
    lookup: impl Fn(&str) -> Option<String> + Copy,
) -> Result<WorkerConfig, WorkerError> {
    let (advertise_host, advertise_port) = split_host_port(&args.advertise)?;
    if !(10..=86_400).contains(&args.session_ttl_secs) {
        return Err(WorkerError::Config(
            "--session-ttl-secs must be within 10..=86400 (Consul's range)".into(),
        ));
    }
    if args.lock_delay_secs > 60 {
        return Err(WorkerError::Config(
            "--lock-delay-secs must be within 0..=60".into(),
        ));
    }
    let consul = crate::consul::Config::from_lookup(lookup)?;
    let consul_fallbacks = args
        .consul_fallback_addrs
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| {
            consul
                .for_address(a)
                .map_err(|e| WorkerError::Config(format!("--consul-fallback-addr {a:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let placeholder = args.session_host == "placeholder";
    let session_host = if placeholder {
        super::HostKind::Placeholder
    } else {
        let mut engine = crate::engine::EngineConfig::from_lookup(lookup);
        if let Some(url) = &args.wa_url {
            if url::Url::parse(url).is_err() {
                return Err(WorkerError::Config(format!(
                    "--wa-url {url:?} is not a URL"
                )));
            }
            engine = engine.with_wa_url(url.clone());
        }
        engine.trim_helpers = args.trim_chromium_helpers;
        engine.js_flags = args
            .js_flags
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(bad) = engine.js_flags.iter().find(|f| !f.starts_with("--")) {
            return Err(WorkerError::Config(format!(
                "--js-flags: {bad:?} is not a V8 flag (each starts with --)"
            )));
        }
        engine.purge_interval =
            (args.purge_interval_secs > 0).then(|| Duration::from_secs(args.purge_interval_secs));
        engine.max_old_space_mb = (args.max_old_space_mb > 0).then_some(args.max_old_space_mb);
        engine.memory_budget_mb =
            (args.session_memory_budget_mb > 0).then_some(args.session_memory_budget_mb);
        super::HostKind::Engine(Box::new(engine))
    };
    Ok(WorkerConfig {
        shard: args.shard,
        data: args.data.clone(),
        advertise_host,
        advertise_port,
        kv_prefix: args.kv_prefix.clone(),
        session_ttl: Duration::from_secs(args.session_ttl_secs),
        lock_delay: Duration::from_secs(args.lock_delay_secs),
        drain_grace: Duration::from_secs(args.drain_grace_secs),
        wa_url: args.wa_url.clone(),
        restore_concurrency: args.restore_concurrency.max(1),
        qr_timeout: (args.qr_timeout_secs > 0).then(|| Duration::from_secs(args.qr_timeout_secs)),
        consul,
        consul_fallbacks,
        session_serf_health: args.session_serf_health,
        authority: crate::auth::Authority::from_lookup(lookup)?,
        host: None,
        session_host,
        print_ready_line: true,
        expect_volume_id: args.expect_volume_id.clone().filter(|v| !v.is_empty()),
        profile_max_bytes: args.profile_max_bytes,
        browser_guard: if placeholder {
            None
        } else {
            std::env::current_exe().ok()
        },
    })
}

/// Runs `wafleet worker` until SIGTERM/SIGINT and a drain.
pub async fn run(args: Args) -> Result<(), WorkerError> {
    let config = config(&args, |k| std::env::var(k).ok())?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let shutdown = crate::shutdown::token_from_signals();
    super::run(listener, config, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn fallback_addresses_repeat_or_come_comma_separated() {
        use clap::Parser;
        let base = [
            "x",
            "--shard",
            "0",
            "--data",
            "d",
            "--listen",
            "l",
            "--advertise",
            "a:1",
        ];
        let cli = Cli::try_parse_from(base).unwrap();
        assert!(cli.args.consul_fallback_addrs.is_empty());
        assert!(!cli.args.session_serf_health);
        let mut argv = base.to_vec();
        argv.extend([
            "--consul-fallback-addr",
            "10.0.0.1:8500,10.0.0.2:8500",
            "--consul-fallback-addr",
            "https://10.0.0.3:8501",
            "--session-serf-health",
            "true",
        ]);
        let cli = Cli::try_parse_from(argv).unwrap();
        assert_eq!(
            cli.args.consul_fallback_addrs,
            ["10.0.0.1:8500", "10.0.0.2:8500", "https://10.0.0.3:8501"]
        );
        assert!(cli.args.session_serf_health);
    }

    #[test]
    fn advertise_is_host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:9100").unwrap(),
            ("127.0.0.1".into(), 9100)
        );
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1".into(), 80));
        for bad in ["127.0.0.1", ":80", "h:x", "h:70000"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }
}
