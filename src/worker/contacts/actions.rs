//! The contact actions that reach WhatsApp's servers:
//!
//! * `GET …/sessions/{s}/contacts/{id}/picture` → `{"id", "url"}` (`url` null when the contact
//!   has no picture or hides it), cached per session for `WAFLEET_PICTURE_CACHE_SECS` (default
//!   5 min: WhatsApp's picture URLs expire, so longer would hand out dead links);
//! * `POST …/contacts/{id}/block` and `…/unblock` → `{"id", "blocked"}`.
//!
//! Uncached picture lookups and block changes take a token of the session's bucket
//! (`WAFLEET_CONTACT_ACTIONS_BURST`, `WAFLEET_CONTACT_ACTIONS_PER_MINUTE`, 20 and 20 by default),
//! as exists lookups do: WhatsApp watches accounts that hammer these queries. An empty bucket is
//! `429 rate_limited` with `Retry-After`, and nothing reaches WhatsApp.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use serde_json::json;
use warp::{Filter, Reply};

use super::limits::{TokenBucket, TtlCache};
use super::routes::{CACHE_HEADER, working};
use crate::api::ApiError;
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::chats::routes::command_error;
use crate::worker::layout::now_ms;
use crate::worker::request::{Api, parse_contact_id, reject, running_session};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// Default lifetime of a cached picture answer.
pub const DEFAULT_PICTURE_TTL: Duration = Duration::from_secs(300);
/// Default burst and per-minute rate of server-bound contact actions per session.
pub const DEFAULT_ACTIONS_RATE: u32 = 20;
/// Cached picture answers per session.
const MAX_PICTURES_PER_SESSION: usize = 2_000;
/// Sessions with state kept before idle ones are dropped.
const MAX_SESSIONS: usize = 4_096;

/// The settings of the contact actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsConfig {
    /// How long a picture answer is served from the cache (0: not cached).
    pub picture_ttl: Duration,
    /// Server-bound actions a session may make at once.
    pub burst: u32,
    /// … and per minute, sustained.
    pub per_minute: u32,
}

impl ActionsConfig {
    /// From `WAFLEET_PICTURE_CACHE_SECS`, `WAFLEET_CONTACT_ACTIONS_BURST` and
    /// `WAFLEET_CONTACT_ACTIONS_PER_MINUTE` (both at least 1); an invalid value keeps the
    /// default, with a warning.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let num = |key: &str, min: u64| -> Option<u64> {
            let raw = lookup(key)?;
            match raw.trim().parse::<u64>() {
                Ok(v) if v >= min => Some(v),
                _ => {
                    tracing::warn!(key, value = %raw, "ignoring an invalid contact action setting");
                    None
                }
            }
        };
        let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        ActionsConfig {
            picture_ttl: num("WAFLEET_PICTURE_CACHE_SECS", 0)
                .map_or(DEFAULT_PICTURE_TTL, Duration::from_secs),
            burst: num("WAFLEET_CONTACT_ACTIONS_BURST", 1).map_or(DEFAULT_ACTIONS_RATE, small),
            per_minute: num("WAFLEET_CONTACT_ACTIONS_PER_MINUTE", 1)
                .map_or(DEFAULT_ACTIONS_RATE, small),
        }
    }
}

struct SessionActions {
    pictures: TtlCache<Option<String>>,
    bucket: TokenBucket,
}

/// The per-session picture caches and action buckets of a worker.
pub struct Actions {
    config: ActionsConfig,
    sessions: Mutex<HashMap<(WorkspaceId, SessionId), SessionActions>>,
}

impl Actions {
    /// No state yet.
    pub fn new(config: ActionsConfig) -> Self {
        Actions {
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        now: u64,
        f: impl FnOnce(&mut SessionActions) -> T,
    ) -> T {
        // Poisoning means a panic mid-update of plain data; the map is still usable.
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS && !map.contains_key(&(ws.clone(), s.clone())) {
            map.retain(|_, a| {
                a.pictures.purge(now);
                !(a.pictures.is_empty() && a.bucket.is_full(now))
            });
        }
        let a = map
            .entry((ws.clone(), s.clone()))
            .or_insert_with(|| SessionActions {
                pictures: TtlCache::new(MAX_PICTURES_PER_SESSION),
                bucket: TokenBucket::new(self.config.burst, self.config.per_minute, now),
            });
        f(a)
    }

    /// The cached picture answer for `id`.
    pub fn cached_picture(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        id: &str,
        now: u64,
    ) -> Option<Option<String>> {
        self.with(ws, s, now, |a| a.pictures.get(id, now))
    }

    /// Caches a picture answer.
    pub fn remember_picture(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        id: &str,
        url: Option<String>,
        now: u64,
    ) {
        let ttl = self.config.picture_ttl.as_millis() as u64;
        self.with(ws, s, now, |a| a.pictures.put(id.to_owned(), url, ttl, now));
    }

    /// Takes a token for one server-bound action, or the wait in milliseconds.
    pub fn take(&self, ws: &WorkspaceId, s: &SessionId, now: u64) -> Result<(), u64> {
        self.with(ws, s, now, |a| a.bucket.try_take(now))
    }

    /// `429 rate_limited` with `Retry-After`.
    fn limited(&self, wait_ms: u64) -> ApiError {
        let secs = wait_ms.div_ceil(1000).max(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this session makes at most {} picture lookups and block changes a minute (burst {}); retry in {secs} s",
                self.config.per_minute, self.config.burst
            ),
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(secs))
    }
}

