//! The worker (`wafleet worker`): shard ownership, the session supervisor and the worker HTTP API.

pub mod cli;
