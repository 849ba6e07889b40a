//! Contact lookups (issue 12, item 4): "is this number on WhatsApp?" and the LID ↔ phone
//! number mapping, through the session's WhatsApp Web ([`crate::engine::contacts`]).
//!
//! * [`limits`]: PURE. The answer cache and the token bucket.
//! * [`routes`]: the lookup routes (exists, LIDs).
//! * [`list`]: the contact list route; [`actions`]: picture and block/unblock, with their own
//!   cache and bucket.
//! * here: the settings ([`ContactsConfig`], from the environment) and the per-session state
//!   ([`Lookups`]) the routes share.
//!
//! An exists lookup costs WhatsApp one USync query, and WhatsApp watches accounts that look up
//! many numbers; a CRM importing a contact list must not turn into that. So every session has a
//! cache (a positive answer is kept for hours: accounts rarely disappear; a negative one much
//! shorter: the number may register any minute) and a token bucket that only cache misses use.

pub mod actions;
pub mod limits;
pub mod list;
pub mod routes;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::contacts::Exists;
use crate::ids::{SessionId, WorkspaceId};
use limits::{TokenBucket, TtlCache};

/// Default lifetime of a cached "exists" answer (`WAFLEET_EXISTS_CACHE_SECS`): 6 h.
pub const DEFAULT_POSITIVE_TTL: Duration = Duration::from_secs(6 * 3600);
/// Default lifetime of a cached "not on WhatsApp" answer (`WAFLEET_EXISTS_NEGATIVE_CACHE_SECS`):
/// 30 min.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30 * 60);
/// Default burst of uncached lookups per session (`WAFLEET_EXISTS_BURST`).
pub const DEFAULT_BURST: u32 = 20;
/// Default sustained rate of uncached lookups per session and minute (`WAFLEET_EXISTS_PER_MINUTE`).
pub const DEFAULT_PER_MINUTE: u32 = 20;
/// Cached answers per session; past it the soonest-expiring go.
pub const MAX_CACHED_PER_SESSION: usize = 5_000;
/// Sessions with lookup state kept before idle ones (full bucket, nothing cached) are dropped.
const MAX_SESSIONS: usize = 4_096;

/// The lookup settings of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactsConfig {
    /// How long an "exists" answer is served from the cache.
    pub positive_ttl: Duration,
    /// How long a "not on WhatsApp" answer is.
    pub negative_ttl: Duration,
    /// Uncached lookups a session may make at once.
    pub burst: u32,
    /// Uncached lookups a session may make per minute, sustained.
    pub per_minute: u32,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        ContactsConfig {
            positive_ttl: DEFAULT_POSITIVE_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            burst: DEFAULT_BURST,
            per_minute: DEFAULT_PER_MINUTE,
        }
    }
}

impl ContactsConfig {
    /// From `WAFLEET_EXISTS_CACHE_SECS`, `WAFLEET_EXISTS_NEGATIVE_CACHE_SECS` (0 disables that
    /// cache), `WAFLEET_EXISTS_BURST` and `WAFLEET_EXISTS_PER_MINUTE` (both at least 1); a value
    /// that does not parse keeps the default, with a warning.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let num = |key: &str, min: u64| -> Option<u64> {
            let raw = lookup(key)?;
            match raw.trim().parse::<u64>() {
                Ok(v) if v >= min => Some(v),
                _ => {
                    tracing::warn!(key, value = %raw, "ignoring an invalid contact lookup setting");
                    None
                }
            }
        };
        let d = ContactsConfig::default();
        let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        ContactsConfig {
            positive_ttl: num("WAFLEET_EXISTS_CACHE_SECS", 0)
                .map_or(d.positive_ttl, Duration::from_secs),
            negative_ttl: num("WAFLEET_EXISTS_NEGATIVE_CACHE_SECS", 0)
                .map_or(d.negative_ttl, Duration::from_secs),
            burst: num("WAFLEET_EXISTS_BURST", 1).map_or(d.burst, small),
            per_minute: num("WAFLEET_EXISTS_PER_MINUTE", 1).map_or(d.per_minute, small),
        }
    }
}

struct SessionLookups {
    cache: TtlCache<Exists>,
    bucket: TokenBucket,
}

/// What a cached lookup decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Answered from the cache.
    Cached(Exists),
    /// Not cached and a token was taken: ask WhatsApp, then [`Lookups::remember`].
    Query,
    /// Not cached and the bucket is empty: retry after this many milliseconds.
    Limited(u64),
}

