//! The `wafleet` command: parses arguments, sets up tracing, and calls into the library.
//!
//! Every behaviour lives in the library (`wafleet::*`); this file only wires subcommands to
//! their `run` functions and turns errors into a message and an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wafleet::telemetry::{self, LogFormat};

/// Hosts thousands of WhatsApp Web sessions on a Consul-coordinated fleet of workers.
#[derive(Debug, Parser)]
#[command(name = "wafleet", version, about)]
struct Cli {
    /// Log format: `text` for people, `json` for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WAFLEET_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker that owns one shard of the workspaces.
    Worker(wafleet::worker::cli::Args),
    /// Run a router that proxies API calls to the owning worker.
    Router(wafleet::router::cli::Args),
    /// Run a whole fleet on this machine (Consul agent, simulator, router, workers).
    Dev(wafleet::dev::cli::Args),
    /// Run the built-in single-node Consul-compatible agent.
    ConsulDev(wafleet::consul_dev::cli::Args),
    /// Talk to Consul: KV and services (configured by CONSUL_HTTP_ADDR and friends).
    Consul(wafleet::consul::cli::Args),
    /// Show or change the shard map.
    Shards(wafleet::ctl::cli::ShardsArgs),
    /// Show or change the fleet's WhatsApp Web version (pin, latest, last-good, rollback).
    WaWeb(wafleet::ctl::wa_web::Args),
    /// Show where a workspace lives.
    Route(wafleet::ctl::cli::RouteArgs),
    /// Mint a workspace token from WAFLEET_TOKEN_SECRET.
    Token(wafleet::ctl::cli::TokenArgs),
    /// Run the WhatsApp Web simulator.
    Sim(wafleet::sim::cli::Args),
    /// Back up session profiles (consistent copies with checksums and retention).
    Backup(wafleet::backup::cli::Args),
    /// Restore a session profile from a backup.
    Restore(wafleet::backup::cli::RestoreArgs),
    /// Mark or check the shared data volume (`.wafleet-volume` sentinel).
    Volume(wafleet::volume::Args),
    /// Import sessions: whatsapp-web.js LocalAuth profiles, or a tar made by `export`.
    Import(wafleet::migrate::cli::ImportArgs),
    /// Export one session's profile as a tar.
    Export(wafleet::migrate::cli::ExportArgs),
    /// Started by a worker: kills its browsers when it stops sending heartbeats (frozen).
    #[command(hide = true)]
    BrowserGuard(wafleet::worker::guard::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wafleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    use wafleet::*;
    match command {
        Command::Worker(a) => worker::cli::run(a).await?,
        Command::Router(a) => router::cli::run(a).await?,
        Command::Dev(a) => dev::cli::run(a).await?,
        Command::ConsulDev(a) => consul_dev::cli::run(a).await?,
        Command::Consul(a) => consul::cli::run(a).await?,
        Command::Shards(a) => ctl::cli::shards(a).await?,
        Command::WaWeb(a) => ctl::wa_web::run(a).await?,
        Command::Route(a) => ctl::cli::route(a).await?,
        Command::Token(a) => ctl::cli::token(a).await?,
        Command::Sim(a) => sim::cli::run(a).await?,
        Command::Backup(a) => backup::cli::run(a).await?,
        Command::Restore(a) => backup::cli::restore(a).await?,
        Command::Volume(a) => volume::run(a).await?,
        Command::Import(a) => migrate::cli::import(a).await?,
        Command::Export(a) => migrate::cli::export(a).await?,
        Command::BrowserGuard(a) => worker::guard::run(a).await?,
    }
    Ok(())
}
