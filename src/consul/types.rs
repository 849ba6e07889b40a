//! Serde types for Consul's JSON bodies (PascalCase), deserialized leniently.
//!
//! Real Consul answers carry many more fields than the documented samples (`CreateIndex`,
//! `Proxy`, `Connect`, `PeerName`, …) and sometimes `null` where a list is expected, so every
//! type here ignores unknown fields and reads `null` lists/maps as empty. `Value` is base64 and
//! may be `null`; a session's `LockDelay` is nanoseconds in answers but a duration string in
//! requests.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::{format_go_duration, parse_go_duration};

mod txn;
pub use txn::*;

/// `null` → `T::default()` (Consul writes `null` for empty lists and maps in several places).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Empty string → `None`.
fn empty_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

mod base64_opt {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// What every read answer carries in its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryMeta {
    /// `X-Consul-Index` (0 if absent).
    pub index: u64,
    /// `X-Consul-KnownLeader`.
    pub known_leader: bool,
}

// === KV ===

/// One KV entry as returned by `GET /v1/kv/...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    /// Full key.
    pub key: String,
    /// Index of the write that created the key.
    #[serde(default)]
    pub create_index: u64,
    /// Index of the last write that changed the key.
    #[serde(default)]
    pub modify_index: u64,
    /// Number of times the key was freshly acquired (the lock sequencer).
    #[serde(default)]
    pub lock_index: u64,
    /// Opaque flags.
    #[serde(default)]
    pub flags: u64,
    /// The value; `None` when Consul sends `null` (key written with an empty body).
    #[serde(default, with = "base64_opt")]
    pub value: Option<Vec<u8>>,
    /// The session holding the lock on this key, if any (absent or empty when unlocked).
    #[serde(
        default,
        deserialize_with = "empty_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub session: Option<String>,
}

impl KvPair {
    /// The value bytes, empty when the value is `null`.
    pub fn value_bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }
}

/// Options of a KV PUT. At most one of `cas`, `acquire`, `release` may be set (Consul answers
/// 400 "Conflicting flags" otherwise; the client refuses first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// `?cas=<index>`: 0 = create only if absent; otherwise only if `ModifyIndex` matches.
    pub cas: Option<u64>,
    /// `?acquire=<session>`: take the lock (and write the value).
    pub acquire: Option<String>,
    /// `?release=<session>`: release the lock (and write the value).
    pub release: Option<String>,
    /// `?flags=<u64>`.
    pub flags: Option<u64>,
}

/// Options of a KV DELETE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete every key starting with the given prefix (greedy: `foo` matches `foobar`).
    pub recurse: bool,
    /// `?cas=<index>` (must be > 0; not with `recurse`).
    pub cas: Option<u64>,
}

// === sessions ===

/// What happens to a session's locked keys when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBehavior {
    /// Locks are released (`Session` cleared).
    #[default]
    Release,
    /// Locked keys are deleted.
    Delete,
}

/// Body of `PUT /v1/session/create`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRequest {
    /// Human-readable name.
    pub name: String,
    /// TTL (Consul accepts 10s..=24h); `None` = no TTL.
    pub ttl: Option<Duration>,
    /// Release or delete on invalidation.
    pub behavior: SessionBehavior,
    /// Lock delay (0..=60s); `None` = Consul's default of 15s.
    pub lock_delay: Option<Duration>,
    /// Node checks tied to the session; `None` = Consul's default (`["serfHealth"]`).
    pub node_checks: Option<Vec<String>>,
}

impl Serialize for SessionRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        if !self.name.is_empty() {
            m.serialize_entry("Name", &self.name)?;
        }
        if let Some(ttl) = self.ttl {
            m.serialize_entry("TTL", &format_go_duration(ttl))?;
        }
        m.serialize_entry("Behavior", &self.behavior)?;
        if let Some(d) = self.lock_delay {
            m.serialize_entry("LockDelay", &format_go_duration(d))?;
        }
        if let Some(c) = &self.node_checks {
            m.serialize_entry("NodeChecks", c)?;
        }
        m.end()
    }
}

/// A session as returned by `GET /v1/session/info/:id` and renew.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionInfo {
    /// Session id (a UUID).
    #[serde(rename = "ID")]
    pub id: String,
    /// Name given at creation.
    #[serde(default)]
    pub name: String,
    /// Node the session is bound to.
    #[serde(default)]
    pub node: String,
    /// Lock delay (answers carry nanoseconds).
    #[serde(default, deserialize_with = "lock_delay")]
    pub lock_delay: Duration,
    /// Release or delete.
    #[serde(default)]
    pub behavior: SessionBehavior,
    /// TTL; `None` when the session has none. Renew may answer a larger TTL than requested.
    #[serde(rename = "TTL", default, deserialize_with = "ttl_opt")]
    pub ttl: Option<Duration>,
    /// Node checks.
    #[serde(default, deserialize_with = "null_default")]
    pub node_checks: Vec<String>,
    /// Creation index.
    #[serde(default)]
    pub create_index: u64,
    /// Last modification index.
    #[serde(default)]
    pub modify_index: u64,
}

