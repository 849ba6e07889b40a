//! PURE: what keeps contact lookups from hammering WhatsApp: a per-session answer cache with
//! expiry and a per-session token bucket. Time is passed in (milliseconds), so both are tested
//! without waiting.

use std::collections::HashMap;

/// Answers by key, each with its own expiry, at most `cap` of them.
#[derive(Debug, Clone)]
pub struct TtlCache<V> {
    entries: HashMap<String, (V, u64)>,
    cap: usize,
}

impl<V: Clone> TtlCache<V> {
    /// An empty cache holding at most `cap` (at least 1) answers.
    pub fn new(cap: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// The answer for `key` if it has not expired at `now_ms` (an expired one is dropped).
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<V> {
        match self.entries.get(key) {
            Some((v, expires)) if *expires > now_ms => Some(v.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `v` for `ttl_ms` from `now_ms`. When full, expired answers go first, then the one
    /// that would expire soonest (a full cache is rare: `cap` is far above a session's normal
    /// working set, so this linear scan is not on the hot path).
    pub fn put(&mut self, key: String, v: V, ttl_ms: u64, now_ms: u64) {
        if ttl_ms == 0 {
            return;
        }
        if self.entries.len() >= self.cap && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| *expires > now_ms);
            if self.entries.len() >= self.cap
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (v, now_ms.saturating_add(ttl_ms)));
    }

    /// Answers held now (expired ones included until they are next touched).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every expired answer.
    pub fn purge(&mut self, now_ms: u64) {
        self.entries.retain(|_, (_, expires)| *expires > now_ms);
    }
}

/// A token bucket: `burst` tokens, refilled at `per_minute` tokens a minute.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    burst: f64,
    per_ms: f64,
    tokens: f64,
    at_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`; `burst` and `per_minute` are at least 1.
    pub fn new(burst: u32, per_minute: u32, now_ms: u64) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            burst,
            per_ms: f64::from(per_minute.max(1)) / 60_000.0,
            tokens: burst,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        // A clock that went back refills nothing (and never drains).
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.burst);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Takes one token, or answers how many milliseconds until one is there.
    pub fn try_take(&mut self, now_ms: u64) -> Result<(), u64> {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / self.per_ms).ceil().max(1.0) as u64)
        }
    }

    /// Whether the bucket is full at `now_ms` (nothing to remember about this session).
    pub fn is_full(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_at_their_own_deadline() {
        let mut c = TtlCache::new(10);
        c.put("yes".into(), true, 1_000, 0);
        c.put("no".into(), false, 100, 0);
        assert_eq!(c.get("yes", 99), Some(true));
        assert_eq!(c.get("no", 99), Some(false));
        assert_eq!(c.get("no", 100), None, "expired at its deadline");
        assert_eq!(c.get("yes", 999), Some(true));
        assert_eq!(c.get("yes", 1_000), None);
        assert!(c.is_empty(), "expired answers are dropped when read");
        c.put("zero".into(), true, 0, 0);
        assert_eq!(c.get("zero", 0), None, "a zero TTL caches nothing");
    }

    #[test]
    fn a_full_cache_drops_expired_then_soonest_expiring() {
        let mut c = TtlCache::new(2);
        c.put("a".into(), 1, 10, 0);
        c.put("b".into(), 2, 1_000, 0);
        c.put("c".into(), 3, 500, 0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", 1), None, "the soonest to expire went");
        assert_eq!(c.get("b", 1), Some(2));
        assert_eq!(c.get("c", 1), Some(3));
        c.put("d".into(), 4, 100, 600);
        assert_eq!(c.get("c", 600), None, "expired entries go first");
        assert_eq!((c.get("b", 600), c.get("d", 600)), (Some(2), Some(4)));
        c.put("b".into(), 5, 100, 600);
        assert_eq!(c.get("b", 600), Some(5), "replacing a key evicts nothing");
        assert_eq!(c.get("d", 600), Some(4));
        c.purge(10_000);
        assert!(c.is_empty());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_its_rate() {
        let mut b = TokenBucket::new(3, 60, 0); // one a second
        for _ in 0..3 {
            assert_eq!(b.try_take(0), Ok(()));
        }
        assert_eq!(b.try_take(0), Err(1_000));
        assert_eq!(b.try_take(400), Err(600), "waits for the rest of a token");
        assert_eq!(b.try_take(1_000), Ok(()));
        assert!(b.try_take(1_000).is_err());
        assert!(!b.is_full(1_000));
        assert!(b.is_full(10_000), "refills up to the burst only");
        for _ in 0..3 {
            assert_eq!(b.try_take(10_000), Ok(()));
        }
        assert!(b.try_take(10_000).is_err());
        assert!(
            b.try_take(5_000).is_err(),
            "a clock going back refills nothing"
        );
    }

    #[test]
    fn bucket_bounds_are_at_least_one() {
        let mut b = TokenBucket::new(0, 0, 0);
        assert_eq!(b.try_take(0), Ok(()));
        assert_eq!(b.try_take(0), Err(60_000));
    }
}
