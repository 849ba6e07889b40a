//! The built-in single-node Consul-compatible agent (`wafleet consul-dev`): HTTP API subset and DNS.

pub mod cli;
