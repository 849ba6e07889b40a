//! wafleet's integration tests, one test binary for all of them: each file of this directory is
//! a module with its own subject (`sim`, `fleet`, `heal`, …) and `support` is the shared harness.
//! One binary instead of one per file: the test code is compiled and linked once rather than forty
//! times, which is most of a clean CI build's time. Run one subject with
//! `cargo test --test it sim::` or `cargo nextest run -E 'test(/^sim::/)'`; nextest still runs
//! every test in its own process.

mod support;

mod agent_restart;
mod api_contract;
mod backup;
mod chats;
mod consul_cluster;
mod consul_contract;
mod consul_dns;
mod consul_golden;
mod consul_props;
mod consul_scripted;
mod consul_tls;
mod contacts;
mod dashboard;
mod engine;
mod events;
mod fleet;
mod fleet_dev;
mod frozen_worker;
mod groups;
mod heal;
mod idle_cost;
mod import;
mod inbound;
mod media;
mod messaging;
mod router;
mod router_core;
mod send_types;
mod sendq;
mod settings;
mod shard_cli;
mod shard_golden;
mod shard_props;
mod sim;
mod store;
mod volume_guard;
mod wa_real;
mod webhook;
mod webhook_stream;
mod worker_sessions;