/// The picture and block routes, with the state they share (settings from the environment).
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let actions = Arc::new(Actions::new(ActionsConfig::from_lookup(|k| {
        std::env::var(k).ok()
    })));
    let with = warp::any().map(move || api.clone());
    let with_actions = warp::any().map(move || actions.clone());
    let auth = warp::header::optional::<String>("authorization");
    let picture = warp::path!(
        "v1" / "workspaces" / String / "sessions" / String / "contacts" / String / "picture"
    )
    .and(warp::get())
    .and(with.clone())
    .and(with_actions.clone())
    .and(auth)
    .and_then(picture);
    let block = warp::path!(
        "v1" / "workspaces" / String / "sessions" / String / "contacts" / String / String
    )
    .and(warp::post())
    .and(with)
    .and(with_actions)
    .and(auth)
    .and_then(block);
    picture.or(block).unify()
}

async fn picture(
    ws: String,
    s: String,
    id: String,
    api: Api,
    actions: Arc<Actions>,
    auth: Option<String>,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let id = parse_contact_id(&id).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let (url, hit) = match actions.cached_picture(&ws, &s, &id, now_ms()) {
        Some(url) => (url, true),
        None => {
            actions
                .take(&ws, &s, now_ms())
                .map_err(|w| reject(actions.limited(w)))?;
            let url = handle
                .contact_picture(&id)
                .await
                .map_err(|e| reject(command_error(&ws, &s, e)))?;
            actions.remember_picture(&ws, &s, &id, url.clone(), now_ms());
            (url, false)
        }
    };
    let mut resp = warp::reply::json(&json!({ "id": id, "url": url })).into_response();
    resp.headers_mut().insert(
        CACHE_HEADER,
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    Ok(resp)
}

async fn block(
    ws: String,
    s: String,
    id: String,
    verb: String,
    api: Api,
    actions: Arc<Actions>,
    auth: Option<String>,
) -> Resp {
    let blocked = match verb.as_str() {
        "block" => true,
        "unblock" => false,
        _ => return Err(warp::reject::not_found()),
    };
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let id = parse_contact_id(&id).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    actions
        .take(&ws, &s, now_ms())
        .map_err(|w| reject(actions.limited(w)))?;
    let now = handle
        .set_contact_blocked(&id, blocked)
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?;
    Ok(warp::reply::json(&json!({ "id": id, "blocked": now })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_bucket() {
        let c = ActionsConfig::from_lookup(|k| match k {
            "WAFLEET_PICTURE_CACHE_SECS" => Some("0".into()),
            "WAFLEET_CONTACT_ACTIONS_BURST" => Some("1".into()),
            "WAFLEET_CONTACT_ACTIONS_PER_MINUTE" => Some("nope".into()),
            _ => None,
        });
        assert_eq!(c.picture_ttl, Duration::ZERO);
        assert_eq!((c.burst, c.per_minute), (1, DEFAULT_ACTIONS_RATE));
        let a = Actions::new(ActionsConfig {
            picture_ttl: Duration::from_secs(1),
            ..c
        });
        let (ws, s) = (
            WorkspaceId::new("ws").unwrap(),
            SessionId::new("s").unwrap(),
        );
        assert!(a.take(&ws, &s, 0).is_ok());
        assert!(a.take(&ws, &s, 1).is_err(), "burst 1");
        a.remember_picture(&ws, &s, "4915550002@c.us", None, 1);
        assert_eq!(
            a.cached_picture(&ws, &s, "4915550002@c.us", 500),
            Some(None)
        );
        assert_eq!(a.cached_picture(&ws, &s, "4915550002@c.us", 1_002), None);
    }
}
