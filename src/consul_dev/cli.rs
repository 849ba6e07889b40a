//! `wafleet consul-dev`: runs the built-in single-node agent until SIGINT/SIGTERM and prints
//! the readiness line (`{"ready":true,"http":…,"dns":…}`) on stdout once it serves.

use std::net::SocketAddr;
use std::time::Duration;

use super::{AgentConfig, AgentError};

/// Arguments of `wafleet consul-dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTP API listen address (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:8500")]
    pub http: SocketAddr,
    /// Also listen here as *another agent of the datacenter* (same state; not stopped by the
    /// `agent-restart` fault): the address clients fall back to while the local agent is away
    /// (`WAFLEET_CONSUL_FALLBACK_ADDRS`). Printed as `remote_http` in the readiness line.
    #[arg(long)]
    pub remote_http: Option<SocketAddr>,
    /// How long the agent must be down without leaving before its node's `serfHealth` turns
    /// critical (Go duration; the earliest a real cluster's failure detector does it: 5s).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub serf_detect: Duration,
    /// DNS listen address, UDP and TCP (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:8600")]
    pub dns: SocketAddr,
    /// Require this token (`X-Consul-Token`) on every `/v1/` request.
    #[arg(long)]
    pub acl_token: Option<String>,
    /// Node name.
    #[arg(long, default_value = "wafleet-dev")]
    pub node: String,
    /// Datacenter name.
    #[arg(long, default_value = "dc1")]
    pub datacenter: String,
    /// Smallest session TTL accepted (Go duration; Consul: 10s). For fast chaos runs only.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub session_ttl_min: Duration,
    /// A session is invalidated TTL × this after its last renewal (Consul: 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub session_ttl_multiplier: u32,
    /// Smallest `DeregisterCriticalServiceAfter` honoured (Go duration; Consul: 1m).
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub deregister_critical_min: Duration,
    /// Shortest HTTP-check interval (Go duration; Consul: 1s).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub min_check_interval: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    super::duration::parse_go_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (use Go syntax such as 10s, 1m, 500ms)"))
}

/// Errors of `wafleet consul-dev`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent could not start.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The readiness line could not be written.
    #[error("cannot write the readiness line: {0}")]
    Stdout(std::io::Error),
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: Args) -> Result<(), CliError> {
    let shutdown = crate::shutdown::token_from_signals();
    let agent = super::spawn(
        AgentConfig {
            http: args.http,
            dns: args.dns,
            acl_token: args.acl_token.filter(|t| !t.is_empty()),
            node: args.node,
            datacenter: args.datacenter,
            session_ttl_min: args.session_ttl_min,
            session_ttl_multiplier: args.session_ttl_multiplier,
            deregister_critical_min: args.deregister_critical_min,
            min_check_interval: args.min_check_interval,
            remote_http: args.remote_http,
            serf_detect: args.serf_detect,
            ..AgentConfig::default()
        },
        shutdown.clone(),
    )
    .await?;
    // Written by hand to keep the documented key order (`ready` first); socket addresses
    // contain nothing JSON would escape.
    let remote = agent
        .remote_http_addr()
        .map(|a| format!(r#","remote_http":"{a}""#))
        .unwrap_or_default();
    let line = format!(
        r#"{{"ready":true,"http":"{}","dns":"{}"{remote}}}"#,
        agent.http_addr(),
        agent.dns_addr()
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").map_err(CliError::Stdout)?;
        out.flush().map_err(CliError::Stdout)?;
    }
    shutdown.cancelled().await;
    agent.stopped().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn defaults_are_consul_s_and_knobs_parse() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.args.http.to_string(), "127.0.0.1:8500");
        assert_eq!(cli.args.dns.to_string(), "127.0.0.1:8600");
        assert_eq!(cli.args.session_ttl_min, Duration::from_secs(10));
        assert_eq!(cli.args.session_ttl_multiplier, 2);
        assert_eq!(cli.args.deregister_critical_min, Duration::from_secs(60));
        assert_eq!(cli.args.remote_http, None);
        assert_eq!(cli.args.serf_detect, Duration::from_secs(5));
        let cli = Cli::try_parse_from([
            "x",
            "--http",
            "127.0.0.1:0",
            "--acl-token",
            "t",
            "--session-ttl-min",
            "500ms",
            "--session-ttl-multiplier",
            "1",
            "--remote-http",
            "127.0.0.1:0",
            "--serf-detect",
            "2s",
        ])
        .unwrap();
        assert_eq!(cli.args.remote_http.map(|a| a.port()), Some(0));
        assert_eq!(cli.args.serf_detect, Duration::from_secs(2));
        assert_eq!(cli.args.session_ttl_min, Duration::from_millis(500));
        assert_eq!(cli.args.acl_token.as_deref(), Some("t"));
        assert!(Cli::try_parse_from(["x", "--session-ttl-min", "soon"]).is_err());
        assert!(Cli::try_parse_from(["x", "--session-ttl-multiplier", "0"]).is_err());
    }
}
