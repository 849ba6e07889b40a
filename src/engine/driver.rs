//! The browser driver: one headless Chromium per session, driven through chromiumoxide.
//!
//! [`Engine::launch`] starts Chromium on the session's profile directory, opens one page,
//! registers the CDP binding the adapter reports through (`Runtime.addBinding`), injects
//! the adapter (`assets/wa/adapter/`, joined by [`super::adapter`]) into every new document (`Page.addScriptToEvaluateOnNewDocument`) and
//! navigates to WhatsApp Web. From then on the adapter's reports arrive as
//! `Runtime.bindingCalled` events and become [`EngineEvent`]s; nothing polls the page for state.
//!
//! The main tasks per browser, all on the engine's [`TaskTracker`]:
//! * the chromiumoxide handler (must be polled continuously; its end or error means the CDP
//!   connection is gone),
//! * the event pump (binding calls and `Inspector.targetCrashed`),
//! * the owner, which holds the `Browser` (and so the child process): it waits for a close
//!   request, the process's exit or the connection's loss. A close is clean (`Browser.close`,
//!   then wait, so the profile is flushed) and falls back to a kill after `close_timeout`; the
//!   child is always waited for, so no zombie is left.
//!
//! Optionally a heartbeat evaluates `1` in the page every `heartbeat_interval`; a renderer stuck
//! in a loop never answers and is reported as crashed, which the watchdog then handles.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::inspector::{
    EnableParams as InspectorEnable, EventTargetCrashed,
};
use chromiumoxide::cdp::browser_protocol::network::SetUserAgentOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, NavigateParams,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    AddBindingParams, EvaluateParams, EventBindingCalled,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::page::Page;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use super::config::{EngineConfig, LaunchFlags, chromium_args_with, resolve_no_sandbox};
use super::document::{DocumentTracker, pin_index_html};
use super::events::{EngineEvent, parse_report};
use super::profile::{ProfileError, ensure_profile};

pub use super::adapter::ADAPTER_JS;

mod session;
pub use session::BrowserSession;
use session::Inner;
pub(crate) use session::{check_recipient, js_string};

/// The CDP binding the adapter reports through (must match `BINDING` in the adapter).
pub const BINDING: &str = "__wafleet";

/// Largest media payload accepted by [`BrowserSession::send_media`] (WhatsApp's own limit for
/// most media is 16 MiB).
pub const MAX_MEDIA_BYTES: usize = 16 << 20;

/// The engine's events for one browser, in order.
pub type EventReceiver = mpsc::UnboundedReceiver<EngineEvent>;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The profile directory could not be prepared.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Chromium could not be started or configured.
    #[error("launch: {0}")]
    Launch(String),
    /// A CDP command failed.
    #[error("CDP: {0}")]
    Cdp(#[from] CdpError),
    /// WhatsApp Web could not be opened.
    #[error("navigation to {url} failed: {error}")]
    Navigate {
        /// The URL.
        url: String,
        /// Chromium's error text.
        error: String,
    },
    /// The page threw while running a command.
    #[error("page: {0}")]
    Page(String),
    /// The adapter refused or WhatsApp Web failed the command.
    #[error("WhatsApp Web: {0}")]
    Adapter(String),
    /// A command took longer than the request timeout.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The input is not acceptable (empty recipient, media too large, …).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The browser is closed or gone.
    #[error("browser closed")]
    Closed,
}

/// A message accepted by WhatsApp Web.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SentMessage {
    /// Its serialized key (`true_<to>@c.us_<id>`), the id acks refer to.
    pub id: String,
}

/// Media to send: the bytes themselves (fetching from a URL belongs to the caller).
#[derive(Debug, Clone)]
pub struct Media {
    /// The content.
    pub data: bytes::Bytes,
    /// Its mimetype, e.g. `image/png`.
    pub mimetype: String,
    /// The file name shown to the recipient.
    pub filename: Option<String>,
    /// A caption.
    pub caption: Option<String>,
}

/// Launches browsers. Cheap to clone; all clones share the config and the task tracker.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Arc<EngineConfig>,
    tracker: TaskTracker,
    /// The user agent derived from `chromium --version` (once per engine), when
    /// `EngineConfig::user_agent` is not set.
    derived_ua: Arc<tokio::sync::OnceCell<Option<String>>>,
}

