//! The pure state machine of the built-in agent: KV store with tombstones, sessions and locks,
//! lock delays, the agent's services and checks (which, on a single node, are also the catalog),
//! and the one global raft-like index.
//!
//! No I/O, no clock, no tokio: every time-dependent operation takes `now` as an argument, so the
//! rules can be unit- and property-tested. The HTTP layer (`http.rs`) and the DNS layer
//! (`dns.rs`) only translate requests into calls on [`State`] and results into Consul's wire
//! format (`wire.rs`).
//!
//! The rules are split by table: `kv` (KV and transactions), `sessions`, `services`
//! (services and checks) and `nodes` (nodes, check updates, the clock and the catalog reads);
//! this file holds the types, the index rules and the state itself.
//!
//! Index rules follow Consul's state store: every change is stamped with one new global index;
//! each table (KV, sessions, services, checks) and each service name remembers the index of its
//! last change, so a blocking query only wakes when *its* data changed. A write that changes
//! nothing (same value, same flags) does not move any index, as in `kvsSetTxn`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

mod kv;
mod nodes;
mod services;
mod sessions;

/// The node check every node carries; always passing on this single node.
pub const SERF_CHECK_ID: &str = "serfHealth";

/// Consul's cap on one KV value (`kv_max_value_size`, 512 KiB).
pub const MAX_KV_VALUE_BYTES: usize = 512 * 1024;

/// Static settings of the state machine (names, limits, Consul's timing rules).
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Node name of this agent.
    pub node: String,
    /// Datacenter name.
    pub datacenter: String,
    /// Node ID (a UUID).
    pub node_id: String,
    /// Node address (used for services without an address).
    pub address: String,
    /// Smallest session TTL accepted (Consul: 10s).
    pub session_ttl_min: Duration,
    /// Largest session TTL accepted (Consul: 86400s).
    pub session_ttl_max: Duration,
    /// A session is invalidated `ttl * multiplier` after its last renewal (Consul: 2).
    pub session_ttl_multiplier: u32,
    /// Lock delay of a session that does not set one (Consul: 15s).
    pub default_lock_delay: Duration,
    /// Largest lock delay accepted (Consul: 60s).
    pub max_lock_delay: Duration,
    /// Smallest `DeregisterCriticalServiceAfter` honoured; smaller values are raised (Consul: 1m).
    pub deregister_critical_min: Duration,
    /// Shortest interval of polled (HTTP) checks; shorter ones are raised (Consul: 1s).
    pub min_check_interval: Duration,
    /// Seed of the session-ID generator (tests fix it for reproducibility).
    pub seed: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            node: "wafleet-dev".to_string(),
            datacenter: "dc1".to_string(),
            node_id: "00000000-0000-4000-8000-000000000001".to_string(),
            address: "127.0.0.1".to_string(),
            session_ttl_min: Duration::from_secs(10),
            session_ttl_max: Duration::from_secs(86_400),
            session_ttl_multiplier: 2,
            default_lock_delay: Duration::from_secs(15),
            max_lock_delay: Duration::from_secs(60),
            deregister_critical_min: Duration::from_secs(60),
            min_check_interval: Duration::from_secs(1),
            seed: 0,
        }
    }
}

/// An error with Consul's HTTP status class and its exact text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// 400 with the given text.
    #[error("{0}")]
    BadRequest(String),
    /// 404 with the given text.
    #[error("{0}")]
    NotFound(String),
    /// 413 with the given text.
    #[error("{0}")]
    TooLarge(String),
    /// 500 with the given text (Consul's answer for any RPC error).
    #[error("{0}")]
    Internal(String),
}

impl StateError {
    /// The HTTP status Consul answers with.
    pub fn status(&self) -> u16 {
        match self {
            StateError::BadRequest(_) => 400,
            StateError::NotFound(_) => 404,
            StateError::TooLarge(_) => 413,
            StateError::Internal(_) => 500,
        }
    }
}

/// One KV entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Full key.
    pub key: String,
    /// Index at which the key was created.
    pub create_index: u64,
    /// Index of the last change.
    pub modify_index: u64,
    /// Number of times a new session acquired the key.
    pub lock_index: u64,
    /// Opaque flags.
    pub flags: u64,
    /// Raw value (may be empty: rendered as `null`).
    pub value: Vec<u8>,
    /// Holder of the lock, if any.
    pub session: Option<String>,
}

/// How a KV PUT writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Plain set (always succeeds).
    Set,
    /// `?cas=<index>`: 0 = create only, else only if `ModifyIndex` matches.
    Cas(u64),
    /// `?acquire=<session>`.
    Acquire(String),
    /// `?release=<session>`.
    Release(String),
}

/// How a KV DELETE deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteMode {
    /// One key.
    Single,
    /// Every key starting with the prefix (greedy, as Consul).
    Tree,
    /// One key, only if `ModifyIndex` matches.
    Cas(u64),
}

/// Session behaviour on invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Held locks are released.
    Release,
    /// Held keys are deleted.
    Delete,
}

