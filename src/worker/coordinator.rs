//! The seam between the worker and its coordination store, in our own vocabulary.
//!
//! A [`Coordinator`] is one worker *term*: one Consul session with its locks. The worker asks it
//! for the shard lock, for workspace locks, to register and deregister the service, and it tells
//! the worker when the session is about to be lost ([`Coordinator::fenced`]). The Consul adapter
//! (`consul.rs`) implements it over `crate::consul`; the unit tests use an in-memory fake. This
//! file holds only the trait and its error; it does no I/O.

use futures::future::BoxFuture;

use crate::ids::WorkspaceId;

/// Why a coordination call failed. Callers log and retry; none of these is fatal by itself.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The store could not be reached or answered with an error.
    #[error("coordination store: {0}")]
    Store(String),
    /// The session is gone (invalidated or destroyed): the term is over.
    #[error("session lost")]
    SessionLost,
    /// Shutdown was requested while waiting.
    #[error("cancelled")]
    Cancelled,
}

/// One worker term: a session and what it holds. Object safe (`Arc<dyn Coordinator>`).
pub trait Coordinator: Send + Sync + 'static {
    /// The session id, for logs and the state endpoint.
    fn session_id(&self) -> String;

    /// Waits until this term holds the shard lock (a blocking wait while another holder
    /// exists). Returns `Cancelled` when the shutdown token fires first.
    fn acquire_shard(&self) -> BoxFuture<'_, Result<(), CoordError>>;

    /// Tries to acquire a workspace lock: `Ok(true)` when held, `Ok(false)` when another
    /// session holds it or the lock delay is running. May wait a bounded time (a few seconds)
    /// for the current holder to go away before answering `false`, so callers can retry in a
    /// loop without spinning.
    fn acquire_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<bool, CoordError>>;

    /// Releases a workspace lock held by this session.
    fn release_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<(), CoordError>>;

    /// Registers the worker's service with its TTL check and keeps the check passing until
    /// [`Coordinator::deregister`] or the end of the term.
    fn register(&self) -> BoxFuture<'_, Result<(), CoordError>>;

    /// Removes the service registration (stops the check keeper first).
    fn deregister(&self) -> BoxFuture<'_, Result<(), CoordError>>;

    /// Resolves when the session could not be renewed before the fencing deadline (shorter
    /// than the TTL), i.e. before anyone else could acquire this term's locks.
    fn fenced(&self) -> BoxFuture<'static, ()>;

    /// A token cancelled when the term ends or is fenced: workspace leases handed to the
    /// session host are children of it.
    fn term_token(&self) -> crate::shutdown::CancellationToken;

    /// Whether this term fenced only because it could not renew in time (the store was
    /// unreachable), so its session may still be valid and worth resuming
    /// ([`super::driver::Connector::resume`]). False when the store said the session is gone.
    fn resumable(&self) -> bool {
        false
    }

    /// How long after the fencing resuming is worth trying: past it the store has surely
    /// invalidated the session (Consul: at most 2 × TTL after the last renewal), so a store
    /// that still does not answer about it is treated as having lost it and a new session is
    /// opened — a worker must not wait forever on a session that is gone.
    fn resume_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// How many times the session was renewed so far (the owner record's lease follows it,
    /// `owner.rs`); 0 for stores that do not renew.
    fn renewals(&self) -> u64 {
        0
    }

    /// Gives the term up after fencing: stops its keepers without releasing anything (the
    /// locks end with the session).
    fn abandon(&self);

    /// Ends the term cleanly: releases the shard lock and destroys the session (which releases
    /// anything still held). Called only after every workspace stopped.
    fn close(&self) -> BoxFuture<'_, Result<(), CoordError>>;
}
