//! Webhook targets: per-session configuration with a global default, validated at
//! configuration time (URL scheme and allow-list, secret, event filter, extra headers).
//!
//! The worker owns where the configuration is persisted (`session.json`, DESIGN §5); it loads
//! it into a [`Registry`] on session create/restore, and the delivery task reads the registry.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::envelope::events;
use super::sign::{SecretError, WebhookSecret};
use crate::ids::{SessionId, WorkspaceId};

/// Why a webhook configuration is refused (the API answers 400 with the code of
/// [`ConfigError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not an absolute URL.
    #[error("the webhook url is not a valid absolute URL")]
    BadUrl,
    /// Not http or https.
    #[error("the webhook url must use http or https")]
    BadScheme,
    /// The operator's allow-list does not cover the host.
    #[error("the webhook host is not allowed by the operator's allow-list")]
    HostNotAllowed,
    /// The secret is invalid.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// An unknown event name in the filter.
    #[error("unknown event {0:?} in the webhook event filter")]
    UnknownEvent(String),
    /// A header that is invalid or that wafleet sets itself.
    #[error("header {0:?} is invalid or reserved")]
    BadHeader(String),
}

impl ConfigError {
    /// A stable error code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::BadUrl | ConfigError::BadScheme => "invalid_webhook_url",
            ConfigError::HostNotAllowed => "webhook_host_not_allowed",
            ConfigError::Secret(_) => "invalid_webhook_secret",
            ConfigError::UnknownEvent(_) => "invalid_webhook_events",
            ConfigError::BadHeader(_) => "invalid_webhook_headers",
        }
    }
}

/// The `webhook` object of a create-session request (DESIGN §7), before validation. The
/// worker may keep it as is in `session.json` (mode 0600: it holds the secret) and validate it
/// again with [`WebhookConfig::from_request`] on restore.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `http(s)://…`.
    pub url: String,
    /// Signing secret; without one, deliveries are unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Event names to deliver; absent, empty or containing `"*"`: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Extra request headers (e.g. an `Authorization` for the receiver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("WebhookRequest")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("events", &self.events)
            .field(
                "headers",
                &self.headers.as_ref().map(|h| h.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// Which events a webhook wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter(Option<BTreeSet<String>>);

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self(None)
    }

    /// Only the given events; `"*"` or an empty list means all. Unknown names are refused.
    pub fn only<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Result<Self, ConfigError> {
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref();
            if n == "*" {
                return Ok(Self::all());
            }
            if !events::ALL.contains(&n) {
                return Err(ConfigError::UnknownEvent(n.to_owned()));
            }
            set.insert(n.to_owned());
        }
        Ok(if set.is_empty() {
            Self::all()
        } else {
            Self(Some(set))
        })
    }

    /// Whether `event` passes. An opt-in event ([`events::OPT_IN`]) passes only a filter that
    /// names it.
    pub fn matches(&self, event: &str) -> bool {
        match &self.0 {
            None => !events::OPT_IN.contains(&event),
            Some(s) => s.contains(event),
        }
    }
}

/// Where webhooks may go. Empty: any http(s) URL (development). Otherwise the host must match
/// an entry: `example.com` (exact), `*.example.com` (any subdomain), or for IP literals a
/// network `10.0.0.0/8` / `fd00::/8` or a single address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    rules: Vec<HostRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Exact(String),
    Suffix(String),
    Net(IpAddr, u8),
}