/// `LockDelay` is nanoseconds (a number) in answers; a duration string is accepted too, and a
/// number below 1000 is taken as seconds, as Consul's `FixupLockDelay` does.
fn lock_delay<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
        Null(()),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) if n < 1000 => Ok(Duration::from_secs(n)),
        Raw::N(n) => Ok(Duration::from_nanos(n)),
        Raw::S(s) => parse_go_duration(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad LockDelay {s:?}"))),
        Raw::Null(()) => Ok(Duration::ZERO),
    }
}

fn ttl_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => parse_go_duration(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("bad TTL {s:?}"))),
    }
}

// === agent services and checks ===

/// A check definition inside a service registration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// Check id (default `service:<ServiceID>[:n]`).
    #[serde(rename = "CheckID", skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    /// Check name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// TTL check: the service must pass it at least this often (Go duration).
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// HTTP check URL.
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Interval of an HTTP check (Go duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Timeout of an HTTP check (Go duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Remove the service when this check has been critical this long (minimum 1m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
    /// Initial status (Consul's default is critical).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Body of `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Service id, unique per agent.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name (RFC 1123 label for DNS).
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address; empty means "the node's address".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port.
    pub port: u16,
    /// String metadata.
    pub meta: BTreeMap<String, String>,
    /// Checks.
    pub checks: Vec<CheckDefinition>,
}

/// One entry of `GET /v1/agent/services` (a map from service id to this).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Service id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Metadata.
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// Address (may be empty).
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
}

/// Status of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Healthy.
    Passing,
    /// Degraded (still answered by DNS and health without `passing`).
    Warning,
    /// Failed.
    Critical,
    /// Any status this client does not know (e.g. `maintenance`).
    #[serde(other)]
    Unknown,
}

// === health ===

/// The node of a health entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthNode {
    /// Node name.
    #[serde(default)]
    pub node: String,
    /// Node address.
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
}

/// The service of a health entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthService {
    /// Service id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Address, possibly empty (then the node address applies).
    #[serde(default)]
    pub address: String,
    /// Metadata.
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default)]
    pub port: u16,
}

/// One check in a health entry (node checks such as `serfHealth` included).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// Node name.
    #[serde(default)]
    pub node: String,
    /// Check id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Check name.
    #[serde(default)]
    pub name: String,
    /// Status.
    pub status: CheckStatus,
    /// Last output.
    #[serde(default)]
    pub output: String,
    /// Service id (empty for node checks).
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

/// One element of `GET /v1/health/service/:name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntry {
    /// The node.
    pub node: HealthNode,
    /// The service instance.
    pub service: HealthService,
    /// Its checks, node checks included.
    #[serde(default, deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

impl HealthEntry {
    /// The address to dial: `Service.Address`, or `Node.Address` when it is empty (the
    /// catalog documents an empty service address as "use the node's").
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }

    /// `address():port` when the address is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.address().parse().ok()?;
        Some(SocketAddr::new(ip, self.service.port))
    }

    /// The worst status over all checks (`Passing` when there are none).
    pub fn aggregated_status(&self) -> CheckStatus {
        let mut worst = CheckStatus::Passing;
        for c in &self.checks {
            worst = match (worst, c.status) {
                (_, CheckStatus::Critical) | (CheckStatus::Critical, _) => CheckStatus::Critical,
                (_, CheckStatus::Unknown) | (CheckStatus::Unknown, _) => CheckStatus::Unknown,
                (_, CheckStatus::Warning) | (CheckStatus::Warning, _) => CheckStatus::Warning,
                _ => CheckStatus::Passing,
            };
        }
        worst
    }
}

/// Filters of `GET /v1/health/service/:name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthQuery {
    /// `?passing`: only instances whose every check passes.
    pub passing: bool,
    /// `?tag=` (repeatable; deprecated by Consul in favour of `filter`, still supported).
    pub tags: Vec<String>,
    /// `?filter=` bexpr, e.g. `Service.Meta.shard == "7"`.
    pub filter: Option<String>,
}

/// `{"ID": "..."}` answer of session create.
#[derive(Deserialize)]
pub(crate) struct IdResponse {
    #[serde(rename = "ID")]
    pub id: String,
}

/// The map returned by `GET /v1/agent/services`.
pub type AgentServices = HashMap<String, AgentService>;