/// How one launch loads WhatsApp Web (the fleet's version setting decides it per launch).
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Serve this cached `index.html` instead of the live one (pins the version); `None` falls
    /// back to `EngineConfig::pinned_index_html`.
    pub pinned_index_html: Option<std::path::PathBuf>,
    /// Remember the live document so that [`BrowserSession::document_html`] can read it.
    pub capture_document: bool,
}

// === impl Engine ===

impl Engine {
    /// An engine with its own task tracker.
    pub fn new(config: EngineConfig) -> Engine {
        Engine::with_tracker(config, TaskTracker::new())
    }

    /// An engine whose tasks go through the caller's tracker (so a worker's drain waits for
    /// every browser's owner task, i.e. every Chromium's exit).
    pub fn with_tracker(config: EngineConfig, tracker: TaskTracker) -> Engine {
        Engine {
            config: Arc::new(config),
            tracker,
            derived_ua: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The tracker every browser task runs on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Launches Chromium on `profile_dir` (created if missing) and opens WhatsApp Web in it.
    ///
    /// Returns once navigation has been requested; what follows (QR, login, messages) arrives as
    /// events. On error no process is left behind.
    pub async fn launch(&self, profile_dir: &Path) -> Result<BrowserSession, EngineError> {
        self.launch_with(profile_dir, &LaunchOptions::default())
            .await
    }

    /// The user agent every browser announces: `EngineConfig::user_agent`, else Chromium's own
    /// (from `chromium --version`, asked once) without `Headless`; `None` if that failed.
    pub async fn user_agent(&self) -> Option<String> {
        if let Some(ua) = &self.config.user_agent {
            return Some(ua.clone());
        }
        let chromium = self.config.chromium.clone();
        self.derived_ua
            .get_or_init(|| async move {
                let probe = tokio::process::Command::new(&chromium)
                    .arg("--version")
                    .kill_on_drop(true)
                    .output();
                match tokio::time::timeout(Duration::from_secs(10), probe).await {
                    Ok(Ok(out)) => user_agent_for(&String::from_utf8_lossy(&out.stdout)),
                    _ => None,
                }
            })
            .await
            .clone()
    }

    /// [`Engine::launch`] with per-launch options (a pinned version, document capture).
    pub async fn launch_with(
        &self,
        profile_dir: &Path,
        opts: &LaunchOptions,
    ) -> Result<BrowserSession, EngineError> {
        let cfg = self.config.clone();
        ensure_profile(profile_dir)?;
        if !cfg.chromium.is_absolute() {
            return Err(EngineError::Launch(format!(
                "chromium executable {} not found (set WAFLEET_CHROMIUM or put it on PATH)",
                cfg.chromium.display()
            )));
        }
        let no_sandbox = resolve_no_sandbox(&cfg);
        let pinned = opts
            .pinned_index_html
            .clone()
            .or_else(|| cfg.pinned_index_html.clone());
        let user_agent = self.user_agent().await;
        let flags = LaunchFlags {
            user_agent: user_agent.clone(),
            pinned_local: pinned.is_some() && is_local_url(&cfg.wa_url),
        };
        let config = BrowserConfig::builder()
            .chrome_executable(&cfg.chromium)
            .user_data_dir(profile_dir)
            .disable_default_args()
            .new_headless_mode()
            .launch_timeout(cfg.launch_timeout)
            .request_timeout(cfg.request_timeout)
            .viewport(None)
            // chromiumoxide adds the leading `--` itself.
            .args(
                chromium_args_with(&cfg, no_sandbox, &flags)
                    .into_iter()
                    .map(|a| a.trim_start_matches('-').to_string()),
            )
            .build()
            .map_err(EngineError::Launch)?;
        let (mut browser, mut handler) = Browser::launch(config)
            .await
            .map_err(|e| EngineError::Launch(e.to_string()))?;
        let pid = browser.get_mut_child().and_then(|c| c.as_mut_inner().id());

        // The handler must be polled for anything to happen; its end is the connection's end.
        let (conn_tx, conn_rx) = oneshot::channel::<String>();
        self.tracker.spawn(async move {
            let reason = loop {
                match handler.next().await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "CDP connection closed".to_string(),
                }
            };
            let _ = conn_tx.send(reason);
        });

        let setup = setup_page(
            &browser,
            &cfg,
            &self.tracker,
            user_agent,
            pinned.as_deref(),
            opts.capture_document,
        )
        .await;
        let (page, bindings, crashes, document) = match setup {
            Ok(parts) => parts,
            Err(e) => {
                reap(&mut browser, cfg.close_timeout).await;
                return Err(e);
            }
        };

        let closing = Arc::new(AtomicBool::new(false));
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = oneshot::channel::<()>();
        let (exited_tx, exited_rx) = watch::channel(false);

        self.tracker
            .spawn(pump(bindings, crashes, ev_tx.clone(), closing.clone()));
        self.tracker
            .spawn(navigate(page.clone(), cfg.wa_url.clone(), ev_tx.clone()));
        self.tracker.spawn(own(
            browser,
            close_rx,
            conn_rx,
            ev_tx.clone(),
            closing.clone(),
            exited_tx,
            cfg.close_timeout,
        ));
        if let Some(every) = cfg.heartbeat_interval {
            self.tracker.spawn(heartbeat(
                page.clone(),
                every,
                ev_tx,
                closing.clone(),
                exited_rx.clone(),
            ));
        }

        Ok(BrowserSession {
            inner: Arc::new(Inner {
                page,
                pid,
                document,
                close_tx: Mutex::new(Some(close_tx)),
                exited: exited_rx,
                events: Mutex::new(Some(ev_rx)),
                closing,
                request_timeout: cfg.request_timeout,
                close_timeout: cfg.close_timeout,
            }),
        })
    }
}

type Listener<T> = chromiumoxide::listeners::EventStream<T>;

async fn setup_page(
    browser: &Browser,
    cfg: &EngineConfig,
    tracker: &TaskTracker,
    user_agent: Option<String>,
    pinned: Option<&Path>,
    capture: bool,
) -> Result<
    (
        Page,
        Listener<EventBindingCalled>,
        Listener<EventTargetCrashed>,
        Option<DocumentTracker>,
    ),
    EngineError,
> {
    let page = browser.new_page("about:blank").await?;
    page.execute(InspectorEnable::default()).await?;
    // Listeners before the binding and the navigation, so no report can be missed.
    let bindings = page.event_listener::<EventBindingCalled>().await?;
    let crashes = page.event_listener::<EventTargetCrashed>().await?;
    page.execute(AddBindingParams::new(BINDING)).await?;
    page.execute(AddScriptToEvaluateOnNewDocumentParams::new(ADAPTER_JS))
        .await?;
    let user_agent = match user_agent {
        Some(ua) => ua,
        // WhatsApp Web turns headless user agents away; the real version number stays.
        None => browser
            .version()
            .await?
            .user_agent
            .replace("HeadlessChrome", "Chrome"),
    };
    page.execute(SetUserAgentOverrideParams::new(user_agent))
        .await?;
    let document = match pinned {
        Some(path) => {
            pin_index_html(&page, &cfg.wa_url, path, tracker).await?;
            None
        }
        None if capture => Some(DocumentTracker::start(&page, &cfg.wa_url, tracker).await?),
        None => None,
    };
    Ok((page, bindings, crashes, document))
}

/// Chromium's user agent for the `chromium --version` output `version` ("Chromium
/// 131.0.6778.85 built on Debian …"): the reduced form Chrome sends on Linux, which names only
/// the major version, and never `HeadlessChrome`.
pub fn user_agent_for(version: &str) -> Option<String> {
    let major = version.split_whitespace().find_map(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        let numeric = parts.len() == 4
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        numeric.then(|| parts[0].to_string())
    })?;
    Some(format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
    ))
}

