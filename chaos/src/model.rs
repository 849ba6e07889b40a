//! PURE: the records the chaos suite collects (request outcomes, worker snapshots, browser
//! processes, accepted messages, webhook receipts) and the violation/evidence types. No I/O.
//!
//! Times are milliseconds since the start of the run (`t_ms`), taken from one monotonic clock,
//! so records from different tasks can be ordered and windowed.

use std::collections::BTreeMap;

use serde::Serialize;

/// What kind of request an [`Outcome`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `GET /v1/workspaces/{ws}/sessions` through the router.
    Status,
    /// `POST …/sessions/{s}/messages` through the router.
    Send,
}

/// The outcome of one request of the steady traffic.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// When the request was sent (ms since run start).
    pub t_ms: u64,
    /// How long it took.
    pub latency_ms: u64,
    /// The workspace.
    pub ws: String,
    /// Status read or send.
    pub kind: Kind,
    /// HTTP status, `None` for a transport error or timeout.
    pub status: Option<u16>,
    /// The JSON `error` code of a non-2xx answer, or the transport error.
    pub error: Option<String>,
    /// `X-Wafleet-Shard` of the answer (or the `shard` of a router error body).
    pub shard: Option<u32>,
    /// `(session, status)` pairs of a successful status read.
    pub sessions: Vec<(String, String)>,
}

impl Outcome {
    /// Whether the request succeeded (2xx).
    pub fn ok(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }

    /// A successful status read that shows a session not `WORKING` (or no session at all):
    /// the API answered, but the workspace cannot send — what a crashed browser looks like.
    pub fn degraded(&self) -> bool {
        self.kind == Kind::Status && self.ok() && !self.ok_working()
    }

    /// Failed, or degraded: the workspace was not fully serving at that instant.
    pub fn impaired(&self) -> bool {
        !self.ok() || self.degraded()
    }

    /// A successful status read where every session is `WORKING` (at least one session).
    pub fn ok_working(&self) -> bool {
        self.kind == Kind::Status
            && self.ok()
            && !self.sessions.is_empty()
            && self.sessions.iter().all(|(_, s)| s == "WORKING")
    }
}

/// One worker as seen through `GET /v1/worker/state` at one instant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerSnap {
    /// Shard it serves.
    pub shard: u32,
    /// Its pid (from state.json or from the process we started).
    pub pid: u32,
    /// Its current Consul session (current term).
    pub session: Option<String>,
    /// Term counter.
    pub term: u64,
    /// Ready and serving.
    pub ready: bool,
    /// Fenced.
    pub fenced: bool,
    /// Workspaces whose phase may have a browser alive (`starting`, `running`, `stopping`).
    pub may_run: Vec<String>,
    /// Overlaps the worker's own host detected so far.
    pub overlaps: u64,
}

/// One Chromium browser (main) process found in `/proc`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrowserProc {
    /// Its pid.
    pub pid: u32,
    /// Its start time (field 22 of `/proc/<pid>/stat`), to tell a reused pid apart.
    pub start_time: u64,
    /// Its `--user-data-dir`.
    pub profile: String,
}

/// A message the fleet accepted with 202.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    /// When it was accepted.
    pub t_ms: u64,
    /// Workspace and session.
    pub ws: String,
    /// Session id.
    pub session: String,
    /// The id the API returned.
    pub id: String,
    /// The unique text sent (how the simulator's copy is found).
    pub text: String,
}

/// A webhook the receiver got.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// When it arrived (first delivery).
    pub t_ms: u64,
    /// Event id (`evt_…`).
    pub id: String,
    /// Event name.
    pub event: String,
    /// Workspace.
    pub workspace: String,
    /// The message id in the payload, for message events.
    pub message_id: Option<String>,
    /// How many times it was delivered.
    pub deliveries: u32,
}

/// One broken invariant, with the evidence.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: String,
    /// When (ms since run start).
    pub t_ms: u64,
    /// What happened, in one line.
    pub what: String,
    /// The records that prove it (requests, processes, lock holders).
    pub evidence: serde_json::Value,
}

/// Whether an invariant was checked, and how.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Checked on real observations.
    Checked,
    /// The checker ran but there was nothing to check (e.g. no Chromium process exists).
    Vacuous,
    /// Not applicable to this fleet (e.g. sends before the engine is wired); did not run.
    NotApplicable,
}

/// The result of one invariant in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    /// Invariant name.
    pub name: String,
    /// Checked, vacuous or not applicable.
    pub status: CheckStatus,
    /// How many observations it looked at, and why it is vacuous/not applicable.
    pub detail: String,
    /// What broke (empty = held).
    pub violations: Vec<Violation>,
}

impl InvariantResult {
    /// A checked invariant with its violations.
    pub fn checked(name: &str, detail: String, violations: Vec<Violation>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Checked,
            detail,
            violations,
        }
    }

    /// An invariant whose checker ran on nothing.
    pub fn vacuous(name: &str, detail: String) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Vacuous,
            detail,
            violations: Vec::new(),
        }
    }

    /// An invariant that did not run, and why.
    pub fn not_applicable(name: &str, why: String) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::NotApplicable,
            detail: why,
            violations: Vec::new(),
        }
    }

    /// Held (or did not apply).
    pub fn held(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Session status and phone of every session, keyed by `(workspace, session)`.
pub type SessionTable = BTreeMap<(String, String), SessionSnap>;

/// One session at one instant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionSnap {
    /// Status name.
    pub status: String,
    /// Linked phone.
    pub me: Option<String>,
}
