//! Consul adapters for the router core: the shared client ([`crate::consul::Client`]) behind
//! [`KvSource`] (one blocking read of the shard map key) and the shared DNS resolver
//! ([`crate::consul::SrvResolver`]) behind [`Resolver`].
//!
//! The router core knows only the two traits in [`super::source`]; everything Consul-specific
//! (blocking-query parameters, HTTP timeouts longer than `wait + wait/16`, SRV targets and the
//! ADDITIONAL section) lives in `crate::consul`.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::consul::{Client, QueryOptions, SrvResolver};

use super::source::{KvRead, KvSource, ResolveError, Resolver, SourceError};

/// A [`KvSource`] reading one key (e.g. `wafleet/shardmap`) with blocking queries.
#[derive(Debug, Clone)]
pub struct ConsulKvSource {
    client: Client,
    key: String,
}

impl ConsulKvSource {
    /// Watches `key` through `client`.
    pub fn new(client: Client, key: String) -> Self {
        Self { client, key }
    }
}

impl KvSource for ConsulKvSource {
    fn read(&self, index: u64, wait: Duration) -> BoxFuture<'_, Result<KvRead, SourceError>> {
        Box::pin(async move {
            let q = if index > 0 {
                QueryOptions::blocking(index, wait)
            } else {
                QueryOptions::default()
            };
            let (pair, meta) = self
                .client
                .kv_get(&self.key, &q)
                .await
                .map_err(|e| SourceError(error_chain(&e)))?;
            Ok(KvRead {
                index: meta.index,
                value: pair.map(|p| p.value.unwrap_or_default()),
            })
        })
    }
}

/// A [`Resolver`] asking Consul DNS for `shard-<k>.wafleet-worker.service.consul` (SRV).
#[derive(Debug, Clone)]
pub struct DnsSrvResolver(pub SrvResolver);

impl Resolver for DnsSrvResolver {
    fn resolve(&self, shard: u32) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>> {
        Box::pin(async move {
            let mut addrs = self
                .0
                .resolve_shard(shard)
                .await
                .map_err(|e| ResolveError(error_chain(&e)))?;
            // Consul shuffles answers; a stable order keeps round-robin and "changed" logs calm.
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        })
    }
}

/// An error and its causes on one line ("a: b: c"), for logs and messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
