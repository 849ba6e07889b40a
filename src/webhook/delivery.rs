//! The delivery task: at-least-once, in order per (session, target), from the durable outbox.
//!
//! Each new event is first expanded into one delivery per target of its session that wants it
//! (the targets of that moment: a target added by a PATCH gets the events from then on). Per
//! (session, target) only the oldest pending delivery (the head) is in flight; the next waits
//! until it is delivered, dead or dropped. Targets are independent: each has its own attempts,
//! backoff, signature (its own secret) and dead letter, so a failing receiver holds back only
//! itself. Different targets and sessions are delivered concurrently (bounded). A delivery
//! whose target was removed (or whose filter no longer wants the event) is dropped, not sent.
//! Answers: 2xx delivered; 408, 409, 425, 429, any 3xx/5xx, timeouts and connection errors are
//! retried with exponential backoff and jitter (honouring `Retry-After`) until the attempts run
//! out; every other 4xx is final at once (410 Gone too, logged as such). Final failures become
//! dead letters ([`Store::dead_letters`], [`Store::replay_dead`]).
//!
//! The policy ([`classify`], [`backoff`]) is pure; [`run`] is the I/O loop around it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::config::Registry;
use super::sign::signature_headers;
use crate::ids::{SessionId, WorkspaceId};
use crate::store::{Delivery, Store};

/// Errors that stop the delivery task before it starts.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// A configuration value is invalid.
    #[error("invalid webhook setting {name}: {value:?}")]
    Config {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// Delivery settings. Defaults: 10 s request timeout, 18 attempts, backoff 2 s doubling to a
/// 30 min cap with ±20 % jitter (about 4 h from the first to the last attempt).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Per-request timeout (connect + answer).
    pub request_timeout: Duration,
    /// Attempts before an event becomes a dead letter (at least 1).
    pub max_attempts: u32,
    /// Delay after the first failed attempt.
    pub backoff_base: Duration,
    /// Upper bound of any delay.
    pub backoff_max: Duration,
    /// Jitter as a fraction of the delay: the delay is scaled by a factor in `[1-j, 1+j]`.
    pub jitter: f64,
    /// Deliveries (one per session and target) in flight at once.
    pub max_in_flight: usize,
    /// Longest sleep between outbox scans when nothing signals a change.
    pub idle_poll: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_attempts: 18,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(30 * 60),
            jitter: 0.2,
            max_in_flight: 32,
            idle_poll: Duration::from_secs(5),
        }
    }
}

impl DeliveryConfig {
    /// Reads overrides through `lookup` (e.g. `|k| std::env::var(k).ok()` in `main`):
    /// `WAFLEET_WEBHOOK_TIMEOUT_MS`, `WAFLEET_WEBHOOK_MAX_ATTEMPTS`,
    /// `WAFLEET_WEBHOOK_BACKOFF_BASE_MS`, `WAFLEET_WEBHOOK_BACKOFF_MAX_MS`,
    /// `WAFLEET_WEBHOOK_JITTER` (0..=1), `WAFLEET_WEBHOOK_MAX_IN_FLIGHT`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, WebhookError> {
        fn num<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &'static str,
        ) -> Result<Option<T>, WebhookError> {
            match lookup(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| WebhookError::Config { name, value: v }),
            }
        }
        let mut c = Self::default();
        if let Some(v) = num::<u64>(&lookup, "WAFLEET_WEBHOOK_TIMEOUT_MS")? {
            c.request_timeout = Duration::from_millis(v.max(1));
        }
        if let Some(v) = num::<u32>(&lookup, "WAFLEET_WEBHOOK_MAX_ATTEMPTS")? {
            c.max_attempts = v.max(1);
        }
        if let Some(v) = num::<u64>(&lookup, "WAFLEET_WEBHOOK_BACKOFF_BASE_MS")? {
            c.backoff_base = Duration::from_millis(v);
        }
        if let Some(v) = num::<u64>(&lookup, "WAFLEET_WEBHOOK_BACKOFF_MAX_MS")? {
            c.backoff_max = Duration::from_millis(v);
        }
        if let Some(v) = num::<f64>(&lookup, "WAFLEET_WEBHOOK_JITTER")? {
            if !(0.0..=1.0).contains(&v) {
                return Err(WebhookError::Config {
                    name: "WAFLEET_WEBHOOK_JITTER",
                    value: v.to_string(),
                });
            }
            c.jitter = v;
        }
        if let Some(v) = num::<usize>(&lookup, "WAFLEET_WEBHOOK_MAX_IN_FLIGHT")? {
            c.max_in_flight = v.max(1);
        }
        Ok(c)
    }
}

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// Try again later (if attempts remain).
    Retry,
    /// Final: a dead letter now.
    Dead,
}