/// Whether `url` points at this machine or a private network (the simulator in tests and
/// `wafleet dev`), where a pinned document needs Chromium's local network checks relaxed.
pub fn is_local_url(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        None => false,
    }
}

/// Opens WhatsApp Web without waiting for it: `Page.navigate` answers only once the document
/// commits, which a slow or stuck load delays indefinitely, and the STARTING watchdog (not the
/// launch) is what bounds a start. A navigation that fails outright (DNS, refused, TLS) is
/// reported as a disconnect so the supervisor retries with backoff.
async fn navigate(page: Page, url: String, events: mpsc::UnboundedSender<EngineEvent>) {
    match page.execute(NavigateParams::new(url.clone())).await {
        Ok(nav) => {
            if let Some(error) = nav.result.error_text.clone() {
                let _ = events.send(EngineEvent::Disconnected {
                    reason: EngineError::Navigate { url, error }.to_string(),
                });
            }
        }
        // Timed out or the browser went away: the watchdog or the crash path takes it from here.
        Err(e) => tracing::debug!(error = %e, "Page.navigate did not answer"),
    }
}

/// Forwards adapter reports and renderer crashes as engine events.
async fn pump(
    mut bindings: Listener<EventBindingCalled>,
    mut crashes: Listener<EventTargetCrashed>,
    events: mpsc::UnboundedSender<EngineEvent>,
    closing: Arc<AtomicBool>,
) {
    loop {
        tokio::select! {
            call = bindings.next() => {
                let Some(call) = call else { break };
                if call.name != BINDING {
                    continue;
                }
                match parse_report(&call.payload) {
                    Ok(list) => {
                        for event in list {
                            if let EngineEvent::AdapterError { place, message } = &event {
                                tracing::warn!(%place, %message, "adapter error");
                            }
                            if events.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "dropped adapter report"),
                }
            }
            crash = crashes.next() => {
                let Some(_) = crash else { break };
                if !closing.load(Ordering::SeqCst) {
                    let _ = events.send(EngineEvent::Crashed { reason: "renderer crashed".into() });
                }
            }
        }
    }
}

/// Owns the browser process until it is closed or gone; always reaps it.
async fn own(
    mut browser: Browser,
    close_rx: oneshot::Receiver<()>,
    conn_rx: oneshot::Receiver<String>,
    events: mpsc::UnboundedSender<EngineEvent>,
    closing: Arc<AtomicBool>,
    exited: watch::Sender<bool>,
    close_timeout: Duration,
) {
    enum Outcome {
        Close,
        Exited(String),
        ConnectionLost(String),
    }
    let outcome = tokio::select! {
        // A close request, or every BrowserSession handle dropped: close cleanly.
        _ = close_rx => Outcome::Close,
        status = browser.wait() => Outcome::Exited(match status {
            Ok(Some(s)) => s.to_string(),
            Ok(None) => "exited".to_string(),
            Err(e) => e.to_string(),
        }),
        reason = conn_rx => Outcome::ConnectionLost(reason.unwrap_or_else(|_| "handler ended".into())),
    };
    match outcome {
        Outcome::Close => {
            closing.store(true, Ordering::SeqCst);
            close_cleanly(&mut browser, close_timeout).await;
        }
        Outcome::Exited(status) => {
            if !closing.swap(true, Ordering::SeqCst) {
                let _ = events.send(EngineEvent::Crashed {
                    reason: format!("chromium exited: {status}"),
                });
            }
        }
        Outcome::ConnectionLost(reason) => {
            if !closing.swap(true, Ordering::SeqCst) {
                let _ = events.send(EngineEvent::Crashed {
                    reason: format!("CDP connection lost: {reason}"),
                });
            }
            reap(&mut browser, close_timeout).await;
        }
    }
    let _ = exited.send(true);
}

/// `Browser.close`, wait for the exit (the profile is flushed by then), kill if it hangs.
async fn close_cleanly(browser: &mut Browser, close_timeout: Duration) {
    match tokio::time::timeout(close_timeout, browser.close()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "Browser.close failed"),
        Err(_) => tracing::warn!("Browser.close timed out"),
    }
    match tokio::time::timeout(close_timeout, browser.wait()).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("chromium did not exit after close; killing it");
            reap(browser, close_timeout).await;
        }
    }
}

/// Kills the process if still running and waits for it (no zombie).
async fn reap(browser: &mut Browser, limit: Duration) {
    if let Ok(Some(_)) = browser.try_wait() {
        return;
    }
    // tokio's kill sends SIGKILL and waits for the exit.
    if let Some(Err(e)) = browser.kill().await {
        tracing::warn!(error = %e, "killing chromium failed");
    }
    let _ = tokio::time::timeout(limit, browser.wait()).await;
}

/// Probes the page; a renderer that does not answer within the interval is reported crashed.
async fn heartbeat(
    page: Page,
    every: Duration,
    events: mpsc::UnboundedSender<EngineEvent>,
    closing: Arc<AtomicBool>,
    mut exited: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = exited.wait_for(|e| *e) => return,
            _ = ticker.tick() => {}
        }
        let probe = EvaluateParams::new("1");
        match tokio::time::timeout(every, page.execute(probe)).await {
            Ok(_) => {}
            Err(_) => {
                if !closing.load(Ordering::SeqCst) {
                    let _ = events.send(EngineEvent::Crashed {
                        reason: format!("page unresponsive for {} s", every.as_secs()),
                    });
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