impl Behavior {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// A validated session-create request.
#[derive(Debug, Clone, Default)]
pub struct SessionCreate {
    /// Free-form name.
    pub name: String,
    /// Node; `None` = this agent's node.
    pub node: Option<String>,
    /// Lock delay; `None` = the default.
    pub lock_delay: Option<Duration>,
    /// `release` / `delete`; empty = release.
    pub behavior: String,
    /// TTL as given (`""` = none).
    pub ttl: String,
    /// Node checks; `None` = `["serfHealth"]`.
    pub node_checks: Option<Vec<String>>,
    /// Service check IDs.
    pub service_checks: Vec<String>,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Node.
    pub node: String,
    /// Lock delay.
    pub lock_delay: Duration,
    /// Behaviour on invalidation.
    pub behavior: Behavior,
    /// TTL string as given (`""` = none).
    pub ttl: String,
    /// Parsed TTL.
    pub ttl_duration: Option<Duration>,
    /// Node checks bound to the session.
    pub node_checks: Vec<String>,
    /// Service checks bound to the session.
    pub service_checks: Vec<String>,
    /// Index at creation.
    pub create_index: u64,
    /// Index of last change (sessions never change after creation).
    pub modify_index: u64,
    /// When the session is invalidated unless renewed (TTL × multiplier after the last renewal).
    pub expires_at: Option<Instant>,
}

/// Health status of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Passing.
    Passing,
    /// Warning.
    Warning,
    /// Critical.
    Critical,
}

impl Status {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    /// Parses Consul's spelling.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }
}

/// What runs a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Updated by `PUT /v1/agent/check/{pass,warn,fail}`; critical when not updated within `ttl`.
    Ttl {
        /// TTL.
        ttl: Duration,
        /// When the check turns critical unless updated.
        expires_at: Instant,
    },
    /// Polled by the agent.
    Http {
        /// URL.
        url: String,
        /// Method (default GET).
        method: String,
        /// Extra headers.
        header: BTreeMap<String, Vec<String>>,
        /// Poll interval.
        interval: Duration,
        /// Request timeout.
        timeout: Duration,
        /// Accept any TLS certificate.
        tls_skip_verify: bool,
        /// Next poll.
        next_run: Instant,
    },
    /// Any other check type: never run, keeps its status.
    Other,
}

/// A check definition from a service registration.
#[derive(Debug, Clone, Default)]
pub struct CheckDefinition {
    /// `CheckID` (auto: `service:<id>[:n]`).
    pub check_id: Option<String>,
    /// `Name` (auto: `Service '<name>' check`).
    pub name: Option<String>,
    /// `Notes`.
    pub notes: String,
    /// `TTL`.
    pub ttl: Option<Duration>,
    /// `HTTP` URL.
    pub http: Option<String>,
    /// `Method`.
    pub method: Option<String>,
    /// `Header`.
    pub header: BTreeMap<String, Vec<String>>,
    /// `Interval`.
    pub interval: Option<Duration>,
    /// `Timeout` (default 10s).
    pub timeout: Option<Duration>,
    /// `TLSSkipVerify`.
    pub tls_skip_verify: bool,
    /// `Status`: initial status (default critical).
    pub status: Option<Status>,
    /// `DeregisterCriticalServiceAfter`.
    pub deregister_critical_after: Option<Duration>,
}

/// A registered check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckEntry {
    /// Check ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Notes.
    pub notes: String,
    /// Last output (TTL note, HTTP result, "TTL expired").
    pub output: String,
    /// Owning service ID (empty for node checks).
    pub service_id: String,
    /// Owning service name.
    pub service_name: String,
    /// Owning service tags.
    pub service_tags: Vec<String>,
    /// How the check runs.
    pub kind: CheckKind,
    /// Remove the service after being critical this long.
    pub deregister_critical_after: Option<Duration>,
    /// Since when the check has been critical.
    pub critical_since: Option<Instant>,
    /// Index at creation.
    pub create_index: u64,
    /// Index of last change.
    pub modify_index: u64,
}

/// A service registration request (already decoded and validated for types).
#[derive(Debug, Clone, Default)]
pub struct ServiceRegistration {
    /// `ID` (default `Name`).
    pub id: Option<String>,
    /// `Name`.
    pub name: String,
    /// `Tags`.
    pub tags: Vec<String>,
    /// `Meta`.
    pub meta: BTreeMap<String, String>,
    /// `Address`.
    pub address: String,
    /// `Port`.
    pub port: u16,
    /// `Weights` (passing, warning).
    pub weights: Option<(i64, i64)>,
    /// `EnableTagOverride`.
    pub enable_tag_override: bool,
    /// `Check` + `Checks`.
    pub checks: Vec<CheckDefinition>,
    /// `?replace-existing-checks`.
    pub replace_existing_checks: bool,
}

/// A registered service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Service ID.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Meta.
    pub meta: BTreeMap<String, String>,
    /// Address (may be empty: the node address applies).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Weights (passing, warning).
    pub weights: (i64, i64),
    /// EnableTagOverride.
    pub enable_tag_override: bool,
    /// Index at creation.
    pub create_index: u64,
    /// Index of last change.
    pub modify_index: u64,
}

