//! Operator commands over the Consul client: `wafleet shards …`, `wafleet wa-web …`,
//! `wafleet route`, `wafleet token`.
//!
//! [`change`] is the one implementation of a shard-map change (plan, then CAS write), shared
//! by the CLI and the router's admin routes.

pub mod change;
pub mod cli;
pub mod wa_web;
