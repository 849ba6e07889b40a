//! WhatsApp Web version control for the fleet (issue "WhatsApp Web as it really is", item 4).
//!
//! * [`setting`]: PURE. The one Consul KV value `<prefix>/wa-web` that picks the version for
//!   the whole fleet (`latest`, `last-good` or an exact version, with per-shard overrides and
//!   the previous value for rollback).
//! * [`cache`]: `<data>/wa-web/<version>.html` and `last-good` on the shared volume.
//! * [`VersionControl`] (this file): one per worker. It watches the setting with a blocking
//!   query ([`watch_setting`]), turns it into a [`LaunchPlan`] for every session launch (the
//!   setting applies at the next start, no redeploy), and stores the `index.html` of versions
//!   that live sessions proved good (once per version per worker).
//!
//! A pinned version that is not in the cache is not an error: the session starts live and the
//! plan's note says why (logged, `wa_note` in the session status), because refusing to start
//! would take every session of a fresh worker down for a cache it cannot fill while pinned.

pub mod cache;
pub mod setting;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::consul::watch::{WatchOptions, WatchState, watch_key};
use crate::consul::{Client, ConsulError};
use crate::engine::{LaunchPlan, PinnedVersion, WebVersions};
pub use cache::{CacheError, CachedVersion, WebCache};
pub use setting::{Choice, Selection, SettingError, WaWebSetting};

/// The KV key of the setting under a prefix.
pub fn setting_key(prefix: &str) -> String {
    format!("{}/wa-web", prefix.trim_end_matches('/'))
}

/// How long a launch waits for the first read of the setting before it goes live.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(5);

/// What the watch publishes: `Loading` until the first answer, then the setting (`None`: no key,
/// i.e. latest everywhere).
pub type SettingWatch = watch::Receiver<WatchState<Option<Arc<WaWebSetting>>>>;

