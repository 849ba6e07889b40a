//! `wafleet consul-dev`: runs the built-in single-node agent until SIGINT/SIGTERM and prints
//! the readiness line (`{"ready":true,"http":…,"dns":…}`) on stdout once it serves.

use std::net::SocketAddr;

use super::{AgentConfig, AgentError};

/// Arguments of `wafleet consul-dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTP API listen address (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:8500")]
    pub http: SocketAddr,
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
            ..AgentConfig::default()
        },
        shutdown.clone(),
    )
    .await?;
    // Written by hand to keep the documented key order (`ready` first); socket addresses
    // contain nothing JSON would escape.
    let line = format!(
        r#"{{"ready":true,"http":"{}","dns":"{}"}}"#,
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