/// The per-session caches and buckets of a worker.
pub struct Lookups {
    config: ContactsConfig,
    sessions: Mutex<HashMap<(WorkspaceId, SessionId), SessionLookups>>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Lookups {
    /// No state yet.
    pub fn new(config: ContactsConfig) -> Self {
        Lookups {
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ContactsConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(WorkspaceId, SessionId), SessionLookups>> {
        // Poisoning means a panic mid-update of plain data; the map is still usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer for `phone` (digits) in this session, else a token for one query.
    pub fn admit(&self, ws: &WorkspaceId, s: &SessionId, phone: &str, now_ms: u64) -> Admission {
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS && !map.contains_key(&(ws.clone(), s.clone())) {
            map.retain(|_, l| {
                l.cache.purge(now_ms);
                !(l.cache.is_empty() && l.bucket.is_full(now_ms))
            });
        }
        let l = map
            .entry((ws.clone(), s.clone()))
            .or_insert_with(|| SessionLookups {
                cache: TtlCache::new(MAX_CACHED_PER_SESSION),
                bucket: TokenBucket::new(self.config.burst, self.config.per_minute, now_ms),
            });
        if let Some(hit) = l.cache.get(phone, now_ms) {
            return Admission::Cached(hit);
        }
        match l.bucket.try_take(now_ms) {
            Ok(()) => Admission::Query,
            Err(wait_ms) => Admission::Limited(wait_ms),
        }
    }

    /// Caches WhatsApp's answer for `phone` (for the positive or the negative TTL).
    pub fn remember(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        phone: &str,
        answer: &Exists,
        now_ms: u64,
    ) {
        let ttl = if answer.exists {
            self.config.positive_ttl
        } else {
            self.config.negative_ttl
        };
        if let Some(l) = self.lock().get_mut(&(ws.clone(), s.clone())) {
            l.cache.put(
                phone.to_owned(),
                answer.clone(),
                ttl.as_millis() as u64,
                now_ms,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yes() -> Exists {
        Exists {
            exists: true,
            wa_id: Some("4915550002@c.us".into()),
            lid: None,
        }
    }

    #[test]
    fn settings_come_from_the_environment_with_defaults() {
        assert_eq!(
            ContactsConfig::from_lookup(|_| None),
            ContactsConfig::default()
        );
        let c = ContactsConfig::from_lookup(|k| match k {
            "WAFLEET_EXISTS_CACHE_SECS" => Some("60".into()),
            "WAFLEET_EXISTS_NEGATIVE_CACHE_SECS" => Some("0".into()),
            "WAFLEET_EXISTS_BURST" => Some("2".into()),
            "WAFLEET_EXISTS_PER_MINUTE" => Some("0".into()),
            _ => None,
        });
        assert_eq!(c.positive_ttl, Duration::from_secs(60));
        assert_eq!(c.negative_ttl, Duration::ZERO);
        assert_eq!(c.burst, 2);
        assert_eq!(c.per_minute, DEFAULT_PER_MINUTE, "0 per minute is refused");
    }

    #[test]
    fn cache_hits_cost_no_token_and_misses_do() {
        let lookups = Lookups::new(ContactsConfig {
            positive_ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(1),
            burst: 2,
            per_minute: 1,
        });
        let (ws, s) = (
            WorkspaceId::new("ws").unwrap(),
            SessionId::new("s").unwrap(),
        );
        assert_eq!(lookups.admit(&ws, &s, "4915550002", 0), Admission::Query);
        lookups.remember(&ws, &s, "4915550002", &yes(), 0);
        for _ in 0..5 {
            assert_eq!(
                lookups.admit(&ws, &s, "4915550002", 1),
                Admission::Cached(yes())
            );
        }
        assert_eq!(lookups.admit(&ws, &s, "4915550009", 1), Admission::Query);
        let no = Exists {
            exists: false,
            wa_id: None,
            lid: None,
        };
        lookups.remember(&ws, &s, "4915550009", &no, 1);
        assert_eq!(
            lookups.admit(&ws, &s, "4915550009", 500),
            Admission::Cached(no)
        );
        // The negative answer expired; the bucket (2, one a minute) is empty.
        match lookups.admit(&ws, &s, "4915550009", 1_001) {
            Admission::Limited(ms) => assert!(ms > 50_000 && ms <= 60_000, "{ms}"),
            other => panic!("{other:?}"),
        }
        // Another session has its own bucket.
        let other = SessionId::new("t").unwrap();
        assert_eq!(
            lookups.admit(&ws, &other, "4915550009", 1_001),
            Admission::Query
        );
    }
}
