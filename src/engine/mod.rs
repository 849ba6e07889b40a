//! The WhatsApp Web engine: chromiumoxide driving one Chromium per session, the page adapter in
//! `assets/wa/`, and the per-session supervisor.
//!
//! * [`driver`]: [`Engine`] launches a headless Chromium on a session's profile directory
//!   (LocalAuth semantics: the profile *is* the session), injects the adapter into every new
//!   document and turns its reports into [`EngineEvent`]s; [`BrowserSession`] sends messages,
//!   requests pairing codes, logs out and closes the browser cleanly.
//! * [`state`]: PURE. The session state machine (STOPPED, STARTING, SCAN_QR_CODE, WORKING,
//!   FAILED), its watchdog deadlines and backoff, with time passed in.
//! * [`supervisor`]: one task per session that feeds the state machine with commands, engine
//!   events and ticks, and carries out its actions; plus a helper for bounded-concurrency
//!   restores.
//! * [`profile`]: profile directories and stale `Singleton*` lock removal, which requires proof
//!   that the caller holds the workspace lock.
//! * [`document`]: WhatsApp Web's `index.html`: serving a cached (pinned) one through `Fetch`
//!   interception, reading the live one a session was served.
//! * [`memory`]: PSS of a session's Chromium process tree from `/proc`.
//! * [`qr`]: the QR string as a PNG.
//! * [`versions`]: the seam to the worker's WhatsApp Web version control (pin per launch,
//!   proven versions and their `index.html`).
//! * [`metrics`]: the engine's Prometheus metric names and recorders.
//! * [`adapter`]: the page adapter script, joined from its parts in `assets/wa/adapter/`.
//! * [`send`]: every send type (issue 12) as one adapter command, `sendSpec`.
//! * [`contacts`]: "is this number on WhatsApp?" and the LID ↔ phone number mapping, as
//!   commands of a session's page.
//! * [`groups`]: group reads and admin actions, and the participant changes WhatsApp Web
//!   announces.
//!
//! This module knows nothing about HTTP, Consul or webhooks: the worker plugs it in. Every
//! WhatsApp-specific name lives in the adapter (`assets/wa/adapter/`).

pub mod activity;
pub mod adapter;
pub mod chats;
pub mod config;
pub mod contacts;
pub mod content;
pub mod document;
pub mod driver;
pub mod events;
pub mod groups;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod profile;
pub mod qr;
pub mod send;
pub mod state;
pub mod supervisor;
pub mod versions;

pub use config::EngineConfig;
pub use driver::{
    BrowserSession, Engine, EngineError, EventReceiver, LaunchOptions, Media, SentMessage,
};
pub use events::{EngineEvent, InboundMessage};
pub use profile::{ProfileError, WorkspaceLockGuard, remove_stale_singletons};
pub use qr::qr_png;
pub use state::{
    DEFAULT_QR_TIMEOUT, DEPRECATED_ERROR, QR_TIMEOUT_ERROR, SessionStatus, Status,
    UNSUPPORTED_ERROR,
};
pub use supervisor::{
    LaunchLimiter, SessionCommandError, SessionHandle, SessionSpec, SupervisorConfig,
    for_each_bounded, spawn_session,
};
pub use versions::{LaunchPlan, PinnedVersion, WebVersions};