/// One service instance with its checks (node checks first), as the health endpoint returns.
#[derive(Debug, Clone)]
pub struct HealthEntry {
    /// The instance.
    pub service: ServiceEntry,
    /// Node checks and the instance's checks.
    pub checks: Vec<CheckEntry>,
}

impl HealthEntry {
    /// Worst status over all checks.
    pub fn aggregated(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Passing)
    }
}

/// A transaction KV operation.
#[derive(Debug, Clone)]
pub struct TxnKvOp {
    /// Verb (`set`, `cas`, `lock`, `unlock`, `get`, `get-tree`, `check-index`,
    /// `check-session`, `check-not-exists`, `delete`, `delete-tree`, `delete-cas`).
    pub verb: String,
    /// Key.
    pub key: String,
    /// Value (decoded).
    pub value: Vec<u8>,
    /// Flags.
    pub flags: u64,
    /// Index (for cas, check-index, delete-cas).
    pub index: u64,
    /// Session (for lock, unlock, check-session).
    pub session: String,
}

/// One transaction result: the entry, with its value only for reads.
#[derive(Debug, Clone)]
pub struct TxnResult {
    /// The entry.
    pub entry: KvEntry,
    /// Whether the value is returned (reads) or `null` (writes).
    pub with_value: bool,
}

/// Why a transaction op failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnError {
    /// Position of the failing op.
    pub op_index: usize,
    /// Consul's text.
    pub what: String,
}

/// Everything the agent knows.
#[derive(Debug, Clone)]
pub struct State {
    cfg: StateConfig,
    rng: StdRng,
    /// The global raft-like index: the index of the last change.
    index: u64,
    kv: BTreeMap<String, KvEntry>,
    /// Key → index of its deletion. Never reaped (in memory, single node), so list indexes
    /// never slide backwards.
    tombstones: BTreeMap<String, u64>,
    kv_table_index: u64,
    /// Key → end of its lock delay.
    lock_delays: BTreeMap<String, Instant>,
    sessions: BTreeMap<String, SessionEntry>,
    sessions_table_index: u64,
    services: BTreeMap<String, ServiceEntry>,
    services_table_index: u64,
    checks: BTreeMap<String, CheckEntry>,
    checks_table_index: u64,
    /// Service name → index of the last change to any of its instances or their checks.
    service_name_index: BTreeMap<String, u64>,
    /// Index at which the agent's node (and its serfHealth check) was registered.
    node_index: u64,
    /// Every registered node → the index of its registration. Each node carries its own
    /// `serfHealth` check; a node that leaves is deregistered, which invalidates its sessions.
    nodes: BTreeMap<String, u64>,
    /// Registered nodes whose `serfHealth` is critical: the servers' failure detector found
    /// their agent gone without a leave ([`State::node_fail`]) and it is not back yet.
    serf_critical: BTreeSet<String>,
}

// === impl State ===

impl State {
    /// A fresh agent: the node and its `serfHealth` check exist at index 1... as after a
    /// Consul dev agent's start, the first KV write gets a later index.
    pub fn new(cfg: StateConfig) -> State {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let cfg_node = cfg.node.clone();
        State {
            cfg,
            rng,
            index: 1,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            kv_table_index: 0,
            lock_delays: BTreeMap::new(),
            sessions: BTreeMap::new(),
            sessions_table_index: 0,
            services: BTreeMap::new(),
            services_table_index: 0,
            checks: BTreeMap::new(),
            checks_table_index: 0,
            service_name_index: BTreeMap::new(),
            node_index: 1,
            nodes: BTreeMap::from([(cfg_node, 1)]),
            serf_critical: BTreeSet::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StateConfig {
        &self.cfg
    }

    /// The global index (index of the last change).
    pub fn index(&self) -> u64 {
        self.index
    }

    fn next_index(&self) -> u64 {
        self.index + 1
    }

    /// Records that a change was stamped with `idx`.
    fn commit(&mut self, idx: u64) {
        if idx > self.index {
            self.index = idx;
        }
    }
}

/// An HTTP check the I/O layer should run now.
#[derive(Debug, Clone)]
pub struct HttpCheckJob {
    /// Check ID.
    pub check_id: String,
    /// URL.
    pub url: String,
    /// Method.
    pub method: String,
    /// Extra headers.
    pub header: BTreeMap<String, Vec<String>>,
    /// Timeout.
    pub timeout: Duration,
    /// Accept any certificate.
    pub tls_skip_verify: bool,
}

fn ttl_not_found(check_id: &str) -> StateError {
    StateError::NotFound(format!("CheckID {check_id:?} does not have associated TTL"))
}

/// Whether two check entries differ only in bookkeeping (indexes, timers).
fn same_check(a: &CheckEntry, b: &CheckEntry) -> bool {
    a.name == b.name
        && a.status == b.status
        && a.notes == b.notes
        && a.output == b.output
        && a.service_id == b.service_id
        && a.service_name == b.service_name
        && a.deregister_critical_after == b.deregister_critical_after
        && std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
}

#[cfg(test)]
mod tests;
