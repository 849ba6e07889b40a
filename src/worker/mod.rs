//! The worker (`wafleet worker`): shard ownership, the session supervisor and the worker HTTP API.

pub mod cli;
pub mod coordinator;
pub mod host;
pub mod ownership;
pub mod placeholder;