/// PURE. The verdict for an HTTP status. 4xx are the receiver refusing this event for good,
/// except 408 (timeout), 409 (conflict, e.g. a lock), 425 (too early) and 429 (slow down).
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 409 | 425 | 429 => Verdict::Retry,
        400..=499 => Verdict::Dead,
        _ => Verdict::Retry,
    }
}

/// PURE. The delay before attempt `attempts_made + 1`, after `attempts_made >= 1` failures:
/// `min(base · 2^(attempts_made-1), max)` scaled by `1 + jitter · (2·rand01 - 1)` and capped at
/// `max`. `rand01` is a sample in `[0, 1)`.
pub fn backoff(cfg: &DeliveryConfig, attempts_made: u32, rand01: f64) -> Duration {
    let exp = attempts_made.saturating_sub(1).min(40);
    let raw = cfg.backoff_base.as_secs_f64() * 2f64.powi(exp as i32);
    let capped = raw.min(cfg.backoff_max.as_secs_f64());
    let factor = 1.0 + cfg.jitter * (2.0 * rand01.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((capped * factor).clamp(0.0, cfg.backoff_max.as_secs_f64()))
}

/// Parses `Retry-After` (delta seconds only; HTTP dates are ignored).
fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let secs: u64 = v?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// Registers the metric descriptions (idempotent).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "wafleet_webhook_delivered_total",
        "Webhook events delivered (2xx)"
    );
    metrics::describe_counter!(
        "wafleet_webhook_retried_total",
        "Failed webhook attempts scheduled for a retry"
    );
    metrics::describe_counter!(
        "wafleet_webhook_dead_total",
        "Webhook events that became dead letters"
    );
    metrics::describe_histogram!(
        "wafleet_webhook_delivery_seconds",
        metrics::Unit::Seconds,
        "Time from the event's commit to its successful delivery"
    );
    metrics::describe_gauge!(
        "wafleet_webhook_backlog",
        "Outbox events waiting for delivery"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What is in flight: one head per (workspace, session, target).
type TargetKey = (WorkspaceId, SessionId, String);

/// Expands the events not expanded yet into per-target deliveries, oldest first (so a
/// target's deliveries keep the events' order). Answers whether it did anything.
async fn fan_out(store: &Store, registry: &Registry) -> bool {
    let events = match store.outbox_unfanned(1024).await {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "webhook outbox scan failed");
            return false;
        }
    };
    let mut progressed = false;
    for ev in events {
        let targets = registry.targets(&ev.workspace, &ev.session);
        if targets.is_empty() {
            // Sessions with no webhook at all (SSE-only): skip their events in one statement
            // instead of one per event.
            match store.outbox_skip_session(&ev.workspace, &ev.session).await {
                Ok(_) => progressed = true,
                Err(e) => warn!(error = %e, "skipping undeliverable events failed"),
            }
            continue;
        }
        let ids: Vec<String> = targets
            .iter()
            .filter(|t| t.events.matches(&ev.event))
            .map(|t| t.id.clone())
            .collect();
        match store.outbox_fan_out(&ev.id, &ids, now_ms()).await {
            Ok(()) => progressed = true,
            Err(e) => {
                warn!(event = %ev.id, error = %e, "expanding an event into deliveries failed")
            }
        }
    }
    progressed
}

