//! Operator commands over the Consul client: `wafleet shards …`, `wafleet wa-web …`,
//! `wafleet route`, `wafleet token`.

pub mod cli;
pub mod wa_web;
