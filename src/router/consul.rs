//! Thin Consul adapters for the router and `wafleet shards …`: KV reads (blocking), CAS writes
//! and key listings over HTTP, SRV lookups over Consul's DNS interface, and service
//! registration.
//!
//! This is deliberately small: the router core talks to the traits in [`super::source`]
//! ([`super::KvSource`], [`super::Resolver`]), and these types implement them. When the shared
//! client in `crate::consul` grows the same operations, these adapters can be replaced by it
//! without touching the router core. What is here follows the facts in
//! reference/consul-nomad.md §1: presence-only flags (`?keys`, never `?recurse=false`),
//! `X-Consul-Index` taken from every answer (also a 404), plain-text error bodies, an HTTP
//! timeout longer than `wait + wait/16`, SRV targets resolved from the ADDITIONAL section.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::source::{KvRead, KvSource, ResolveError, Resolver, SourceError};

/// Default `CONSUL_HTTP_ADDR`.
pub const DEFAULT_HTTP_ADDR: &str = "http://127.0.0.1:8500";
/// Default `WAFLEET_CONSUL_DNS`.
pub const DEFAULT_DNS_ADDR: &str = "127.0.0.1:8600";

/// Errors talking to Consul.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The configuration (environment) is unusable.
    #[error("consul configuration: {0}")]
    Config(String),
    /// The request did not complete (connection refused, timeout, reset).
    #[error("consul unreachable at {addr}")]
    Transport {
        /// The agent address.
        addr: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// Consul answered with an error status (its body is plain text).
    #[error("consul answered {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The plain-text body.
        body: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from consul: {0}")]
    Decode(String),
}

