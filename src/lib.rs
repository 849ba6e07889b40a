//! wafleet hosts thousands of WhatsApp Web sessions on a fleet of workers.
//!
//! Each worker owns one shard of the customer workspaces and drives one headless Chromium per
//! WhatsApp session; Consul holds the shard map and the locks that keep one browser per profile;
//! a stateless router sends every API call to the worker that owns the workspace.
//!
//! # Layout
//!
//! * [`shard`]: PURE. The shard map, weighted rendezvous ownership and movement plans.
//! * [`consul`]: the typed Consul HTTP client, blocking watches, sessions, locks, registration, DNS.
//! * [`consul_dev`]: the built-in single-node Consul-compatible agent (`wafleet consul-dev`).
//! * [`router`]: routing table, resolution and the proxying HTTP surface (`wafleet router`).
//! * [`worker`]: shard ownership, the session supervisor and the worker HTTP API (`wafleet worker`).
//! * [`engine`]: the WhatsApp Web driver (chromiumoxide and the page adapter in `assets/wa/`).
//! * [`webver`]: WhatsApp Web version control: the fleet setting in Consul, the per-version
//!   `index.html` cache on the shared volume, the launch plan per session.
//! * [`sim`]: the WhatsApp Web simulator used by `wafleet dev`, the tests and the chaos suite.
//! * [`store`]: the shard's SQLite (sqlx): outbox, idempotency keys, message log.
//! * [`webhook`]: webhook signing, delivery, retries and dead letters.
//! * [`sendq`]: the per-session send queue: pacing, backpressure, dispatch to the engine.
//! * [`ctl`]: operator commands over Consul: `wafleet shards …`, `wa-web …`, `route`, `token`.
//! * [`backup`]: consistent profile backups and restores.
//! * [`volume`]: the shared-volume sentinel (`wafleet volume init|check`).
//! * [`migrate`]: importing whatsapp-web.js sessions, profile export and import as tar.
//! * [`dev`]: `wafleet dev`, the one-machine fleet supervisor.
//! * [`auth`]: admin and workspace tokens.
//! * [`api`]: the JSON error body and rejection handling shared by router and worker.
//! * [`ids`]: validated workspace and session identifiers (nothing else reaches a path or key).
//! * [`shutdown`] and [`telemetry`]: signals, cancellation, tracing and metrics set-up.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod backup;
pub mod consul;
pub mod consul_dev;
pub mod ctl;
pub mod dev;
pub mod engine;
pub mod ids;
pub mod migrate;
pub mod router;
pub mod sendq;
pub mod shard;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod volume;
pub mod webhook;
pub mod webver;
pub mod worker;
