//! Where the router's table comes from, in our own vocabulary: a [`KvSource`] (one key read
//! with blocking queries) feeding [`watch_map`], which publishes validated `Arc<ShardMap>`s,
//! and a [`Resolver`] mapping a shard to its instances' addresses.
//!
//! The Consul adapters in [`super::consul`] implement both traits; tests may implement them
//! with anything. The watch loop follows Consul's documented client rules (index strictly
//! increasing or reset to 0, never below 1, a token-bucket rate limit, `wait` shorter than the
//! HTTP timeout) and never publishes a map that fails to parse or validate: a corrupt map is
//! refused with a logged error and the last good one stays.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::shard::ShardMap;
use crate::shutdown::{CancellationToken, TaskTracker};

/// One answer of a KV read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRead {
    /// The index to block on next (`X-Consul-Index`).
    pub index: u64,
    /// The value, `None` when the key does not exist.
    pub value: Option<Vec<u8>>,
}

/// A KV read failed (Consul unreachable, an error status, a bad answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Resolving a shard's instances failed (as opposed to "it has none", which is `Ok(vec![])`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

/// Reads the shard map key; `index > 0` blocks until the index passes it or `wait` ends.
pub trait KvSource: Send + Sync + 'static {
    /// One (blocking) read.
    fn read(&self, index: u64, wait: Duration) -> BoxFuture<'_, Result<KvRead, SourceError>>;
}

/// Maps a shard to the addresses of its healthy instances.
pub trait Resolver: Send + Sync + 'static {
    /// The healthy instances of `shard`; empty when it has none.
    fn resolve(&self, shard: u32) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>>;
}

/// The latest good shard map; `None` until the first one loads.
pub type MapFeed = watch::Receiver<Option<Arc<ShardMap>>>;

/// Tuning of [`watch_map`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The blocking query's `wait`.
    pub wait: Duration,
    /// Token bucket: this many reads may go back to back ...
    pub burst: u32,
    /// ... after which one read per `refill` (a quiet loop refills the bucket).
    pub refill: Duration,
    /// The longest pause after errors (backoff doubles from `refill / 4` up to this).
    pub max_backoff: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            burst: 3,
            refill: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// The next index to block on, from the previous one and the answer's (Consul's rules):
/// an index that went backwards restarts from 0 (a plain read); never block on 0.
pub fn next_index(prev: u64, got: u64) -> u64 {
    if got < prev { 0 } else { got.max(1) }
}

/// A token bucket with time passed in (pure, so it is unit-tested without sleeping).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    refill: Duration,
    last: Instant,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket of `burst` tokens gaining one per `refill`.
    pub fn new(burst: u32, refill: Duration, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            capacity,
            tokens: capacity,
            refill,
            last: now,
        }
    }

    /// Takes a token: `None` when one was available, else how long to wait for one (the
    /// token is then considered taken).
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let gained = now.saturating_duration_since(self.last).as_secs_f64()
            / self.refill.as_secs_f64().max(1e-9);
        self.tokens = (self.tokens + gained).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            let missing = 1.0 - self.tokens;
            self.tokens -= 1.0;
            Some(self.refill.mul_f64(missing))
        }
    }
}

/// What the watch loop decided about one answer (pure; logged and published by the loop).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A new good map to publish.
    Publish(Arc<ShardMap>),
    /// Same map as the current one: nothing to do.
    Unchanged,
    /// The key does not exist (yet).
    Missing,
    /// The bytes are not a valid map: refused, the last good map stays.
    Corrupt(String),
}

/// Judges a read value against the current map.
pub fn judge(current: Option<&ShardMap>, value: Option<&[u8]>) -> Verdict {
    let Some(bytes) = value else {
        return Verdict::Missing;
    };
    match ShardMap::from_json(bytes) {
        Err(e) => Verdict::Corrupt(e.to_string()),
        Ok(m) if current == Some(&m) => Verdict::Unchanged,
        Ok(m) => Verdict::Publish(Arc::new(m)),
    }
}

/// Starts the watch loop on `tracker` and returns the feed of good maps.
pub fn watch_map(
    source: Arc<dyn KvSource>,
    options: WatchOptions,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> MapFeed {
    // Install the process-wide metrics recorder before the loop records anything.
    let _ = crate::telemetry::prometheus();
    let (tx, rx) = watch::channel(None);
    tracker.spawn(run_watch(source, options, tx, shutdown));
    rx
}

async fn run_watch(
    source: Arc<dyn KvSource>,
    options: WatchOptions,
    tx: watch::Sender<Option<Arc<ShardMap>>>,
    shutdown: CancellationToken,
) {
    let mut index = 0u64;
    let mut bucket = TokenBucket::new(options.burst, options.refill, Instant::now());
    let mut backoff = options.refill / 4;
    let mut missing_logged = false;
    loop {
        if let Some(pause) = bucket.take(Instant::now()) {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = source.read(index, options.wait) => r,
        };
        match read {
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "shard map watch failed; keeping the last good map");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(options.max_backoff);
                // After an error, start again with a plain read.
                index = 0;
            }
            Ok(r) => {
                backoff = options.refill / 4;
                let next = next_index(index, r.index);
                if next == 0 {
                    tracing::info!(
                        prev = index,
                        got = r.index,
                        "consul index went backwards; resetting"
                    );
                }
                index = next;
                let current = tx.borrow().clone();
                match judge(current.as_deref(), r.value.as_deref()) {
                    Verdict::Publish(m) => {
                        missing_logged = false;
                        tracing::info!(
                            version = m.version,
                            shards = m.shards.len(),
                            "shard map loaded"
                        );
                        metrics::gauge!("wafleet_router_table_version").set(m.version as f64);
                        tx.send_replace(Some(m));
                    }
                    Verdict::Unchanged => {}
                    Verdict::Missing => {
                        if !missing_logged {
                            tracing::warn!(
                                "no shard map in Consul yet (run `wafleet shards init`)"
                            );
                            missing_logged = true;
                        }
                    }
                    Verdict::Corrupt(e) => {
                        metrics::counter!("wafleet_router_map_rejected_total").increment(1);
                        tracing::error!(
                            error = %e,
                            kept_version = current.as_ref().map(|m| m.version),
                            "refusing a corrupt shard map; keeping the last good one"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 0), 1);
        assert_eq!(next_index(0, 17), 17);
        assert_eq!(next_index(17, 17), 17);
        assert_eq!(next_index(17, 20), 20);
        assert_eq!(next_index(17, 5), 0);
    }

    #[test]
    fn bucket_allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, Duration::from_secs(1), t0);
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), None);
        let wait = b.take(t0).unwrap();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // A quiet second later, the bucket has refilled partly.
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(b.take(t1), None);
    }

    #[test]
    fn corrupt_maps_are_refused() {
        let good = ShardMap::uniform(2);
        assert!(matches!(judge(None, Some(b"{")), Verdict::Corrupt(_)));
        assert!(matches!(
            judge(Some(&good), Some(br#"{"version":9,"shards":[]}"#)),
            Verdict::Corrupt(_)
        ));
        assert_eq!(judge(Some(&good), None), Verdict::Missing);
        assert_eq!(
            judge(Some(&good), Some(&good.to_json())),
            Verdict::Unchanged
        );
        let newer = good.edited(&[crate::shard::Edit::Count(3)]).unwrap();
        assert_eq!(
            judge(Some(&good), Some(&newer.to_json())),
            Verdict::Publish(Arc::new(newer))
        );
    }
}