/// Watches `<prefix>/wa-web` with a blocking query (idle while nothing changes). A value that
/// does not parse is refused and the last good one kept.
pub fn watch_setting(
    client: &Client,
    prefix: &str,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<SettingWatch, ConsulError> {
    let key = setting_key(prefix);
    let opts = WatchOptions {
        wait: Duration::from_secs(300),
        tracker: Some(tracker.clone()),
        ..WatchOptions::default()
    };
    let mut raw = watch_key(client, &key, opts, cancel.clone())?;
    let (tx, rx) = watch::channel(WatchState::Loading);
    tracker.spawn(async move {
        loop {
            let state = raw.borrow_and_update().clone();
            if let WatchState::Ready { value, index } = state {
                let parsed = match value {
                    None => Some(None),
                    Some(pair) => match WaWebSetting::from_json(pair.value_bytes()) {
                        Ok(s) => Some(Some(Arc::new(s))),
                        Err(e) => {
                            tracing::error!(key = %key, error = %e, "refusing a bad WhatsApp Web setting; keeping the last good one");
                            None
                        }
                    },
                };
                if let Some(value) = parsed {
                    let changed = tx.borrow().value() != Some(&value);
                    if changed {
                        tracing::info!(key = %key, setting = ?value.as_deref(), "WhatsApp Web setting loaded");
                        tx.send_replace(WatchState::Ready { value, index });
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = raw.changed() => if changed.is_err() { return },
            }
        }
    });
    Ok(rx)
}

/// PURE: the launch plan for `choice`, given what the cache holds (`cached(v)` → its path) and
/// the last good version.
pub fn plan_for(
    choice: &Choice,
    last_good: Option<&str>,
    cached: impl Fn(&str) -> Option<std::path::PathBuf>,
) -> LaunchPlan {
    let pin = |version: &str, why: &str| match cached(version) {
        Some(index_html) => LaunchPlan {
            pinned: Some(PinnedVersion {
                version: version.to_string(),
                index_html,
            }),
            note: None,
        },
        None => LaunchPlan {
            pinned: None,
            note: Some(format!(
                "WhatsApp Web {version} ({why}) is not in this worker's cache; loading live"
            )),
        },
    };
    match choice {
        Choice::Latest => LaunchPlan::default(),
        Choice::Version(v) => pin(v, "pinned"),
        Choice::LastGood => match last_good {
            Some(v) => pin(v, "last-good"),
            None => LaunchPlan {
                pinned: None,
                note: Some(
                    "no last-good WhatsApp Web version is recorded yet; loading live".into(),
                ),
            },
        },
    }
}

/// One worker's version control: the engine's [`WebVersions`].
pub struct VersionControl {
    shard: u32,
    cache: WebCache,
    setting: Option<SettingWatch>,
    /// Versions this worker saved or is saving (one save per version per worker).
    claimed: Mutex<HashSet<String>>,
    /// The last-good this worker last read or wrote (no rewrite per session).
    last_good: Mutex<Option<String>>,
}

impl std::fmt::Debug for VersionControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionControl")
            .field("shard", &self.shard)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl VersionControl {
    /// Version control for `shard` over the cache in `data`, following `setting` (`None`: no
    /// Consul setting, always latest; the cache is still filled).
    pub fn new(
        data: &std::path::Path,
        shard: u32,
        setting: Option<SettingWatch>,
    ) -> Arc<VersionControl> {
        Arc::new(VersionControl {
            shard,
            cache: WebCache::new(data),
            setting,
            claimed: Mutex::new(HashSet::new()),
            last_good: Mutex::new(None),
        })
    }

    /// The cache.
    pub fn cache(&self) -> &WebCache {
        &self.cache
    }

    /// The choice for this shard now (`None` while the setting has not loaded yet).
    pub fn current_choice(&self) -> Option<Choice> {
        let Some(rx) = &self.setting else {
            return Some(Choice::Latest);
        };
        let state = rx.borrow();
        state.value().map(|s| {
            s.as_deref()
                .map_or(Choice::Latest, |s| s.choice_for(self.shard).clone())
        })
    }

    async fn choice(&self) -> (Choice, Option<String>) {
        if let Some(c) = self.current_choice() {
            return (c, None);
        }
        let Some(mut rx) = self.setting.clone() else {
            return (Choice::Latest, None);
        };
        let loaded =
            tokio::time::timeout(FIRST_READ_WAIT, rx.wait_for(|s| s.value().is_some())).await;
        match loaded {
            Ok(Ok(_)) => (self.current_choice().unwrap_or_default(), None),
            _ => (
                Choice::Latest,
                Some(
                    "the WhatsApp Web setting could not be read from Consul yet; loading live"
                        .into(),
                ),
            ),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WebVersions for VersionControl {
    fn plan(&self) -> BoxFuture<'_, LaunchPlan> {
        async move {
            let (choice, note) = self.choice().await;
            let last_good = if choice == Choice::LastGood {
                let cache = self.cache.clone();
                tokio::task::spawn_blocking(move || cache.last_good().ok().flatten())
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            let cache = self.cache.clone();
            let choice2 = choice.clone();
            let mut plan = tokio::task::spawn_blocking(move || {
                plan_for(&choice2, last_good.as_deref(), |v| cache.cached(v))
            })
            .await
            .unwrap_or_default();
            if plan.note.is_none() {
                plan.note = note;
            }
            plan
        }
        .boxed()
    }

    fn wants_copy(&self, version: &str) -> bool {
        let mut claimed = Self::lock(&self.claimed);
        if claimed.contains(version) || self.cache.cached(version).is_some() {
            return false;
        }
        claimed.insert(version.to_string());
        true
    }

    fn proven(&self, version: &str, html: Option<Vec<u8>>) {
        if let Some(html) = html {
            match self.cache.save(version, &html) {
                Ok(true) => {
                    tracing::info!(%version, bytes = html.len(), dir = %self.cache.dir().display(), "cached the WhatsApp Web index.html")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%version, error = %e, "caching the WhatsApp Web index.html failed");
                    Self::lock(&self.claimed).remove(version);
                }
            }
        } else if self.cache.cached(version).is_none() {
            // Claimed but not readable this time: the next session on this version tries.
            Self::lock(&self.claimed).remove(version);
        }
        let mut last = Self::lock(&self.last_good);
        if last.is_none() {
            *last = self.cache.last_good().ok().flatten();
        }
        if last.as_deref() != Some(version) && self.cache.cached(version).is_some() {
            match self.cache.set_last_good(version) {
                Ok(()) => {
                    tracing::info!(%version, "WhatsApp Web version recorded as last-good");
                    *last = Some(version.to_string());
                }
                Err(e) => tracing::warn!(%version, error = %e, "recording last-good failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn plans_pin_cached_versions_and_go_live_with_a_note_otherwise() {
        let cached = |v: &str| (v == "V1").then(|| PathBuf::from("/c/V1.html"));
        assert_eq!(
            plan_for(&Choice::Latest, Some("V1"), cached),
            LaunchPlan::default()
        );
        let pinned = plan_for(&Choice::Version("V1".into()), None, cached);
        assert_eq!(
            pinned.pinned,
            Some(PinnedVersion {
                version: "V1".into(),
                index_html: PathBuf::from("/c/V1.html")
            })
        );
        assert_eq!(pinned.note, None);
        let missing = plan_for(&Choice::Version("V9".into()), None, cached);
        assert_eq!(missing.pinned, None);
        assert!(
            missing
                .note
                .unwrap()
                .contains("V9 (pinned) is not in this worker's cache")
        );
        let good = plan_for(&Choice::LastGood, Some("V1"), cached);
        assert_eq!(good.pinned.unwrap().version, "V1");
        let none = plan_for(&Choice::LastGood, None, cached);
        assert!(none.pinned.is_none() && none.note.is_some());
    }

    #[tokio::test]
    async fn proven_versions_are_cached_once_and_become_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let vc = VersionControl::new(dir.path(), 0, None);
        assert!(vc.wants_copy("V1"));
        assert!(!vc.wants_copy("V1"), "claimed: one save per version");
        // A copy that could not be read releases the claim.
        vc.proven("V1", None);
        assert_eq!(
            vc.cache().last_good().unwrap(),
            None,
            "nothing cached, nothing good"
        );
        assert!(vc.wants_copy("V1"));
        vc.proven("V1", Some(b"<html>v1</html>".to_vec()));
        assert!(!vc.wants_copy("V1"), "cached");
        assert_eq!(vc.cache().last_good().unwrap().as_deref(), Some("V1"));
        // Latest without Consul; a pin of V1 is served from the cache.
        assert_eq!(vc.plan().await, LaunchPlan::default());
    }
}