/// Runs the delivery loop until `shutdown` is cancelled, then waits for the attempts in flight
/// (each bounded by the request timeout). Errors of single scans and attempts are logged and the
/// loop goes on.
pub async fn run(
    store: Store,
    registry: Arc<Registry>,
    config: DeliveryConfig,
    shutdown: CancellationToken,
) -> Result<(), WebhookError> {
    describe_metrics();
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        // Never follow redirects: a redirect could lead a signed body to an unvetted host.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wafleet-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let in_flight: Arc<Mutex<HashSet<TargetKey>>> = Arc::default();
    let done = Arc::new(Notify::new());
    let mut changes = store.outbox_changes();
    info!(
        max_attempts = config.max_attempts,
        "webhook delivery started"
    );
    while !shutdown.is_cancelled() {
        let mut sleep_for = config.idle_poll;
        if fan_out(&store, &registry).await {
            // More may be waiting behind the page just expanded; the heads below go first.
            sleep_for = Duration::ZERO;
        }
        match store.delivery_heads(1024).await {
            Ok(heads) => {
                let now = now_ms();
                for d in heads {
                    let key = (
                        d.event.workspace.clone(),
                        d.event.session.clone(),
                        d.target.clone(),
                    );
                    if in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&key)
                    {
                        continue;
                    }
                    // A target removed by a PATCH (or whose filter dropped the event) loses
                    // its backlog now, not when its next retry falls due.
                    let wanted = registry
                        .target(&d.event.workspace, &d.event.session, &d.target)
                        .is_some_and(|t| t.events.matches(&d.event.event));
                    if !wanted {
                        debug!(event = %d.event.id, target = %d.target, "webhook target gone: delivery dropped");
                        log_store(
                            store.delivery_dropped(&d.event.id, &d.target).await,
                            &d.event.id,
                        );
                        sleep_for = Duration::ZERO;
                        continue;
                    }
                    if d.next_attempt_at > now {
                        sleep_for = sleep_for.min(Duration::from_millis(d.next_attempt_at - now));
                        continue;
                    }
                    {
                        let mut flying = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                        if flying.len() >= config.max_in_flight {
                            break;
                        }
                        flying.insert(key.clone());
                    }
                    let (store, registry, client, config, in_flight, done) = (
                        store.clone(),
                        registry.clone(),
                        client.clone(),
                        config.clone(),
                        in_flight.clone(),
                        done.clone(),
                    );
                    tracker.spawn(async move {
                        attempt(&store, &registry, &client, &config, d).await;
                        in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        done.notify_one();
                    });
                }
            }
            Err(e) => warn!(error = %e, "webhook delivery scan failed"),
        }
        match store.outbox_backlog().await {
            Ok(n) => metrics::gauge!("wafleet_webhook_backlog").set(n as f64),
            Err(e) => debug!(error = %e, "webhook backlog count failed"),
        }
        if sleep_for.is_zero() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changes.changed() => {}
            _ = done.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
    tracker.close();
    tracker.wait().await;
    info!("webhook delivery stopped");
    Ok(())
}

