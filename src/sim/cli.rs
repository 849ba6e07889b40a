//! `wafleet sim`: runs the WhatsApp Web simulator until SIGINT or SIGTERM.
//!
//! Prints one readiness line on stdout once it serves, `{"ready":true,"http":"127.0.0.1:7070"}`;
//! logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{SimConfig, SimError};

/// Arguments of `wafleet sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve the page, its websocket and the /sim control API on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// JSON file keeping linked devices across restarts.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Lifetime of a page's first QR ref, in ms.
    #[arg(long, default_value_t = super::DEFAULT_QR_FIRST_MS)]
    pub qr_first_ms: u64,
    /// Lifetime of every later QR ref, in ms.
    #[arg(long, default_value_t = super::DEFAULT_QR_NEXT_MS)]
    pub qr_next_ms: u64,
    /// QR rotations without a scan before the page goes UNPAIRED_IDLE.
    #[arg(long, default_value_t = super::DEFAULT_QR_MAX_ROTATIONS)]
    pub qr_max_rotations: u32,
    /// Time from ack 1 (server) to ack 2 (device), in ms.
    #[arg(long, default_value_t = super::DEFAULT_ACK_DEVICE_MS)]
    pub ack_device_ms: u64,
    /// Time from ack 2 (device) to ack 3 (read), in ms.
    #[arg(long, default_value_t = super::DEFAULT_ACK_READ_MS)]
    pub ack_read_ms: u64,
    /// How long a page's offline delivery (sync) takes after it connects, in ms.
    #[arg(long, default_value_t = 0)]
    pub sync_delay_ms: u64,
    /// MiB of JS heap every page allocates and keeps (small objects and strings: a stand-in
    /// for WhatsApp Web's own heap in memory benchmarks; 0 = none).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(super::MAX_PAGE_BALLAST_MB)))]
    pub page_ballast_mb: u32,
}

/// Runs the simulator.
pub async fn run(args: Args) -> Result<(), SimError> {
    let config = SimConfig {
        listen: args.listen,
        qr_first_ms: args.qr_first_ms,
        qr_next_ms: args.qr_next_ms,
        qr_max_rotations: args.qr_max_rotations,
        ack_device_ms: args.ack_device_ms,
        ack_read_ms: args.ack_read_ms,
        sync_delay_ms: args.sync_delay_ms,
        state_file: args.state_file,
        page_ballast_mb: args.page_ballast_mb,
        ..SimConfig::default()
    };
    let shutdown = crate::shutdown::token_from_signals();
    let running = super::spawn(config, shutdown).await?;
    println!(
        "{}",
        serde_json::json!({ "ready": true, "http": running.addr().to_string() })
    );
    tracing::info!(addr = %running.addr(), "simulator ready");
    running.wait().await
}
