//! Operator commands over the Consul client: `wafleet shards …`, `wafleet route`, `wafleet token`.

pub mod cli;
