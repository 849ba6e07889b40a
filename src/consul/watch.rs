//! Blocking-query watches, published through `tokio::sync::watch`.
//!
//! A watch runs one loop per watched thing and follows Consul's documented client obligations
//! (`api-docs/features/blocking.mdx`):
//!
//! * the next `?index=` is the returned `X-Consul-Index` when it is **not lower** than the
//!   previous one; when it goes backwards (snapshot restore, a list whose newest item was
//!   deleted, …) the index is reset to 0 and the query restarted without blocking;
//! * an index is never below 1 once a result has been seen (a buggy 0 must not busy-loop);
//! * a token bucket (burst 2 by default) rate-limits the loop, so a couple of quick changes get
//!   through and churn degrades to one request per refill interval;
//! * the HTTP timeout exceeds `wait + wait/16` (set by [`Client`]);
//! * on any error the last good value stays published and the loop backs off exponentially
//!   with jitter; only whole results are ever published, and only when they changed;
//! * the loop stops when its CancellationToken is cancelled or every receiver is dropped.
//!
//! The rules themselves ([`next_index`], [`TokenBucket`], [`Backoff`]) are pure and
//! unit-tested; the loop is a thin adapter.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::key::{validate_key, validate_prefix};
use super::{Client, ConsulError, HealthEntry, HealthQuery, KvPair, QueryMeta, QueryOptions};

/// What a watch publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchState<T> {
    /// No successful query yet.
    Loading,
    /// The latest whole result and the `X-Consul-Index` it came with.
    Ready {
        /// The result.
        value: T,
        /// Its index.
        index: u64,
    },
}

impl<T> WatchState<T> {
    /// The value, once one has been loaded.
    pub fn value(&self) -> Option<&T> {
        match self {
            WatchState::Loading => None,
            WatchState::Ready { value, .. } => Some(value),
        }
    }
}

/// Tuning of a watch loop. The defaults suit production; tests shorten them.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// `?wait=` of each blocking query (Consul's default is 5 min, its max 10 min).
    pub wait: Duration,
    /// Token bucket capacity (Consul's docs suggest 2).
    pub limiter_burst: u32,
    /// One token is added every `limiter_refill`.
    pub limiter_refill: Duration,
    /// First backoff after an error.
    pub backoff_min: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Send `?stale` (any server answers; recommended for discovery reads).
    pub stale: bool,
    /// Spawn the loop through this tracker (else `tokio::spawn`).
    pub tracker: Option<TaskTracker>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            wait: Duration::from_secs(300),
            limiter_burst: 2,
            limiter_refill: Duration::from_secs(1),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stale: false,
            tracker: None,
        }
    }
}

// === pure rules ===

/// The `?index=` for the next query after a result with index `returned`, when the previous
/// query used `prev`. 0 means "restart without blocking" (the index went backwards); otherwise
/// the result is at least 1.
pub fn next_index(prev: u64, returned: u64) -> u64 {
    if returned < prev { 0 } else { returned.max(1) }
}

/// A token bucket: `capacity` tokens, one more every `refill`. Time is passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    refill: Duration,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, refill: Duration, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            tokens: capacity,
            refill,
            last: now,
        }
    }

    /// Takes a token if one is available (`None`), else says how long until one is.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        if self.refill.is_zero() {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.refill.as_secs_f64()).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(self.refill.mul_f64(1.0 - self.tokens))
        }
    }
}

/// Exponential backoff with jitter: the n-th delay is drawn from `[d/2, d]` with
/// `d = min(min·2ⁿ, max)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay; `unit` is a random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        let d = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

// === the loop ===

/// Spawns a generic blocking-query loop. `fetch` runs one query with the given options and
/// returns a whole result with its meta.
pub fn spawn_watch<T, F, Fut>(
    what: String,
    opts: WatchOptions,
    cancel: CancellationToken,
    fetch: F,
) -> watch::Receiver<WatchState<T>>
where
    T: Clone + PartialEq + Send + Sync + 'static,
    F: Fn(QueryOptions) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(T, QueryMeta), ConsulError>> + Send + 'static,
{
    let (tx, rx) = watch::channel(WatchState::Loading);
    let tracker = opts.tracker.clone();
    let fut = run_loop(what, opts, cancel, fetch, tx);
    match tracker {
        Some(t) => drop(t.spawn(fut)),
        None => drop(tokio::spawn(fut)),
    }
    rx
}

async fn sleep_or_stop<T>(
    d: Duration,
    cancel: &CancellationToken,
    tx: &watch::Sender<WatchState<T>>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
        _ = tx.closed() => false,
    }
}

