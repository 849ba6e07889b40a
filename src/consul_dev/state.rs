//! The pure state machine of the built-in agent: KV store with tombstones, sessions and locks,
//! lock delays, the agent's services and checks (which, on a single node, are also the catalog),
//! and the one global raft-like index.
//!
//! No I/O, no clock, no tokio: every time-dependent operation takes `now` as an argument, so the
//! rules can be unit- and property-tested. The HTTP layer (`http.rs`) and the DNS layer
//! (`dns.rs`) only translate requests into calls on [`State`] and results into Consul's wire
//! format (`wire.rs`).
//!
//! Index rules follow Consul's state store: every change is stamped with one new global index;
//! each table (KV, sessions, services, checks) and each service name remembers the index of its
//! last change, so a blocking query only wakes when *its* data changed. A write that changes
//! nothing (same value, same flags) does not move any index, as in `kvsSetTxn`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

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

    // --- KV reads ---

    /// KV table index (entries and tombstones); never below 1 so blocking clients do not spin.
    pub fn kv_index(&self) -> u64 {
        self.kv_table_index.max(1)
    }

    /// One key and the index to report (`kvsMaxIndex`: the whole table's).
    pub fn kv_get(&self, key: &str) -> (Option<&KvEntry>, u64) {
        (self.kv.get(key), self.kv_index())
    }

    /// Every entry under a prefix and the index to report: the highest `ModifyIndex` of the
    /// entries and tombstones under the prefix, falling back to the table index.
    pub fn kv_list(&self, prefix: &str) -> (Vec<&KvEntry>, u64) {
        let entries: Vec<&KvEntry> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
            .collect();
        // Listing everything reports the whole table's index, as `kvsListTxn` does.
        if prefix.is_empty() {
            return (entries, self.kv_index());
        }
        let mut idx = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        let tomb = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        idx = idx.max(tomb);
        if idx == 0 {
            idx = self.kv_index();
        }
        (entries, idx)
    }

    /// Keys under a prefix, rolled up at the first `separator` after the prefix.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> (Vec<String>, u64) {
        let (entries, idx) = self.kv_list(prefix);
        let mut out: Vec<String> = Vec::new();
        for e in entries {
            let key = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match e.key[prefix.len()..].find(sep) {
                    Some(pos) => e.key[..prefix.len() + pos + sep.len()].to_string(),
                    None => e.key.clone(),
                },
                None => e.key.clone(),
            };
            if out.last() != Some(&key) {
                out.push(key);
            }
        }
        (out, idx)
    }

    /// End of the lock delay on a key, if one is running at `now`.
    pub fn lock_delay_until(&self, key: &str, now: Instant) -> Option<Instant> {
        self.lock_delays.get(key).copied().filter(|t| *t > now)
    }

    // --- KV writes ---

    /// `PUT /v1/kv/<key>`: returns the `true`/`false` body.
    pub fn kv_put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        mode: PutMode,
        now: Instant,
    ) -> Result<bool, StateError> {
        if key.is_empty() {
            return Err(StateError::BadRequest("Missing key name".to_string()));
        }
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(StateError::TooLarge(format!(
                "Request body({} bytes) too large, max size: {} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
                value.len(),
                MAX_KV_VALUE_BYTES
            )));
        }
        let idx = self.next_index();
        let ok = match mode {
            PutMode::Set => {
                self.kv_set_at(idx, key, value, flags);
                true
            }
            PutMode::Cas(cas) => self.kv_cas_at(idx, key, value, flags, cas),
            PutMode::Acquire(session) => {
                // Lock delay is enforced before the write, as in Consul's KVS.Apply endpoint.
                if self.lock_delay_until(key, now).is_some() {
                    false
                } else {
                    self.kv_lock_at(idx, key, value, flags, &session)?
                }
            }
            PutMode::Release(session) => self.kv_unlock_at(idx, key, value, flags, &session)?,
        };
        Ok(ok)
    }

    /// Sets a key at `idx` like Consul's `kvsSetTxn` without `updateSession`: the holder
    /// (`Session`) is kept, but `LockIndex` takes the request's value, which is always 0 for a
    /// plain or CAS write — so a plain PUT on a held key resets its `LockIndex` to 0, as in
    /// Consul. An identical entry (value, flags, lock index, session) changes nothing.
    fn kv_set_at(&mut self, idx: u64, key: &str, value: Vec<u8>, flags: u64) {
        let lock_index = 0;
        let (create_index, session) = match self.kv.get(key) {
            Some(e) => {
                if e.value == value && e.flags == flags && e.lock_index == lock_index {
                    return;
                }
                (e.create_index, e.session.clone())
            }
            None => (idx, None),
        };
        self.write_entry(
            idx,
            KvEntry {
                key: key.to_string(),
                create_index,
                modify_index: idx,
                lock_index,
                flags,
                value,
                session,
            },
        );
    }

    fn write_entry(&mut self, idx: u64, entry: KvEntry) {
        self.tombstones.remove(&entry.key);
        self.kv.insert(entry.key.clone(), entry);
        self.kv_table_index = idx;
        self.commit(idx);
    }

    fn kv_cas_at(&mut self, idx: u64, key: &str, value: Vec<u8>, flags: u64, cas: u64) -> bool {
        match (self.kv.get(key), cas) {
            (Some(_), 0) => return false,
            (None, c) if c != 0 => return false,
            (Some(e), c) if e.modify_index != c => return false,
            _ => {}
        }
        self.kv_set_at(idx, key, value, flags);
        true
    }

    fn kv_lock_at(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, StateError> {
        if session.is_empty() {
            return Err(StateError::Internal("missing session".to_string()));
        }
        if !self.sessions.contains_key(session) {
            return Err(StateError::Internal(format!("invalid session {session:?}")));
        }
        let (create_index, lock_index) = match self.kv.get(key) {
            Some(e) => match e.session.as_deref() {
                Some(holder) if holder == session => {
                    if e.value == value && e.flags == flags {
                        return Ok(true);
                    }
                    (e.create_index, e.lock_index)
                }
                Some(_) => return Ok(false),
                None => (e.create_index, e.lock_index + 1),
            },
            None => (idx, 1),
        };
        self.write_entry(
            idx,
            KvEntry {
                key: key.to_string(),
                create_index,
                modify_index: idx,
                lock_index,
                flags,
                value,
                session: Some(session.to_string()),
            },
        );
        Ok(true)
    }

    fn kv_unlock_at(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, StateError> {
        if session.is_empty() {
            return Err(StateError::Internal("missing session".to_string()));
        }
        let Some(e) = self.kv.get(key) else {
            return Ok(false);
        };
        if e.session.as_deref() != Some(session) {
            return Ok(false);
        }
        let entry = KvEntry {
            key: key.to_string(),
            create_index: e.create_index,
            modify_index: idx,
            lock_index: e.lock_index,
            flags,
            value,
            session: None,
        };
        self.write_entry(idx, entry);
        Ok(true)
    }

    /// `DELETE /v1/kv/<key>`: returns the `true`/`false` body.
    pub fn kv_delete(&mut self, key: &str, mode: DeleteMode) -> Result<bool, StateError> {
        let idx = self.next_index();
        match mode {
            DeleteMode::Single => {
                if key.is_empty() {
                    return Err(StateError::BadRequest("Missing key name".to_string()));
                }
                self.delete_key_at(idx, key);
                Ok(true)
            }
            DeleteMode::Tree => {
                self.delete_tree_at(idx, key);
                Ok(true)
            }
            DeleteMode::Cas(cas) => {
                if key.is_empty() {
                    return Err(StateError::BadRequest("Missing key name".to_string()));
                }
                Ok(self.delete_cas_at(idx, key, cas))
            }
        }
    }

    fn delete_key_at(&mut self, idx: u64, key: &str) -> bool {
        if self.kv.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
            self.kv_table_index = idx;
            self.commit(idx);
            true
        } else {
            false
        }
    }

    fn delete_tree_at(&mut self, idx: u64, prefix: &str) {
        let keys: Vec<String> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.delete_key_at(idx, &k);
        }
    }

    /// CAS delete; a missing key counts as success (`kvsDeleteCASTxn`).
    fn delete_cas_at(&mut self, idx: u64, key: &str, cas: u64) -> bool {
        match self.kv.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                self.delete_key_at(idx, key);
                true
            }
        }
    }

    // --- transactions ---

    /// `PUT /v1/txn` with KV operations: all or nothing, one index for the whole transaction.
    pub fn txn(&mut self, ops: &[TxnKvOp], now: Instant) -> Result<Vec<TxnResult>, Vec<TxnError>> {
        let snapshot = self.clone();
        let idx = self.next_index();
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_op(idx, op, now) {
                Ok(mut r) => results.append(&mut r),
                Err(what) => errors.push(TxnError { op_index: i, what }),
            }
        }
        if errors.is_empty() {
            Ok(results)
        } else {
            *self = snapshot;
            Err(errors)
        }
    }

    fn txn_op(&mut self, idx: u64, op: &TxnKvOp, now: Instant) -> Result<Vec<TxnResult>, String> {
        let key = op.key.as_str();
        let read = |e: &KvEntry| TxnResult {
            entry: e.clone(),
            with_value: true,
        };
        let written = |s: &State| -> Vec<TxnResult> {
            s.kv.get(key)
                .map(|e| TxnResult {
                    entry: e.clone(),
                    with_value: false,
                })
                .into_iter()
                .collect()
        };
        if op.value.len() > MAX_KV_VALUE_BYTES {
            return Err(format!("value for key {key:?} is too large"));
        }
        match op.verb.as_str() {
            "set" => {
                if key.is_empty() {
                    return Err("Missing key name".to_string());
                }
                self.kv_set_at(idx, key, op.value.clone(), op.flags);
                Ok(written(self))
            }
            "cas" => {
                if self.kv_cas_at(idx, key, op.value.clone(), op.flags, op.index) {
                    Ok(written(self))
                } else {
                    Err(format!("failed to set key {key:?}, index is stale"))
                }
            }
            "lock" => {
                if self.lock_delay_until(key, now).is_some() {
                    return Err(format!("failed to lock key {key:?} due to lock delay"));
                }
                match self.kv_lock_at(idx, key, op.value.clone(), op.flags, &op.session) {
                    Ok(true) => Ok(written(self)),
                    Ok(false) => Err(format!("failed to lock key {key:?}, lock is already held")),
                    Err(e) => Err(e.to_string()),
                }
            }
            "unlock" => {
                match self.kv_unlock_at(idx, key, op.value.clone(), op.flags, &op.session) {
                    Ok(true) => Ok(written(self)),
                    Ok(false) => Err(format!(
                        "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            "get" => match self.kv.get(key) {
                Some(e) => Ok(vec![read(e)]),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "get-or-empty" => Ok(self.kv.get(key).map(read).into_iter().collect()),
            "get-tree" => Ok(self.kv_list(key).0.into_iter().map(read).collect()),
            "check-index" => match self.kv.get(key) {
                Some(e) if e.modify_index == op.index => Ok(vec![TxnResult {
                    entry: e.clone(),
                    with_value: false,
                }]),
                Some(e) => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.modify_index, op.index
                )),
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
            },
            "check-session" => match self.kv.get(key) {
                Some(e) if e.session.as_deref().unwrap_or("") == op.session => {
                    Ok(vec![TxnResult {
                        entry: e.clone(),
                        with_value: false,
                    }])
                }
                Some(e) => Err(format!(
                    "failed session check for key {key:?}, current session {:?} != {:?}",
                    e.session.as_deref().unwrap_or(""),
                    op.session
                )),
                None => Err(format!(
                    "failed to check session, key {key:?} doesn't exist"
                )),
            },
            "check-not-exists" => match self.kv.get(key) {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(Vec::new()),
            },
            "delete" => {
                self.delete_key_at(idx, key);
                Ok(Vec::new())
            }
            "delete-tree" => {
                self.delete_tree_at(idx, key);
                Ok(Vec::new())
            }
            "delete-cas" => {
                if self.delete_cas_at(idx, key, op.index) {
                    Ok(Vec::new())
                } else {
                    Err(format!("failed to delete key {key:?}, index is stale"))
                }
            }
            other => Err(format!("unknown KV verb {other:?}")),
        }
    }

    // --- sessions ---

    fn new_uuid(&mut self) -> String {
        let b: [u8; 16] = self.rng.random();
        let h = hex::encode(b);
        format!(
            "{}-{}-4{}-{}{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            ['8', '9', 'a', 'b'][usize::from(b[8] & 3)],
            &h[17..20],
            &h[20..32]
        )
    }

    /// `PUT /v1/session/create`: returns the new session's ID.
    pub fn session_create(
        &mut self,
        req: SessionCreate,
        now: Instant,
    ) -> Result<String, StateError> {
        let node = req.node.clone().unwrap_or_else(|| self.cfg.node.clone());
        if !self.nodes.contains_key(&node) {
            return Err(StateError::Internal(format!(
                "Failed to create session: Missing node registration: {node:?}"
            )));
        }
        let behavior = match req.behavior.as_str() {
            "" | "release" => Behavior::Release,
            "delete" => Behavior::Delete,
            other => {
                return Err(StateError::Internal(format!(
                    "Invalid Behavior setting '{other}'"
                )));
            }
        };
        let ttl_duration = if req.ttl.is_empty() {
            None
        } else {
            let ttl = super::duration::parse_go_duration(&req.ttl).ok_or_else(|| {
                StateError::Internal(format!(
                    "Session TTL '{}' invalid: time: invalid duration {:?}",
                    req.ttl, req.ttl
                ))
            })?;
            if !ttl.is_zero() && (ttl < self.cfg.session_ttl_min || ttl > self.cfg.session_ttl_max)
            {
                return Err(StateError::Internal(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    ttl.as_nanos(),
                    super::duration::format_go_duration(self.cfg.session_ttl_min),
                    super::duration::format_go_duration(self.cfg.session_ttl_max)
                )));
            }
            (!ttl.is_zero()).then_some(ttl)
        };
        let lock_delay = req.lock_delay.unwrap_or(self.cfg.default_lock_delay);
        if lock_delay > self.cfg.max_lock_delay {
            return Err(StateError::Internal(format!(
                "Invalid Lock Delay '{}', must be less than {}",
                super::duration::format_go_duration(lock_delay),
                super::duration::format_go_duration(self.cfg.max_lock_delay)
            )));
        }
        let node_checks = req
            .node_checks
            .clone()
            .unwrap_or_else(|| vec![SERF_CHECK_ID.to_string()]);
        for check in node_checks.iter().chain(req.service_checks.iter()) {
            let status = if check == SERF_CHECK_ID {
                Some(if self.serf_critical.contains(&node) {
                    Status::Critical
                } else {
                    Status::Passing
                })
            } else {
                self.checks.get(check).map(|c| c.status)
            };
            match status {
                None => {
                    return Err(StateError::Internal(format!(
                        "Missing check '{check}' registration"
                    )));
                }
                Some(Status::Critical) => {
                    return Err(StateError::Internal(format!(
                        "Check '{check}' is in critical state"
                    )));
                }
                Some(_) => {}
            }
        }
        let id = self.new_uuid();
        let idx = self.next_index();
        let expires_at = ttl_duration.map(|t| now + t * self.cfg.session_ttl_multiplier);
        self.sessions.insert(
            id.clone(),
            SessionEntry {
                id: id.clone(),
                name: req.name,
                node,
                lock_delay,
                behavior,
                ttl: if ttl_duration.is_some() {
                    req.ttl
                } else {
                    String::new()
                },
                ttl_duration,
                node_checks,
                service_checks: req.service_checks,
                create_index: idx,
                modify_index: idx,
                expires_at,
            },
        );
        self.sessions_table_index = idx;
        self.commit(idx);
        Ok(id)
    }

    /// `PUT /v1/session/renew/<id>`: resets the TTL timer.
    pub fn session_renew(&mut self, id: &str, now: Instant) -> Result<SessionEntry, StateError> {
        let mult = self.cfg.session_ttl_multiplier;
        match self.sessions.get_mut(id) {
            Some(s) => {
                s.expires_at = s.ttl_duration.map(|t| now + t * mult);
                Ok(s.clone())
            }
            None => Err(StateError::NotFound(format!("Session id '{id}' not found"))),
        }
    }

    /// `PUT /v1/session/destroy/<id>`: always `true` (idempotent).
    pub fn session_destroy(&mut self, id: &str, now: Instant) -> bool {
        let idx = self.next_index();
        self.invalidate_session_at(idx, id, now);
        true
    }

    /// One session (empty when unknown) and the sessions table index.
    pub fn session_info(&self, id: &str) -> (Vec<&SessionEntry>, u64) {
        (
            self.sessions.get(id).into_iter().collect(),
            self.sessions_table_index.max(1),
        )
    }

    /// Every session and the sessions table index.
    pub fn session_list(&self) -> (Vec<&SessionEntry>, u64) {
        (
            self.sessions.values().collect(),
            self.sessions_table_index.max(1),
        )
    }

    /// Whether a session exists.
    pub fn has_session(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    /// Removes a session: its locks are released (or its keys deleted) and the lock delay
    /// starts on every key it held.
    fn invalidate_session_at(&mut self, idx: u64, id: &str, now: Instant) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        self.sessions_table_index = idx;
        self.commit(idx);
        let held: Vec<String> = self
            .kv
            .values()
            .filter(|e| e.session.as_deref() == Some(id))
            .map(|e| e.key.clone())
            .collect();
        for key in held {
            if !session.lock_delay.is_zero() {
                self.lock_delays
                    .insert(key.clone(), now + session.lock_delay);
            }
            match session.behavior {
                Behavior::Release => {
                    if let Some(e) = self.kv.get(&key).cloned() {
                        self.write_entry(
                            idx,
                            KvEntry {
                                modify_index: idx,
                                session: None,
                                ..e
                            },
                        );
                    }
                }
                Behavior::Delete => {
                    self.delete_key_at(idx, &key);
                }
            }
        }
    }

    // --- services and checks ---

    fn touch_service_name(&mut self, idx: u64, name: &str) {
        self.service_name_index.insert(name.to_string(), idx);
        self.commit(idx);
    }

    /// `PUT /v1/agent/service/register`.
    pub fn register_service(
        &mut self,
        reg: ServiceRegistration,
        now: Instant,
    ) -> Result<(), StateError> {
        if reg.name.is_empty() {
            return Err(StateError::BadRequest("Missing service name".to_string()));
        }
        let id = reg
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| reg.name.clone());
        // Validate every check before changing anything.
        for c in &reg.checks {
            if c.ttl.is_none() && c.http.is_some() && c.interval.is_none_or(|i| i.is_zero()) {
                return Err(StateError::BadRequest(
                    "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks"
                        .to_string(),
                ));
            }
        }
        let idx = self.next_index();
        let previous = self.services.get(&id).cloned();
        if let Some(prev) = &previous
            && prev.name != reg.name
        {
            self.touch_service_name(idx, &prev.name.clone());
        }
        let entry = ServiceEntry {
            id: id.clone(),
            name: reg.name.clone(),
            tags: reg.tags.clone(),
            meta: reg.meta.clone(),
            address: reg.address.clone(),
            port: reg.port,
            weights: reg.weights.unwrap_or((1, 1)),
            enable_tag_override: reg.enable_tag_override,
            create_index: previous.as_ref().map(|p| p.create_index).unwrap_or(idx),
            modify_index: idx,
        };
        let service_changed = previous
            .as_ref()
            .map(|p| {
                ServiceEntry {
                    modify_index: idx,
                    ..p.clone()
                } != entry
            })
            .unwrap_or(true);
        if service_changed {
            self.services.insert(id.clone(), entry);
            self.services_table_index = idx;
        }
        let multiple = reg.checks.len() > 1;
        let mut new_ids = BTreeSet::new();
        for (n, def) in reg.checks.into_iter().enumerate() {
            let check_id = def
                .check_id
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    if multiple {
                        format!("service:{id}:{}", n + 1)
                    } else {
                        format!("service:{id}")
                    }
                });
            new_ids.insert(check_id.clone());
            self.upsert_check(idx, &check_id, &def, Some((&id, &reg.name, &reg.tags)), now);
        }
        if reg.replace_existing_checks {
            let stale: Vec<String> = self
                .checks
                .values()
                .filter(|c| c.service_id == id && !new_ids.contains(&c.id))
                .map(|c| c.id.clone())
                .collect();
            for cid in stale {
                self.remove_check_at(idx, &cid, now);
            }
        }
        // Service tags are copied into its checks.
        let tags = reg.tags;
        for c in self.checks.values_mut().filter(|c| c.service_id == id) {
            if c.service_tags != tags {
                c.service_tags = tags.clone();
                c.modify_index = idx;
            }
        }
        if service_changed {
            self.touch_service_name(idx, &reg.name);
        }
        Ok(())
    }

    /// Inserts or updates one check at `idx`; indexes only move when something observable
    /// changed. `owner` is (service ID, service name, tags); `None` = a node-level check.
    fn upsert_check(
        &mut self,
        idx: u64,
        check_id: &str,
        def: &CheckDefinition,
        owner: Option<(&str, &str, &[String])>,
        now: Instant,
    ) {
        let prev = self.checks.get(check_id).cloned();
        let kind = if let Some(ttl) = def.ttl {
            CheckKind::Ttl {
                ttl,
                expires_at: match &prev {
                    Some(CheckEntry {
                        kind: CheckKind::Ttl { expires_at, .. },
                        ..
                    }) => *expires_at,
                    _ => now + ttl,
                },
            }
        } else if let Some(url) = def.http.clone() {
            CheckKind::Http {
                url,
                method: def.method.clone().unwrap_or_else(|| "GET".to_string()),
                header: def.header.clone(),
                interval: def
                    .interval
                    .unwrap_or(Duration::from_secs(10))
                    .max(self.cfg.min_check_interval),
                timeout: def.timeout.unwrap_or(Duration::from_secs(10)),
                tls_skip_verify: def.tls_skip_verify,
                next_run: now,
            }
        } else {
            CheckKind::Other
        };
        // Re-registration keeps the current status of a check of the same kind, so that a
        // periodic re-register does not flap the instance to critical.
        let same_kind = prev
            .as_ref()
            .is_some_and(|p| std::mem::discriminant(&p.kind) == std::mem::discriminant(&kind));
        let (status, output, critical_since) = match (&prev, def.status) {
            (_, Some(s)) => (s, String::new(), (s == Status::Critical).then_some(now)),
            (Some(p), None) if same_kind => (p.status, p.output.clone(), p.critical_since),
            _ => (Status::Critical, String::new(), Some(now)),
        };
        let deregister_critical_after = def
            .deregister_critical_after
            .map(|d| d.max(self.cfg.deregister_critical_min));
        let (service_id, service_name, service_tags) = match owner {
            Some((id, name, tags)) => (id.to_string(), name.to_string(), tags.to_vec()),
            None => (String::new(), String::new(), Vec::new()),
        };
        let default_name = if service_name.is_empty() {
            check_id.to_string()
        } else {
            format!("Service '{service_name}' check")
        };
        let check = CheckEntry {
            id: check_id.to_string(),
            name: def
                .name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(default_name),
            status,
            notes: def.notes.clone(),
            output,
            service_id,
            service_name: service_name.clone(),
            service_tags,
            kind,
            deregister_critical_after,
            critical_since,
            create_index: prev.as_ref().map(|p| p.create_index).unwrap_or(idx),
            modify_index: idx,
        };
        let changed = prev
            .as_ref()
            .map(|p| !same_check(p, &check))
            .unwrap_or(true);
        let became_critical = check.status == Status::Critical
            && prev.as_ref().is_some_and(|p| p.status != Status::Critical);
        if changed {
            // A check moved to another service: that service's watchers must wake too.
            if let Some(p) = &prev
                && p.service_name != service_name
            {
                self.touch_check_owner(idx, &p.service_name.clone());
            }
            self.checks.insert(check_id.to_string(), check);
            self.checks_table_index = idx;
            self.touch_check_owner(idx, &service_name);
            if became_critical {
                self.invalidate_sessions_with_check(idx, check_id, now);
            }
        } else if let Some(p) = prev {
            // Same observable check: keep its indexes but take the new timer settings.
            self.checks.insert(
                check_id.to_string(),
                CheckEntry {
                    modify_index: p.modify_index,
                    ..check
                },
            );
        }
    }

    /// Moves the index of the service a check belongs to; a node check (empty name) affects
    /// every service on the node.
    fn touch_check_owner(&mut self, idx: u64, service_name: &str) {
        if service_name.is_empty() {
            let names: Vec<String> = self.services.values().map(|s| s.name.clone()).collect();
            for n in names {
                self.touch_service_name(idx, &n);
            }
            self.commit(idx);
        } else {
            self.touch_service_name(idx, service_name);
        }
    }

    /// `PUT /v1/agent/check/register`: a check on an existing service, or a node-level check
    /// (which then appears in, and can make critical, every service on the node).
    pub fn register_check(
        &mut self,
        def: CheckDefinition,
        service_id: Option<&str>,
        now: Instant,
    ) -> Result<(), StateError> {
        // Consul requires a name; the ID defaults to it.
        let Some(name) = def.name.clone().filter(|s| !s.is_empty()) else {
            return Err(StateError::BadRequest("Missing check name".to_string()));
        };
        let check_id = def
            .check_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or(name);
        if def.ttl.is_none() && def.http.is_some() && def.interval.is_none_or(|i| i.is_zero()) {
            return Err(StateError::BadRequest(
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks"
                    .to_string(),
            ));
        }
        let owner = match service_id.filter(|s| !s.is_empty()) {
            Some(sid) => match self.services.get(sid) {
                Some(s) => Some((s.id.clone(), s.name.clone(), s.tags.clone())),
                None => {
                    return Err(StateError::BadRequest(format!(
                        "ServiceID {sid:?} does not exist"
                    )));
                }
            },
            None => None,
        };
        let idx = self.next_index();
        let owner_ref = owner
            .as_ref()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_slice()));
        self.upsert_check(idx, &check_id, &def, owner_ref, now);
        Ok(())
    }

    /// `PUT /v1/agent/check/deregister/<id>` (no-op when unknown).
    pub fn deregister_check(&mut self, check_id: &str, now: Instant) {
        let idx = self.next_index();
        self.remove_check_at(idx, check_id, now);
    }

    fn remove_check_at(&mut self, idx: u64, check_id: &str, now: Instant) {
        if let Some(c) = self.checks.remove(check_id) {
            self.checks_table_index = idx;
            self.touch_check_owner(idx, &c.service_name);
            self.invalidate_sessions_with_check(idx, check_id, now);
        }
    }

    fn invalidate_sessions_with_check(&mut self, idx: u64, check_id: &str, now: Instant) {
        let ids: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node_checks.iter().any(|c| c == check_id)
                    || s.service_checks.iter().any(|c| c == check_id)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.invalidate_session_at(idx, &id, now);
        }
    }

    /// `PUT /v1/agent/service/deregister/<id>`: removes the service and its checks (no-op when
    /// unknown).
    pub fn deregister_service(&mut self, id: &str, now: Instant) {
        let idx = self.next_index();
        self.deregister_service_at(idx, id, now);
    }

    fn deregister_service_at(&mut self, idx: u64, id: &str, now: Instant) {
        let Some(svc) = self.services.remove(id) else {
            return;
        };
        self.services_table_index = idx;
        self.touch_service_name(idx, &svc.name);
        let checks: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.service_id == id)
            .map(|c| c.id.clone())
            .collect();
        for cid in checks {
            self.remove_check_at(idx, &cid, now);
        }
    }

    // --- nodes ---

    /// Whether `node` is registered (a node that left is not, until it joins again).
    pub fn has_node(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Registered node names.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// A node joins (again): it is registered with a fresh, passing `serfHealth` check.
    /// Joining a registered node changes nothing.
    pub fn node_join(&mut self, node: &str) {
        if self.nodes.contains_key(node) {
            return;
        }
        self.serf_critical.remove(node);
        let idx = self.next_index();
        self.nodes.insert(node.to_string(), idx);
        if node == self.cfg.node {
            self.node_index = idx;
        }
        self.commit(idx);
    }

    /// A node leaves the cluster gracefully (`consul leave`, or SIGTERM on a client agent with
    /// `leave_on_terminate` on, its default): the node is deregistered from the catalog, and
    /// with it its `serfHealth` check, so every session on it is invalidated (locks released or
    /// deleted, lock delay started) and — for the agent's own node — every service and check it
    /// registered disappears. Returns how many sessions were invalidated. A plain restart
    /// (SIGTERM with `leave_on_terminate = false`, a crash) does **not** call this: the node
    /// stays registered and its sessions survive as long as they are renewed within their TTL.
    pub fn node_leave(&mut self, node: &str, now: Instant) -> usize {
        if self.nodes.remove(node).is_none() {
            return 0;
        }
        self.serf_critical.remove(node);
        let idx = self.next_index();
        self.commit(idx);
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node)
            .map(|s| s.id.clone())
            .collect();
        for id in &gone {
            self.invalidate_session_at(idx, id, now);
        }
        if node == self.cfg.node {
            let ids: Vec<String> = self.services.keys().cloned().collect();
            for id in ids {
                self.deregister_service_at(idx, &id, now);
            }
            let node_checks: Vec<String> = self
                .checks
                .values()
                .filter(|c| c.service_id.is_empty())
                .map(|c| c.id.clone())
                .collect();
            for cid in node_checks {
                self.remove_check_at(idx, &cid, now);
            }
        }
        gone.len()
    }

    /// The servers' failure detector declared `node`'s agent failed (it stopped without
    /// leaving and did not answer the gossip probes for the suspicion timeout): as Consul's
    /// leader does in `handleFailedMember`, the node stays registered but its `serfHealth`
    /// check turns critical, and — as the state store does for any check that turns critical —
    /// every session that lists `serfHealth` among its node checks is invalidated (locks
    /// released or deleted, lock delay started). Sessions created with `NodeChecks: []` are not
    /// touched: they live as long as they are renewed within their TTL. Services and checks
    /// stay in the catalog (health queries show them with a critical `serfHealth`). Returns how
    /// many sessions were invalidated; a node already critical, or not registered, changes
    /// nothing.
    pub fn node_fail(&mut self, node: &str, now: Instant) -> usize {
        if !self.nodes.contains_key(node) || self.serf_critical.contains(node) {
            return 0;
        }
        self.serf_critical.insert(node.to_string());
        let idx = self.next_index();
        self.touch_node_health(idx, node);
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node && s.node_checks.iter().any(|c| c == SERF_CHECK_ID))
            .map(|s| s.id.clone())
            .collect();
        for id in &gone {
            self.invalidate_session_at(idx, id, now);
        }
        gone.len()
    }

    /// `node`'s agent is reachable again (it rejoined the gossip pool): its `serfHealth`
    /// passes again (Consul's `handleAliveMember`). No-op when it was not critical.
    pub fn node_alive(&mut self, node: &str) {
        if !self.serf_critical.remove(node) {
            return;
        }
        let idx = self.next_index();
        self.touch_node_health(idx, node);
    }

    /// Whether `node`'s `serfHealth` is critical.
    pub fn serf_critical(&self, node: &str) -> bool {
        self.serf_critical.contains(node)
    }

    /// A node check of `node` changed status: the catalog and every service on the node see a
    /// new index (their health answers changed).
    fn touch_node_health(&mut self, idx: u64, node: &str) {
        if node == self.cfg.node {
            self.node_index = idx;
            self.checks_table_index = idx;
            self.touch_check_owner(idx, "");
        }
        self.commit(idx);
    }

    /// Forgets every service and check, as after an agent restart (fault injection).
    pub fn forget_services(&mut self, now: Instant) {
        let idx = self.next_index();
        let ids: Vec<String> = self.services.keys().cloned().collect();
        for id in ids {
            self.deregister_service_at(idx, &id, now);
        }
    }

    /// `PUT /v1/agent/check/{pass,warn,fail}/<id>`: only TTL checks can be updated.
    pub fn update_ttl_check(
        &mut self,
        check_id: &str,
        status: Status,
        output: &str,
        now: Instant,
    ) -> Result<(), StateError> {
        let Some(check) = self.checks.get_mut(check_id) else {
            return Err(ttl_not_found(check_id));
        };
        let CheckKind::Ttl { ttl, expires_at } = &mut check.kind else {
            return Err(ttl_not_found(check_id));
        };
        *expires_at = now + *ttl;
        self.set_check_status(check_id, status, output, now);
        Ok(())
    }

    /// Records the result of a polled (HTTP) check and schedules its next run.
    pub fn record_check_result(
        &mut self,
        check_id: &str,
        status: Status,
        output: &str,
        now: Instant,
    ) {
        if let Some(CheckEntry {
            kind: CheckKind::Http {
                interval, next_run, ..
            },
            ..
        }) = self.checks.get_mut(check_id)
        {
            *next_run = now + *interval;
        } else {
            return;
        }
        self.set_check_status(check_id, status, output, now);
    }

    /// HTTP checks due at `now`: (check ID, URL, method, headers, timeout, tls_skip_verify).
    /// Their next run is pushed back by one interval so a slow check is not started twice.
    pub fn take_due_http_checks(&mut self, now: Instant) -> Vec<HttpCheckJob> {
        let mut jobs = Vec::new();
        for c in self.checks.values_mut() {
            if let CheckKind::Http {
                url,
                method,
                header,
                interval,
                timeout,
                tls_skip_verify,
                next_run,
            } = &mut c.kind
                && *next_run <= now
            {
                *next_run = now + *interval + *timeout;
                jobs.push(HttpCheckJob {
                    check_id: c.id.clone(),
                    url: url.clone(),
                    method: method.clone(),
                    header: header.clone(),
                    timeout: *timeout,
                    tls_skip_verify: *tls_skip_verify,
                });
            }
        }
        jobs
    }

    fn set_check_status(&mut self, check_id: &str, status: Status, output: &str, now: Instant) {
        let idx = self.next_index();
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        if check.status == status && check.output == output {
            return;
        }
        if status == Status::Critical {
            if check.critical_since.is_none() {
                check.critical_since = Some(now);
            }
        } else {
            check.critical_since = None;
        }
        let became_critical = status == Status::Critical && check.status != Status::Critical;
        check.status = status;
        check.output = output.to_string();
        check.modify_index = idx;
        let name = check.service_name.clone();
        self.checks_table_index = idx;
        self.touch_check_owner(idx, &name);
        if became_critical {
            self.invalidate_sessions_with_check(idx, check_id, now);
        }
    }

    /// Applies every timer due at `now`: session TTL expiry, TTL checks turning critical,
    /// services critical for longer than `DeregisterCriticalServiceAfter`. Returns whether
    /// anything changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.index;
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        if !expired.is_empty() {
            let idx = self.next_index();
            for id in expired {
                self.invalidate_session_at(idx, &id, now);
            }
        }
        let ttl_expired: Vec<String> = self
            .checks
            .values()
            .filter(|c| {
                c.status != Status::Critical
                    && matches!(c.kind, CheckKind::Ttl { expires_at, .. } if expires_at <= now)
            })
            .map(|c| c.id.clone())
            .collect();
        for cid in ttl_expired {
            self.set_check_status(&cid, Status::Critical, "TTL expired", now);
        }
        let reap: BTreeSet<String> = self
            .checks
            .values()
            .filter(|c| match (c.deregister_critical_after, c.critical_since) {
                (Some(after), Some(since)) => c.status == Status::Critical && since + after <= now,
                _ => false,
            })
            .map(|c| c.service_id.clone())
            .collect();
        if !reap.is_empty() {
            let idx = self.next_index();
            for sid in reap {
                self.deregister_service_at(idx, &sid, now);
            }
        }
        self.index != before
    }

    /// The earliest instant at which [`State::tick`] or an HTTP check has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.sessions.values().filter_map(|s| s.expires_at);
        let checks = self.checks.values().flat_map(|c| {
            let timer = match c.kind {
                CheckKind::Ttl { expires_at, .. } if c.status != Status::Critical => {
                    Some(expires_at)
                }
                CheckKind::Http { next_run, .. } => Some(next_run),
                _ => None,
            };
            let reap = match (c.deregister_critical_after, c.critical_since) {
                (Some(after), Some(since)) => Some(since + after),
                _ => None,
            };
            timer.into_iter().chain(reap)
        });
        sessions.chain(checks).min()
    }

    /// Every registered service instance (`GET /v1/agent/services`).
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// Every registered check.
    pub fn checks(&self) -> impl Iterator<Item = &CheckEntry> {
        self.checks.values()
    }

    /// One service instance by ID.
    pub fn service(&self, id: &str) -> Option<&ServiceEntry> {
        self.services.get(id)
    }

    /// The node's `serfHealth` check: passing, or critical while the failure detector holds
    /// the agent failed ([`State::node_fail`]); the outputs are Consul's.
    pub fn serf_check(&self) -> CheckEntry {
        let failed = self.serf_critical.contains(&self.cfg.node);
        CheckEntry {
            id: SERF_CHECK_ID.to_string(),
            name: "Serf Health Status".to_string(),
            status: if failed {
                Status::Critical
            } else {
                Status::Passing
            },
            notes: String::new(),
            output: if failed {
                "Agent not live or unreachable"
            } else {
                "Agent alive and reachable"
            }
            .to_string(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            kind: CheckKind::Other,
            deregister_critical_after: None,
            critical_since: None,
            create_index: self.node_index,
            modify_index: self.node_index,
        }
    }

    /// Index of the catalog tables (services and checks).
    pub fn catalog_index(&self) -> u64 {
        self.services_table_index
            .max(self.checks_table_index)
            .max(self.node_index)
    }

    /// Every instance of a service with its checks, and the index for blocking queries: the
    /// service name's own index (or the catalog's when the name was never seen).
    pub fn health_service(&self, name: &str) -> (Vec<HealthEntry>, u64) {
        let entries = self
            .services
            .values()
            .filter(|s| s.name == name)
            .map(|s| {
                let mut checks = vec![self.serf_check()];
                // Node checks first (as Consul lists them), then the instance's own.
                checks.extend(
                    self.checks
                        .values()
                        .filter(|c| c.service_id.is_empty())
                        .cloned(),
                );
                checks.extend(
                    self.checks
                        .values()
                        .filter(|c| c.service_id == s.id)
                        .cloned(),
                );
                HealthEntry {
                    service: s.clone(),
                    checks,
                }
            })
            .collect();
        let idx = self
            .service_name_index
            .get(name)
            .copied()
            .unwrap_or_else(|| self.catalog_index());
        (entries, idx.max(1))
    }

    /// Service name → union of tags (`GET /v1/catalog/services`), with the services index.
    pub fn catalog_services(&self) -> (BTreeMap<String, Vec<String>>, u64) {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        out.insert("consul".to_string(), BTreeSet::new());
        for s in self.services.values() {
            out.entry(s.name.clone())
                .or_default()
                .extend(s.tags.iter().cloned());
        }
        (
            out.into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            self.services_table_index.max(self.node_index).max(1),
        )
    }

    /// Instances of `name` (optionally with `tag`; both case-insensitive, as DNS is) whose
    /// checks are not critical; `None` when no instance of the service exists at all.
    pub fn dns_instances(&self, name: &str, tag: Option<&str>) -> Option<Vec<ServiceEntry>> {
        let mut any = false;
        let mut out = Vec::new();
        for s in self
            .services
            .values()
            .filter(|s| s.name.eq_ignore_ascii_case(name))
        {
            any = true;
            if tag.is_some_and(|t| !s.tags.iter().any(|x| x.eq_ignore_ascii_case(t))) {
                continue;
            }
            let critical = self.checks.values().any(|c| {
                (c.service_id == s.id || c.service_id.is_empty()) && c.status == Status::Critical
            });
            if !critical {
                out.push(s.clone());
            }
        }
        any.then_some(out)
    }

    /// Every KV entry (for invariant checks in tests).
    pub fn kv_entries(&self) -> impl Iterator<Item = &KvEntry> {
        self.kv.values()
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
#[path = "state_tests.rs"]
mod tests;
