//! SRV resolution through Consul's DNS interface (hickory-resolver).
//!
//! The router's fallback for "find an instance of shard k": an SRV query for
//! `shard-<k>.wafleet-worker.service.consul.` against `WAFLEET_CONSUL_DNS` (default
//! `127.0.0.1:8600`, UDP, no search domains). Consul answers SRV targets either as
//! `<node>.node.<dc>.consul.` (service without its own address; the A record is in the
//! ADDITIONAL section) or `<hex-ip>.addr.<dc>.consul.` (service with an explicit address; the
//! IP is in the name itself). Critical instances are omitted by Consul. Answers have TTL 0, and
//! the resolver's cache is cleared before every lookup so nothing is cached here: callers
//! that want caching do it themselves (the router's `--dns-cache-ttl-ms`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, Record};

use super::{ConsulError, WORKER_SERVICE};

/// Default address of Consul's DNS interface.
pub const DEFAULT_DNS_ADDR: &str = "127.0.0.1:8600";

/// The SRV name of shard `k`'s worker: `shard-<k>.wafleet-worker.service.consul.`.
pub fn shard_srv_name(shard: u32) -> String {
    format!("shard-{shard}.{WORKER_SERVICE}.service.consul.")
}

/// What an SRV target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvTarget {
    /// `<hex-ip>.addr.<dc>.consul.`: the address is encoded in the name.
    Addr(IpAddr),
    /// `<node>.node.<dc>.consul.`: look the node up (ADDITIONAL section or an A query).
    Node {
        /// Node name.
        node: String,
        /// Datacenter.
        datacenter: String,
    },
    /// Any other name (looked up with an A query).
    Other(String),
}

/// Classifies an SRV target name (case-insensitive, trailing dot optional).
pub fn parse_target(name: &str) -> SrvTarget {
    let trimmed = name.trim_end_matches('.');
    let labels: Vec<&str> = trimmed.split('.').collect();
    if labels.len() == 4 && labels[3].eq_ignore_ascii_case("consul") {
        if labels[1].eq_ignore_ascii_case("addr") {
            if let Some(ip) = decode_hex_ip(labels[0]) {
                return SrvTarget::Addr(ip);
            }
        } else if labels[1].eq_ignore_ascii_case("node") && !labels[0].is_empty() {
            return SrvTarget::Node {
                node: labels[0].to_owned(),
                datacenter: labels[2].to_owned(),
            };
        }
    }
    SrvTarget::Other(name.to_owned())
}

/// Decodes Consul's hex IP label: 8 hex digits for IPv4 (`c000020a` = 192.0.2.10), 32 for
/// IPv6.
pub fn decode_hex_ip(label: &str) -> Option<IpAddr> {
    let bytes = hex::decode(label).ok()?;
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Addresses for `target` found in a set of records (the ADDITIONAL section).
fn addresses_in(records: &[Record], target: &str) -> Vec<IpAddr> {
    records
        .iter()
        .filter(|r| same_name(&r.name.to_ascii(), target))
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// Resolves Consul service SRV records to socket addresses.
#[derive(Clone)]
pub struct SrvResolver {
    resolver: TokioResolver,
    server: SocketAddr,
}

impl std::fmt::Debug for SrvResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrvResolver")
            .field("server", &self.server)
            .finish()
    }
}

impl SrvResolver {
    /// A resolver asking only `server` over UDP.
    pub fn new(server: SocketAddr) -> Result<SrvResolver, ConsulError> {
        let mut conn = ConnectionConfig::udp();
        conn.port = server.port();
        let ns = NameServerConfig::new(server.ip(), true, vec![conn]);
        let config = ResolverConfig::from_name_servers(vec![ns]);
        let mut opts = ResolverOpts::default();
        opts.ndots = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.recursion_desired = false;
        opts.cache_size = 1;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| ConsulError::Dns(format!("building the resolver: {e}")))?;
        Ok(SrvResolver { resolver, server })
    }

    /// Reads `WAFLEET_CONSUL_DNS` (`host:port`, default `127.0.0.1:8600`).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SrvResolver, ConsulError> {
        let raw = lookup("WAFLEET_CONSUL_DNS")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_DNS_ADDR.to_owned());
        let addr: SocketAddr = raw
            .parse()
            .map_err(|e| ConsulError::Config(format!("WAFLEET_CONSUL_DNS {raw:?}: {e}")))?;
        SrvResolver::new(addr)
    }

    /// The DNS server asked.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The instances of shard `k` (empty when none is healthy).
    pub async fn resolve_shard(&self, shard: u32) -> Result<Vec<SocketAddr>, ConsulError> {
        self.resolve(&shard_srv_name(shard)).await
    }

    /// SRV lookup of `name` (made fully qualified) → socket addresses, in answer order.
    /// "No such name" and "no records" are an empty list; other failures are errors.
    pub async fn resolve(&self, name: &str) -> Result<Vec<SocketAddr>, ConsulError> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        self.resolver.clear_cache();
        let lookup = match self.resolver.srv_lookup(fqdn.as_str()).await {
            Ok(l) => l,
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => return Ok(Vec::new()),
            Err(e) => return Err(ConsulError::Dns(format!("SRV {fqdn}: {e}"))),
        };
        let mut out = Vec::new();
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            let target = srv.target.to_ascii();
            let ips = match parse_target(&target) {
                SrvTarget::Addr(ip) => vec![ip],
                _ => {
                    let found = addresses_in(lookup.additionals(), &target);
                    if found.is_empty() {
                        self.lookup_a(&target).await?
                    } else {
                        found
                    }
                }
            };
            out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, srv.port)));
        }
        Ok(out)
    }

    async fn lookup_a(&self, target: &str) -> Result<Vec<IpAddr>, ConsulError> {
        self.resolver.clear_cache();
        match self.resolver.ipv4_lookup(target).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(ConsulError::Dns(format!("A {target}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_target_forms() {
        assert_eq!(
            parse_target("c000020a.addr.dc1.consul."),
            SrvTarget::Addr("192.0.2.10".parse().unwrap())
        );
        assert_eq!(
            parse_target("7F000001.ADDR.dc1.consul"),
            SrvTarget::Addr("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_target("20010db8000000000000000000000001.addr.dc1.consul."),
            SrvTarget::Addr("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_target("node1.node.dc1.consul."),
            SrvTarget::Node {
                node: "node1".into(),
                datacenter: "dc1".into()
            }
        );
        // Not hex, wrong length, or not Consul: looked up as names.
        for other in [
            "zz00020a.addr.dc1.consul.",
            "c00002.addr.dc1.consul.",
            "host.example.com.",
            "a.node.dc1.example.",
        ] {
            assert_eq!(
                parse_target(other),
                SrvTarget::Other(other.into()),
                "{other}"
            );
        }
    }

    #[test]
    fn shard_names() {
        assert_eq!(shard_srv_name(7), "shard-7.wafleet-worker.service.consul.");
    }

    #[test]
    fn dns_address_from_lookup() {
        assert_eq!(
            SrvResolver::from_lookup(|_| None).unwrap().server(),
            "127.0.0.1:8600".parse().unwrap()
        );
        assert!(SrvResolver::from_lookup(|_| Some("nope".into())).is_err());
    }
}
