//! The typed Consul HTTP client, blocking watches, sessions and locks, service registration and DNS SRV resolution.

pub mod cli;
