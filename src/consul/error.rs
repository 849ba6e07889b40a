//! The one error type of the Consul client, its watches, keepers and resolver.
//!
//! Consul answers errors as plain text with a meaningful status code (`C:agent/http.go`), so
//! [`ConsulError::Status`] keeps both; callers branch on the code (403 ACL, 404, 429/503 rate
//! limiting, 500 RPC error) and show the text to people.

/// Everything that can go wrong talking to Consul.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// Consul answered with a non-success status; `body` is its plain-text explanation.
    #[error("consul answered {status}: {}", body.trim())]
    Status {
        /// HTTP status code.
        status: u16,
        /// Consul's plain-text body (may be empty).
        body: String,
    },
    /// A session renew answered 404: the session no longer exists (expired, destroyed,
    /// invalidated by a check), so every lock it held is gone.
    #[error("session {0} not found (expired or invalidated)")]
    SessionNotFound(String),
    /// The request could not be sent or its answer not read (connection refused or reset,
    /// timeout, TLS failure).
    #[error("consul transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// A key was refused before any request was sent.
    #[error("invalid consul key {key:?}: {reason}")]
    InvalidKey {
        /// The refused key (control characters are escaped by `{:?}`).
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A body from Consul did not have the expected shape.
    #[error("cannot decode consul {what}: {detail}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The parser's explanation.
        detail: String,
    },
    /// The configuration (environment variables, certificate files) is unusable.
    #[error("consul configuration: {0}")]
    Config(String),
    /// A request the client refuses to build (e.g. a transaction with too many operations).
    #[error("invalid consul request: {0}")]
    InvalidRequest(String),
    /// A DNS lookup failed (other than "no such name", which is an empty answer).
    #[error("consul DNS: {0}")]
    Dns(String),
    /// A key or service the caller asked for does not exist (CLI).
    #[error("not found: {0}")]
    NotFound(String),
    /// Consul refused a conditional write (a failed CAS or lock; CLI).
    #[error("refused by consul: {0}")]
    Rejected(String),
    /// Reading input or writing output failed (CLI).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The operation was cancelled through its CancellationToken.
    #[error("cancelled")]
    Cancelled,
}

impl ConsulError {
    /// The HTTP status, if Consul answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConsulError::Status { status, .. } => Some(*status),
            ConsulError::SessionNotFound(_) => Some(404),
            _ => None,
        }
    }

    /// Whether Consul refused a lock because the session does not exist: the state store
    /// answers `invalid session "<id>"` (`C:agent/consul/state/kvs.go`, `kvsLockTxn`), which the
    /// HTTP layer turns into a 500 like every other RPC error — so the body, not the status,
    /// tells it apart from a transient 500 such as "No cluster leader" during an election.
    pub fn is_invalid_session(&self) -> bool {
        match self {
            ConsulError::Status { status: 500, body } => {
                body.to_ascii_lowercase().contains("invalid session")
            }
            _ => false,
        }
    }

    /// Whether retrying later may succeed (transport errors, 5xx, 429). 4xx other than 429
    /// (bad request, ACL denied) and invalid input are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsulError::Transport(_) => true,
            ConsulError::Status { .. } if self.is_invalid_session() => false,
            ConsulError::Status { status, .. } => *status == 429 || *status >= 500,
            ConsulError::Decode { .. } => true,
            _ => false,
        }
    }
}