/// Where and how to reach Consul (CONSUL_HTTP_ADDR and friends, WAFLEET_CONSUL_DNS).
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:8500`.
    pub http_addr: String,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// PEM file of the CA that signed the agent's certificate.
    pub cacert: Option<String>,
    /// PEM client certificate and key for mutual TLS.
    pub client_cert: Option<(String, String)>,
    /// Consul DNS interface.
    pub dns_addr: SocketAddr,
}

// === impl ConsulConfig ===

impl ConsulConfig {
    /// Reads the documented environment variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConsulError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut http_addr = get("CONSUL_HTTP_ADDR").unwrap_or_else(|| DEFAULT_HTTP_ADDR.into());
        // Consul's own CLI accepts a bare host:port.
        if !http_addr.starts_with("http://") && !http_addr.starts_with("https://") {
            http_addr = format!("http://{http_addr}");
        }
        let http_addr = http_addr.trim_end_matches('/').to_owned();
        let dns = get("WAFLEET_CONSUL_DNS").unwrap_or_else(|| DEFAULT_DNS_ADDR.into());
        let dns_addr = dns
            .parse()
            .map_err(|e| ConsulError::Config(format!("WAFLEET_CONSUL_DNS={dns}: {e}")))?;
        let client_cert = match (get("CONSUL_CLIENT_CERT"), get("CONSUL_CLIENT_KEY")) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConsulError::Config(
                    "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together".into(),
                ));
            }
        };
        Ok(Self {
            http_addr,
            token: get("CONSUL_HTTP_TOKEN"),
            cacert: get("CONSUL_CACERT"),
            client_cert,
            dns_addr,
        })
    }

    /// A plain-HTTP configuration for an agent at `http` with DNS at `dns` (tests, `dev`).
    pub fn local(http: SocketAddr, dns: SocketAddr) -> Self {
        Self {
            http_addr: format!("http://{http}"),
            token: None,
            cacert: None,
            client_cert: None,
            dns_addr: dns,
        }
    }
}

/// One KV entry as Consul returns it (the fields wafleet uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The decoded value.
    pub value: Vec<u8>,
    /// The entry's ModifyIndex (what a CAS write must name).
    pub modify_index: u64,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntry {
    value: Option<String>,
    modify_index: u64,
}

/// The Consul HTTP API subset wafleet's router and operator commands need.
#[derive(Debug, Clone)]
pub struct ConsulHttp {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

// === impl ConsulHttp ===

impl ConsulHttp {
    /// A client for `config`; builds TLS settings from the PEM files it names.
    pub fn new(config: &ConsulConfig) -> Result<Self, ConsulError> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = &config.cacert {
            let pem = std::fs::read(ca)
                .map_err(|e| ConsulError::Config(format!("CONSUL_CACERT {ca}: {e}")))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ConsulError::Config(format!("CONSUL_CACERT {ca}: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        if let Some((cert, key)) = &config.client_cert {
            let mut pem = std::fs::read(cert)
                .map_err(|e| ConsulError::Config(format!("CONSUL_CLIENT_CERT {cert}: {e}")))?;
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| ConsulError::Config(format!("CONSUL_CLIENT_KEY {key}: {e}")))?,
            );
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| ConsulError::Config(format!("client certificate: {e}")))?;
            b = b.identity(id);
        }
        let client = b
            .build()
            .map_err(|e| ConsulError::Config(format!("http client: {e}")))?;
        Ok(Self {
            client,
            base: config.http_addr.clone(),
            token: config.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.header("X-Consul-Token", t);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response, ConsulError> {
        r.send().await.map_err(|source| ConsulError::Transport {
            addr: self.base.clone(),
            source,
        })
    }

    async fn status_error(resp: reqwest::Response) -> ConsulError {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        ConsulError::Status {
            status,
            body: body.trim().chars().take(300).collect(),
        }
    }

    /// Reads one key. With `index > 0` this is a blocking query that returns when the KV
    /// index passes `index` or `wait` expires. Returns the `X-Consul-Index` and the entry
    /// (`None` for a missing key, which Consul answers with 404 and the index still set).
    pub async fn kv_get(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(u64, Option<KvEntry>), ConsulError> {
        let mut path = format!("/v1/kv/{key}");
        let mut r = if index > 0 {
            path.push_str(&format!("?index={index}&wait={}ms", wait.as_millis()));
            // Consul adds up to wait/16 of jitter; leave room for it and for the network.
            self.request(reqwest::Method::GET, &path)
                .timeout(wait + wait / 16 + Duration::from_secs(5))
        } else {
            self.request(reqwest::Method::GET, &path)
                .timeout(Duration::from_secs(10))
        };
        r = r.header("Accept", "application/json");
        let resp = self.send(r).await?;
        let idx = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok((idx, None));
        }
        if !resp.status().is_success() {
            return Err(Self::status_error(resp).await);
        }
        let entries: Vec<RawEntry> = resp
            .json()
            .await
            .map_err(|e| ConsulError::Decode(e.to_string()))?;
        let Some(e) = entries.into_iter().next() else {
            return Ok((idx, None));
        };
        let value = match e.value {
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| ConsulError::Decode(format!("KV value is not base64: {e}")))?,
            None => Vec::new(),
        };
        Ok((
            idx,
            Some(KvEntry {
                value,
                modify_index: e.modify_index,
            }),
        ))
    }

    /// Writes `value` at `key` only if its ModifyIndex is still `cas` (0 = only if absent).
    /// Returns whether the write happened.
    pub async fn kv_put_cas(&self, key: &str, value: &[u8], cas: u64) -> Result<bool, ConsulError> {
        let r = self
            .request(reqwest::Method::PUT, &format!("/v1/kv/{key}?cas={cas}"))
            .timeout(Duration::from_secs(10))
            .body(value.to_vec());
        let resp = self.send(r).await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(resp).await);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| ConsulError::Decode(e.to_string()))?;
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(ConsulError::Decode(format!(
                "KV PUT answered {other:?}, expected true or false"
            ))),
        }
    }

    /// Lists the keys under `prefix` (`?keys`, a presence flag); none is an empty list.
    pub async fn kv_keys(&self, prefix: &str) -> Result<Vec<String>, ConsulError> {
        let r = self
            .request(reqwest::Method::GET, &format!("/v1/kv/{prefix}?keys"))
            .timeout(Duration::from_secs(10));
        let resp = self.send(r).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(Self::status_error(resp).await);
        }
        resp.json()
            .await
            .map_err(|e| ConsulError::Decode(e.to_string()))
    }

    /// Registers a service with the local agent (`PUT /v1/agent/service/register`).
    pub async fn register_service(&self, body: &serde_json::Value) -> Result<(), ConsulError> {
        self.put_ok("/v1/agent/service/register", Some(body)).await
    }

    /// Deregisters a service (`PUT /v1/agent/service/deregister/:id`).
    pub async fn deregister_service(&self, id: &str) -> Result<(), ConsulError> {
        self.put_ok(&format!("/v1/agent/service/deregister/{id}"), None)
            .await
    }

    /// Marks a TTL check passing (`PUT /v1/agent/check/pass/:id`).
    pub async fn pass_check(&self, check_id: &str) -> Result<(), ConsulError> {
        self.put_ok(&format!("/v1/agent/check/pass/{check_id}"), None)
            .await
    }

    async fn put_ok(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), ConsulError> {
        let mut r = self
            .request(reqwest::Method::PUT, path)
            .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = self.send(r).await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(resp).await);
        }
        Ok(())
    }
}

/// A [`KvSource`] reading one key with blocking queries.
#[derive(Debug, Clone)]
pub struct ConsulKvSource {
    http: ConsulHttp,
    key: String,
}

impl ConsulKvSource {
    /// Watches `key` (e.g. `wafleet/shardmap`) through `http`.
    pub fn new(http: ConsulHttp, key: String) -> Self {
        Self { http, key }
    }
}

impl KvSource for ConsulKvSource {
    fn read(&self, index: u64, wait: Duration) -> BoxFuture<'_, Result<KvRead, SourceError>> {
        Box::pin(async move {
            let (index, entry) = self
                .http
                .kv_get(&self.key, index, wait)
                .await
                .map_err(|e| SourceError(error_chain(&e)))?;
            Ok(KvRead {
                index,
                value: entry.map(|e| e.value),
            })
        })
    }
}

// === DNS ===

/// SRV lookups of `shard-<k>.<service>.service.consul` against Consul's DNS interface.
#[derive(Debug, Clone)]
pub struct DnsSrvResolver {
    server: SocketAddr,
    service: String,
    domain: String,
    timeout: Duration,
}

impl DnsSrvResolver {
    /// Resolves instances of `service` (normally `wafleet-worker`) through `server`.
    pub fn new(server: SocketAddr, service: &str) -> Self {
        Self {
            server,
            service: service.to_owned(),
            domain: "consul".into(),
            timeout: Duration::from_secs(2),
        }
    }

    /// The SRV name for a shard: `shard-<k>.<service>.service.<domain>.`
    pub fn name_for(&self, shard: u32) -> String {
        format!("shard-{shard}.{}.service.{}.", self.service, self.domain)
    }

    /// Looks up `name` (SRV) and returns the instances' addresses; none for NXDOMAIN.
    pub async fn lookup_srv(&self, name: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let resp = self.query(name, RecordType::SRV).await?;
        if resp.metadata.response_code == ResponseCode::NXDomain {
            return Ok(Vec::new());
        }
        if resp.metadata.response_code != ResponseCode::NoError {
            return Err(ResolveError(format!(
                "DNS {name}: {}",
                resp.metadata.response_code
            )));
        }
        let mut out = Vec::new();
        for rec in &resp.answers {
            let RData::SRV(srv) = &rec.data else { continue };
            let target = lower(&srv.target);
            let mut ip = resp.additionals.iter().find_map(|a| {
                if lower(&a.name) != target {
                    return None;
                }
                match &a.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                }
            });
            if ip.is_none() {
                ip = parse_addr_label(&target);
            }
            if ip.is_none() {
                // No glue: ask for the target's A record.
                let a = self.query(&srv.target.to_ascii(), RecordType::A).await?;
                ip = a.answers.iter().find_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                });
            }
            if let Some(ip) = ip {
                out.push(SocketAddr::new(ip, srv.port));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn query(&self, name: &str, rtype: RecordType) -> Result<Message, ResolveError> {
        let err = |e: &dyn std::fmt::Display| ResolveError(format!("DNS {name}: {e}"));
        let qname = Name::from_ascii(name).map_err(|e| err(&e))?;
        let id: u16 = rand::random();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(qname, rtype));
        let bytes = msg.to_vec().map_err(|e| err(&e))?;
        let udp = tokio::time::timeout(self.timeout, async {
            let bind: SocketAddr = if self.server.is_ipv4() {
                "0.0.0.0:0".parse().map_err(|e| err(&e))?
            } else {
                "[::]:0".parse().map_err(|e| err(&e))?
            };
            let sock = tokio::net::UdpSocket::bind(bind)
                .await
                .map_err(|e| err(&e))?;
            sock.connect(self.server).await.map_err(|e| err(&e))?;
            sock.send(&bytes).await.map_err(|e| err(&e))?;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = sock.recv(&mut buf).await.map_err(|e| err(&e))?;
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.metadata.id == id => return Ok(m),
                    // A stray or late datagram: keep waiting for ours.
                    _ => continue,
                }
            }
        })
        .await
        .map_err(|_| err(&"timed out"))??;
        if !udp.metadata.truncation {
            return Ok(udp);
        }
        // Truncated (too many instances for UDP): ask again over TCP.
        tokio::time::timeout(self.timeout, async {
            let mut s = tokio::net::TcpStream::connect(self.server)
                .await
                .map_err(|e| err(&e))?;
            let len = u16::try_from(bytes.len()).map_err(|e| err(&e))?;
            s.write_all(&len.to_be_bytes()).await.map_err(|e| err(&e))?;
            s.write_all(&bytes).await.map_err(|e| err(&e))?;
            let n = s.read_u16().await.map_err(|e| err(&e))?;
            let mut buf = vec![0u8; usize::from(n)];
            s.read_exact(&mut buf).await.map_err(|e| err(&e))?;
            Message::from_vec(&buf).map_err(|e| err(&e))
        })
        .await
        .map_err(|_| err(&"timed out"))?
    }
}

impl Resolver for DnsSrvResolver {
    fn resolve(&self, shard: u32) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>> {
        Box::pin(async move { self.lookup_srv(&self.name_for(shard)).await })
    }
}

/// An error and its causes on one line ("a: b: c"), for logs.
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

fn lower(n: &Name) -> String {
    let mut s = n.to_ascii().to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// Consul names a service with an explicit address `<hex-ip>.addr.<dc>.consul.`
fn parse_addr_label(target: &str) -> Option<IpAddr> {
    let mut labels = target.split('.');
    let hex_ip = labels.next()?;
    if labels.next()? != "addr" {
        return None;
    }
    let raw = hex::decode(hex_ip).ok()?;
    match raw.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(raw).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(raw).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_bare_addresses() {
        let c = ConsulConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c.http_addr, DEFAULT_HTTP_ADDR);
        assert_eq!(c.dns_addr, DEFAULT_DNS_ADDR.parse().unwrap());
        let c = ConsulConfig::from_lookup(|k| {
            (k == "CONSUL_HTTP_ADDR").then(|| "10.0.0.1:8500/".to_string())
        })
        .unwrap();
        assert_eq!(c.http_addr, "http://10.0.0.1:8500");
        assert!(
            ConsulConfig::from_lookup(|k| (k == "CONSUL_CLIENT_CERT").then(|| "x".into())).is_err()
        );
    }

    #[test]
    fn addr_labels_decode() {
        assert_eq!(
            parse_addr_label("c000020a.addr.dc1.consul."),
            Some("192.0.2.10".parse().unwrap())
        );
        assert_eq!(parse_addr_label("node1.node.dc1.consul."), None);
        assert_eq!(parse_addr_label("zz.addr.dc1.consul."), None);
    }
}
