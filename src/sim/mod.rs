//! The WhatsApp Web simulator (`wafleet sim`): the page with WhatsApp Web's module surface and the
//! phone control API.
//!
//! A local stand-in for https://web.whatsapp.com/ used by `wafleet dev`, the tests, the chaos
//! suite and the benchmarks (DESIGN §9, docs/simulator.md). It is product code, not a mock:
//!
//! * [`state`] (pure) plays WhatsApp's servers and the phones: QR refs and their rotation, linked
//!   devices and their credentials, messages and acks, faults;
//! * [`server`] is the thin I/O around it: warp serves the page (`assets/sim/`), a websocket per
//!   page, the `/sim/…` control API, a ticker for the timers and the `--state-file` writer.
//!
//! It is not a WhatsApp protocol implementation: no Noise handshake, no Signal sessions, no
//! real QR scanning. The page exposes the module *surface* the engine's adapter uses.

pub mod cli;
pub mod server;
pub mod state;
pub mod versions;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use server::{RunningSim, run, spawn};

/// Default lifetime of a page's first QR ref.
pub const DEFAULT_QR_FIRST_MS: u64 = 60_000;
/// Default lifetime of every later ref.
pub const DEFAULT_QR_NEXT_MS: u64 = 20_000;
/// Default number of rotations before `UNPAIRED_IDLE`.
pub const DEFAULT_QR_MAX_ROTATIONS: u32 = 5;
/// Default time from ack 1 (server) to ack 2 (device).
pub const DEFAULT_ACK_DEVICE_MS: u64 = 1_000;
/// Default time from ack 2 (device) to ack 3 (read).
pub const DEFAULT_ACK_READ_MS: u64 = 2_000;
/// Default resolution of the timers.
pub const DEFAULT_TICK_MS: u64 = 100;
/// Upper bound of [`SimConfig::page_ballast_mb`].
pub const MAX_PAGE_BALLAST_MB: u32 = 4096;

/// How a simulator runs. Durations are in milliseconds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where [`spawn`] binds (`run` takes a listener instead).
    pub listen: SocketAddr,
    /// Lifetime of the first QR ref.
    pub qr_first_ms: u64,
    /// Lifetime of every later ref.
    pub qr_next_ms: u64,
    /// Rotations without a scan before the page goes `UNPAIRED_IDLE`.
    pub qr_max_rotations: u32,
    /// From ack 1 to ack 2.
    pub ack_device_ms: u64,
    /// From ack 2 to ack 3.
    pub ack_read_ms: u64,
    /// Resolution of the QR and ack timers.
    pub tick_ms: u64,
    /// How long a page's offline delivery takes after it connects (progress events, then
    /// `hasSynced`); the `sync_delay_ms` fault changes it at run time. 0 = at once.
    pub sync_delay_ms: u64,
    /// Where linked devices are kept across restarts (JSON), if anywhere.
    pub state_file: Option<PathBuf>,
    /// MiB of JS heap every page allocates at boot and keeps for its lifetime (many small
    /// objects and strings): a stand-in for WhatsApp Web's own heap in memory benchmarks, not a
    /// model of it. 0 = none.
    pub page_ballast_mb: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            qr_first_ms: DEFAULT_QR_FIRST_MS,
            qr_next_ms: DEFAULT_QR_NEXT_MS,
            qr_max_rotations: DEFAULT_QR_MAX_ROTATIONS,
            ack_device_ms: DEFAULT_ACK_DEVICE_MS,
            ack_read_ms: DEFAULT_ACK_READ_MS,
            tick_ms: DEFAULT_TICK_MS,
            sync_delay_ms: 0,
            state_file: None,
            page_ballast_mb: 0,
        }
    }
}

impl SimConfig {
    fn timing(&self) -> state::Timing {
        state::Timing {
            qr_first_ms: self.qr_first_ms,
            qr_next_ms: self.qr_next_ms,
            qr_max_rotations: self.qr_max_rotations,
            ack_device_ms: self.ack_device_ms,
            ack_read_ms: self.ack_read_ms,
            sync_ms: self.sync_delay_ms,
        }
    }
}

/// Why the simulator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding or reading the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file exists but cannot be read or parsed.
    #[error("cannot load state file {path}: {message}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The server task failed.
    #[error("simulator task failed: {0}")]
    Task(String),
}