impl UrlPolicy {
    /// Parses a comma-separated allow-list (e.g. the worker's `WAFLEET_WEBHOOK_ALLOW`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let rule = if let Some(rest) = item.strip_prefix("*.") {
                HostRule::Suffix(format!(".{}", rest.to_ascii_lowercase()))
            } else if let Some((ip, bits)) = item.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| format!("bad network {item:?}"))?;
                let bits: u8 = bits.parse().map_err(|_| format!("bad prefix {item:?}"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if bits > max {
                    return Err(format!("bad prefix {item:?}"));
                }
                HostRule::Net(ip, bits)
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                HostRule::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
            } else {
                HostRule::Exact(item.to_ascii_lowercase())
            };
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Whether `url`'s host is allowed.
    pub fn allows(&self, url: &Url) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => None,
            None => return false,
        };
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        self.rules.iter().any(|r| match (r, ip) {
            (HostRule::Exact(h), None) => *h == host,
            (HostRule::Suffix(s), None) => host.ends_with(s.as_str()),
            (HostRule::Net(net, bits), Some(ip)) => in_network(ip, *net, *bits),
            _ => false,
        })
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Headers wafleet sets itself; extra headers may not override them.
const RESERVED_HEADERS: [&str; 8] = [
    "signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
];

/// The target id of the operator's global default webhook (`WAFLEET_WEBHOOK_URL`).
pub const DEFAULT_TARGET_ID: &str = "default";

/// Most webhook targets one session may have.
pub const MAX_TARGETS: usize = 5;

/// Whether `id` is a valid target id: 1 to 32 of `[A-Za-z0-9_-]` (it is stored and shown, never
/// part of a path).
pub fn is_target_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A validated webhook target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The target's id within its session (deliveries and dead letters name it).
    pub id: String,
    /// Where to POST.
    pub url: Url,
    /// Signing secret (redacted in `Debug`).
    pub secret: Option<WebhookSecret>,
    /// Which events to deliver.
    pub events: EventFilter,
    /// Extra headers sent with every delivery.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebhookConfig {
    /// Validates a request's `webhook` object against the operator's URL policy.
    pub fn from_request(req: &WebhookRequest, policy: &UrlPolicy) -> Result<Self, ConfigError> {
        let url = Url::parse(&req.url).map_err(|_| ConfigError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::BadScheme);
        }
        if url.host().is_none() {
            return Err(ConfigError::BadUrl);
        }
        if !policy.allows(&url) {
            return Err(ConfigError::HostNotAllowed);
        }
        let secret = req.secret.clone().map(WebhookSecret::new).transpose()?;
        let events = match &req.events {
            Some(list) => EventFilter::only(list)?,
            None => EventFilter::all(),
        };
        let mut headers = Vec::new();
        for (name, value) in req.headers.iter().flatten() {
            let bad = || ConfigError::BadHeader(name.clone());
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            if RESERVED_HEADERS.contains(&n.as_str()) {
                return Err(bad());
            }
            let v = HeaderValue::from_str(value).map_err(|_| bad())?;
            headers.push((n, v));
        }
        Ok(Self {
            id: String::new(),
            url,
            secret,
            events,
            headers,
        })
    }

    /// The same target under id `id`.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The operator's global default target, read through `lookup`: `WAFLEET_WEBHOOK_URL`
    /// (none: no default), `WAFLEET_WEBHOOK_SECRET`, `WAFLEET_WEBHOOK_EVENTS` (comma-separated
    /// filter). The operator is trusted, so the allow-list does not apply; the scheme does.
    pub fn default_from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(url) = lookup("WAFLEET_WEBHOOK_URL").filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let req = WebhookRequest {
            url: url.trim().to_owned(),
            secret: lookup("WAFLEET_WEBHOOK_SECRET").filter(|s| !s.is_empty()),
            events: lookup("WAFLEET_WEBHOOK_EVENTS").map(|e| {
                e.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            headers: None,
        };
        Self::from_request(&req, &UrlPolicy::default()).map(|c| Some(c.with_id(DEFAULT_TARGET_ID)))
    }

    /// A target for `url` delivering every event, with an optional secret.
    pub fn simple(url: Url, secret: Option<WebhookSecret>) -> Self {
        Self {
            id: "wh1".to_owned(),
            url,
            secret,
            events: EventFilter::all(),
            headers: Vec::new(),
        }
    }
}

/// What the registry knows about one session.
#[derive(Debug, Clone, Default)]
pub struct SessionHooks {
    /// The session's own webhook targets (ids unique); empty uses the global default.
    pub webhooks: Vec<WebhookConfig>,
    /// The session's metadata, echoed in every envelope.
    pub metadata: Value,
}