async fn run_loop<T, F, Fut>(
    what: String,
    opts: WatchOptions,
    cancel: CancellationToken,
    fetch: F,
    tx: watch::Sender<WatchState<T>>,
) where
    T: Clone + PartialEq + Send + Sync + 'static,
    F: Fn(QueryOptions) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(T, QueryMeta), ConsulError>> + Send + 'static,
{
    let mut index = 0u64;
    let mut bucket = TokenBucket::new(opts.limiter_burst, opts.limiter_refill, Instant::now());
    let mut backoff = Backoff::new(opts.backoff_min, opts.backoff_max);
    loop {
        while let Some(d) = bucket.take(Instant::now()) {
            if !sleep_or_stop(d, &cancel, &tx).await {
                return;
            }
        }
        let q = QueryOptions {
            index: (index > 0).then_some(index),
            wait: Some(opts.wait),
            stale: opts.stale,
            consistent: false,
        };
        let result = tokio::select! {
            r = fetch(q) => r,
            _ = cancel.cancelled() => return,
            _ = tx.closed() => return,
        };
        match result {
            Ok((value, meta)) => {
                backoff.reset();
                let next = next_index(index, meta.index);
                if next == 0 {
                    tracing::debug!(watch = %what, prev = index, got = meta.index, "consul index went backwards; restarting the watch");
                    index = 0;
                    continue;
                }
                index = next;
                tx.send_if_modified(|state| match state {
                    WatchState::Ready { value: old, .. } if *old == value => false,
                    _ => {
                        *state = WatchState::Ready {
                            value,
                            index: meta.index,
                        };
                        true
                    }
                });
            }
            Err(e) => {
                let d = backoff.next_delay(rand::random::<f64>());
                tracing::warn!(watch = %what, error = %e, retry_in_ms = d.as_millis() as u64, "consul watch query failed; keeping the last value");
                if !sleep_or_stop(d, &cancel, &tx).await {
                    return;
                }
            }
        }
    }
}

/// Watches one KV key (`None` while it does not exist).
pub fn watch_key(
    client: &Client,
    key: &str,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<watch::Receiver<WatchState<Option<KvPair>>>, ConsulError> {
    validate_key(key)?;
    let client = client.clone();
    let key = key.to_owned();
    Ok(spawn_watch(format!("kv:{key}"), opts, cancel, move |q| {
        let client = client.clone();
        let key = key.clone();
        async move { client.kv_get(&key, &q).await }
    }))
}

/// Watches every key under a prefix (`?recurse`).
pub fn watch_prefix(
    client: &Client,
    prefix: &str,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<watch::Receiver<WatchState<Vec<KvPair>>>, ConsulError> {
    validate_prefix(prefix)?;
    let client = client.clone();
    let prefix = prefix.to_owned();
    Ok(spawn_watch(
        format!("kv-prefix:{prefix}"),
        opts,
        cancel,
        move |q| {
            let client = client.clone();
            let prefix = prefix.clone();
            async move { client.kv_list(&prefix, &q).await }
        },
    ))
}

/// Watches `GET /v1/health/service/<service>` with the given filters.
pub fn watch_health(
    client: &Client,
    service: &str,
    query: HealthQuery,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> watch::Receiver<WatchState<Vec<HealthEntry>>> {
    let client = client.clone();
    let service = service.to_owned();
    spawn_watch(format!("health:{service}"), opts, cancel, move |q| {
        let client = client.clone();
        let service = service.clone();
        let query = query.clone();
        async move { client.health_service(&service, &query, &q).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 5), 5);
        assert_eq!(next_index(5, 5), 5, "same index: block again at it");
        assert_eq!(next_index(5, 9), 9);
        assert_eq!(next_index(9, 5), 0, "backwards: reset");
        assert_eq!(next_index(0, 0), 1, "never below 1");
        assert_eq!(next_index(1, 0), 0, "0 after 1 is backwards: reset, then 1");
    }

    #[test]
    fn token_bucket_allows_burst_then_limits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, Duration::from_secs(10), t0);
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), None);
        let wait = b.take(t0).expect("third request must wait");
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
        assert_eq!(b.take(t0 + Duration::from_secs(10)), None);
        assert!(b.take(t0 + Duration::from_secs(10)).is_some());
        // A long quiet period refills only up to the burst.
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(b.take(later), None);
        assert_eq!(b.take(later), None);
        assert!(b.take(later).is_some());
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let full: Vec<_> = (0..6).map(|_| b.next_delay(0.999_999)).collect();
        assert!(full[0] <= Duration::from_millis(100));
        assert!(full[1] > Duration::from_millis(150) && full[1] <= Duration::from_millis(200));
        assert!(full[5] <= Duration::from_millis(800) && full[5] > Duration::from_millis(700));
        let low = b.next_delay(0.0);
        assert_eq!(
            low,
            Duration::from_millis(400),
            "jitter floor is half the capped delay"
        );
        b.reset();
        assert!(b.next_delay(0.0) <= Duration::from_millis(50));
    }
}
