//! The typed Consul HTTP client, blocking watches, sessions and locks, service registration
//! and DNS SRV resolution.
//!
//! This module only *talks* to Consul (a real cluster or the built-in agent of
//! [`crate::consul_dev`]); it holds no coordination policy. See `docs/consul.md`.
//!
//! * [`Client`] / [`Config`]: the HTTP API subset (KV, sessions, agent, health, txn).
//! * [`watch`]: blocking-query loops published through `tokio::sync::watch`.
//! * [`session`]: [`SessionKeeper`] (renewal and fencing) and lock helpers.
//! * [`registration`]: [`RegistrationKeeper`] (service + TTL check, re-registration).
//! * [`dns`]: [`SrvResolver`] for `shard-<k>.wafleet-worker.service.consul`.

pub mod cli;
mod client;
pub mod dns;
pub(crate) mod duration;
mod error;
pub mod key;
pub mod registration;
pub mod session;
mod types;
pub mod watch;

pub use client::{Client, Config, DEFAULT_HTTP_ADDR, MAX_TXN_OPS, MAX_WAIT, QueryOptions};
pub use dns::SrvResolver;
pub use duration::{format_go_duration, parse_go_duration};
pub use error::ConsulError;
pub use key::{validate_key, validate_prefix};
pub use registration::{Registration, RegistrationKeeper};
pub use session::{SessionConfig, SessionKeeper};
pub use types::*;
pub use watch::{WatchOptions, WatchState};

/// Name of the worker service in Consul (DESIGN §3).
pub const WORKER_SERVICE: &str = "wafleet-worker";
/// Name of the router service in Consul.
pub const ROUTER_SERVICE: &str = "wafleet-router";