/// Reads the hooks of a session the registry has not been told about yet, from where the
/// worker persists them (`session.json`); `None` when there is no such session.
pub type HooksLoader = dyn Fn(&WorkspaceId, &SessionId) -> Option<SessionHooks> + Send + Sync;

/// Webhook targets and metadata of the shard's sessions, plus the global default target.
///
/// Sessions are told to the registry when they are created or restored, but their events can
/// be older than that: a worker restarted mid-send finds events of the previous process in the
/// outbox before its sessions are restored (staggered, one workspace lock at a time). A
/// [`HooksLoader`] fills such a miss from disk, so an event is never judged "no webhook" only
/// because its session has not been restored yet.
#[derive(Default)]
pub struct Registry {
    default: RwLock<Option<WebhookConfig>>,
    sessions: RwLock<HashMap<(WorkspaceId, SessionId), SessionHooks>>,
    /// Sessions deleted in this process: the loader is not asked about them again.
    deleted: RwLock<HashSet<(WorkspaceId, SessionId)>>,
    loader: RwLock<Option<Arc<HooksLoader>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field(
                "sessions",
                &self
                    .sessions
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .len(),
            )
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry (no default, no sessions).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets or clears the global default target (used by sessions without their own).
    pub fn set_default(&self, config: Option<WebhookConfig>) {
        *self.default.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Installs the loader asked on a miss (see the type's doc).
    pub fn set_loader(&self, loader: Arc<HooksLoader>) {
        *self.loader.write().unwrap_or_else(|p| p.into_inner()) = Some(loader);
    }

    /// Sets a session's webhook and metadata (on create, on restore, on update).
    pub fn set_session(&self, ws: &WorkspaceId, s: &SessionId, hooks: SessionHooks) {
        let key = (ws.clone(), s.clone());
        self.deleted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, hooks);
    }

    /// Forgets a session (on delete). Its pending events then go to the default target.
    pub fn remove_session(&self, ws: &WorkspaceId, s: &SessionId) {
        let key = (ws.clone(), s.clone());
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.deleted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
    }

    /// The session's hooks: as told, else from the loader (remembered), else `None`.
    fn hooks(&self, ws: &WorkspaceId, s: &SessionId) -> Option<SessionHooks> {
        let key = (ws.clone(), s.clone());
        if let Some(h) = self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Some(h.clone());
        }
        if self
            .deleted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return None;
        }
        let loader = self
            .loader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let loaded = loader(ws, s)?;
        // A create or restore may have told the registry meanwhile: what it said wins.
        Some(
            self.sessions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_insert(loaded)
                .clone(),
        )
    }

    /// Where the session's events go: its own targets, else the default, else nowhere.
    pub fn targets(&self, ws: &WorkspaceId, s: &SessionId) -> Vec<WebhookConfig> {
        let own = self.hooks(ws, s).map(|h| h.webhooks).unwrap_or_default();
        if !own.is_empty() {
            return own;
        }
        self.default
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .into_iter()
            .collect()
    }

    /// The session's target `id` as it is now; [`crate::store::FIRST_TARGET`] (`""`) names
    /// its first target (deliveries of the single-webhook schema).
    pub fn target(&self, ws: &WorkspaceId, s: &SessionId, id: &str) -> Option<WebhookConfig> {
        let targets = self.targets(ws, s);
        if id.is_empty() {
            return targets.into_iter().next();
        }
        targets.into_iter().find(|t| t.id == id)
    }

    /// The session's metadata (`{}` if unknown).
    pub fn metadata(&self, ws: &WorkspaceId, s: &SessionId) -> Value {
        self.hooks(ws, s)
            .map(|h| h.metadata)
            .filter(|m| !m.is_null())
            .unwrap_or_else(|| Value::Object(Default::default()))
    }
}

#[cfg(test)]
mod tests;