/// One attempt for one head delivery, and the bookkeeping of its outcome. The target is
/// looked up now, so a PATCH that moved it to a new URL or secret applies to the next attempt.
async fn attempt(
    store: &Store,
    registry: &Registry,
    client: &reqwest::Client,
    config: &DeliveryConfig,
    d: Delivery,
) {
    let tid = d.target.as_str();
    let ev = &d.event;
    let target = registry
        .target(&ev.workspace, &ev.session, tid)
        .filter(|t| t.events.matches(&ev.event));
    let Some(target) = target else {
        debug!(event = %ev.id, target = tid, "webhook target gone: delivery dropped");
        log_store(store.delivery_dropped(&ev.id, tid).await, &ev.id);
        return;
    };
    let ts = now_ms() / 1000;
    let body = ev.envelope.clone().into_bytes();
    let mut req = client
        .post(target.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in signature_headers(target.secret.as_ref(), &ev.id, ts, &body) {
        req = req.header(name, value);
    }
    for (name, value) in &target.headers {
        req = req.header(name, value);
    }
    // Only the host is logged: paths and query strings may carry tokens.
    let host = target.url.host_str().unwrap_or("?").to_owned();
    let started = Instant::now();
    let result = req.body(body).send().await;
    let attempts_made = d.attempts.saturating_add(1);
    let (status, error, hint) = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let hint = retry_after(resp.headers().get(http::header::RETRY_AFTER));
            match classify(status) {
                Verdict::Delivered => {
                    let now = now_ms();
                    log_store(
                        store.delivery_delivered(&ev.id, tid, status, now).await,
                        &ev.id,
                    );
                    metrics::counter!("wafleet_webhook_delivered_total").increment(1);
                    metrics::histogram!("wafleet_webhook_delivery_seconds")
                        .record(now.saturating_sub(ev.created_at) as f64 / 1000.0);
                    debug!(event = %ev.id, %host, status, elapsed_ms = started.elapsed().as_millis() as u64, "webhook delivered");
                    return;
                }
                Verdict::Dead => {
                    let reason = if status == 410 {
                        "410 Gone: the receiver retired this endpoint".to_owned()
                    } else {
                        format!("non-retryable answer {status}")
                    };
                    warn!(event = %ev.id, workspace = %ev.workspace, session = %ev.session, target = tid, %host, status, "webhook dead letter: {reason}");
                    log_store(
                        store
                            .delivery_dead(&ev.id, tid, Some(status), &reason, now_ms())
                            .await,
                        &ev.id,
                    );
                    metrics::counter!("wafleet_webhook_dead_total").increment(1);
                    return;
                }
                Verdict::Retry => (Some(status), format!("answer {status}"), hint),
            }
        }
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            (None, format!("{kind}: {}", error_chain(e)), None)
        }
    };
    if attempts_made >= config.max_attempts {
        let reason = format!("gave up after {attempts_made} attempts; last: {error}");
        warn!(event = %ev.id, workspace = %ev.workspace, session = %ev.session, target = tid, %host, "webhook dead letter: {reason}");
        log_store(
            store
                .delivery_dead(&ev.id, tid, status, &reason, now_ms())
                .await,
            &ev.id,
        );
        metrics::counter!("wafleet_webhook_dead_total").increment(1);
        return;
    }
    let mut delay = backoff(config, attempts_made, rand::random::<f64>());
    if let Some(h) = hint {
        delay = delay.max(h.min(config.backoff_max));
    }
    debug!(event = %ev.id, %host, attempt = attempts_made, delay_ms = delay.as_millis() as u64, "webhook retry: {error}");
    let next = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    log_store(
        store
            .delivery_retry(&ev.id, tid, status, &error, next)
            .await,
        &ev.id,
    );
    metrics::counter!("wafleet_webhook_retried_total").increment(1);
}

/// The error and its causes, without the URL (it may hold credentials; the text is stored and
/// shown in the dead-letter list).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

fn log_store(r: Result<(), crate::store::StoreError>, id: &str) {
    if let Err(e) = r {
        // The event stays pending and is retried on the next scan: at-least-once.
        warn!(event = %id, error = %e, "recording a webhook outcome failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(200), Verdict::Delivered);
        assert_eq!(classify(204), Verdict::Delivered);
        for s in [408, 409, 425, 429, 500, 502, 503, 504, 301, 302] {
            assert_eq!(classify(s), Verdict::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 410, 413, 422] {
            assert_eq!(classify(s), Verdict::Dead, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let c = DeliveryConfig::default();
        assert_eq!(backoff(&c, 1, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(&c, 2, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(&c, 5, 0.5), Duration::from_secs(32));
        assert_eq!(backoff(&c, 12, 0.5), Duration::from_secs(1800));
        assert_eq!(backoff(&c, 1000, 0.99), Duration::from_secs(1800));
        let lo = backoff(&c, 3, 0.0);
        let hi = backoff(&c, 3, 0.999_999);
        assert!(lo >= Duration::from_secs_f64(6.39) && lo <= Duration::from_secs_f64(6.41));
        assert!(hi > Duration::from_secs_f64(9.59) && hi <= Duration::from_secs_f64(9.6));
        let total: f64 = (1..c.max_attempts)
            .map(|a| backoff(&c, a, 0.5).as_secs_f64())
            .sum();
        assert!((4.0 * 3600.0..5.0 * 3600.0).contains(&total), "{total}");
    }

    #[test]
    fn config_from_lookup() {
        let c = DeliveryConfig::from_lookup(|k| match k {
            "WAFLEET_WEBHOOK_MAX_ATTEMPTS" => Some("3".into()),
            "WAFLEET_WEBHOOK_BACKOFF_BASE_MS" => Some("10".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.backoff_base, Duration::from_millis(10));
        assert!(
            DeliveryConfig::from_lookup(|k| (k == "WAFLEET_WEBHOOK_JITTER").then(|| "2".into()))
                .is_err()
        );
    }
}
