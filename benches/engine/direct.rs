//! Browsers the bench launches itself, outside any worker: the whatsapp-web.js baseline, the
//! engine's own flags with one density lever each, and the two several-sessions-per-browser
//! prototypes: N pages in N (in-memory) browser contexts of one Chromium, and N pages in N
//! (on-disk) profiles of one Chromium, opened through Chrome's process singleton.
//!
//! Every session is linked the way a person links whatsapp-web.js: the page shows a QR (read
//! from WhatsApp Web's module surface, built as whatsapp-web.js builds it), the simulated phone
//! scans it (`POST /sim/link`), and the page reaches `CONNECTED`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chromiumoxide::Browser;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::memory::{
    PressureLevel, SimulatePressureNotificationParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    CloseTargetParams, CreateBrowserContextParams, CreateTargetParams, GetTargetsParams,
};
use chromiumoxide::cdp::js_protocol::heap_profiler::CollectGarbageParams;
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// puppeteer's `defaultArgs()` for headless Chrome (docs/density-research.md §1.1), the flags
/// whatsapp-web.js launches with, in order.
pub const PUPPETEER_DEFAULT_ARGS: &[&str] = &[
    "--allow-pre-commit-input",
    "--disable-background-networking",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-component-extensions-with-background-pages",
    "--disable-crash-reporter",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-hang-monitor",
    "--disable-infobars",
    "--disable-ipc-flooding-protection",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--disable-renderer-backgrounding",
    "--disable-search-engine-choice-screen",
    "--disable-sync",
    "--enable-automation",
    "--export-tagged-pdf",
    "--force-color-profile=srgb",
    "--generate-pdf-document-outline",
    "--metrics-recording-only",
    "--no-first-run",
    "--password-store=basic",
    "--use-mock-keychain",
    "--disable-features=Translate,AcceptCHFrame,MediaRouter,OptimizationHints,WebUIReloadButton,WebUIOmniboxPopup,WebUIOmniboxAimPopup,ProcessPerSiteUpToMainFrameThreshold,IsolateSandboxedIframes",
    "--enable-features=PdfOopif",
    "--headless=new",
    "--hide-scrollbars",
    "--mute-audio",
    "--disable-extensions",
];

/// What the issue adds to puppeteer's defaults for the baseline (whatsapp-web.js itself adds
/// the last one).
pub const BASELINE_EXTRA_ARGS: &[&str] = &[
    "--no-sandbox",
    "--disable-gpu",
    "--disable-blink-features=AutomationControlled",
];

/// The whatsapp-web.js baseline command line (without `--user-data-dir`, the debugging port
/// and the initial `about:blank`).
pub fn baseline_args() -> Vec<String> {
    PUPPETEER_DEFAULT_ARGS
        .iter()
        .chain(BASELINE_EXTRA_ARGS)
        .map(|s| s.to_string())
        .collect()
}

/// The flags the engine gives Chromium (`wafleet::engine::config::chromium_args`), with or
/// without its helper trimming, with `extra` merged in as an operator's `extra_args` would be,
/// plus what chromiumoxide adds at launch.
pub fn engine_args(extra: &[String], trim_helpers: bool) -> Vec<String> {
    let config = wafleet::engine::EngineConfig {
        extra_args: extra.to_vec(),
        trim_helpers,
        // Levers name their V8 flags themselves.
        js_flags: Vec::new(),
        ..wafleet::engine::EngineConfig::default()
    };
    let no_sandbox = wafleet::engine::config::resolve_no_sandbox(&config);
    let mut args = wafleet::engine::config::chromium_args(&config, no_sandbox);
    args.extend(
        [
            "--disable-extensions",
            "--headless=new",
            "--hide-scrollbars",
            "--mute-audio",
        ]
        .map(String::from),
    );
    args
}

/// How the sessions of one measurement are laid out on browsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One browser per session started with a tab, which WhatsApp Web replaces
    /// (whatsapp-web.js).
    StartupTab,
    /// One browser per session started without a window; the page is a new target (the engine).
    NewTarget,
    /// One browser for all sessions, each in its own browser context (in-memory profiles).
    Contexts,
    /// One browser for all sessions, each in its own on-disk profile of the browser's
    /// user-data-dir (`--profile-directory`), opened by a second, short-lived `chromium` that
    /// hands its URL to the running browser's process singleton (docs/engine.md §9).
    Profiles,
}

impl Layout {
    /// Whether every session of a measurement goes into one browser.
    pub fn shared(self) -> bool {
        matches!(self, Layout::Contexts | Layout::Profiles)
    }
}

/// The command line of a [`Layout::Profiles`] browser: the engine's, headful on the headless
/// Ozone platform instead of `--headless` (a headless browser has no process singleton, so a
/// second start could not hand it a profile).
pub fn profiles_args(args: &[String]) -> Vec<String> {
    args.iter()
        .filter(|a| !a.starts_with("--headless"))
        .cloned()
        .chain(std::iter::once("--ozone-platform=headless".to_string()))
        .collect()
}

/// One launched Chromium and the sessions (pages) in it.
pub struct Launched {
    child: Child,
    browser: Browser,
    /// The Chromium binary and the user-data-dir (for [`Layout::Profiles`]' second starts).
    chromium: PathBuf,
    user_data_dir: PathBuf,
    /// Whether the browser runs without the sandbox (a second start must say so too, or
    /// Chromium refuses to start as root before it reaches the process singleton).
    no_sandbox: bool,
    /// The sessions' pages.
    pub pages: Vec<Page>,
}

impl Launched {
    /// The browser's user-data-dir.
    pub fn user_data_dir(&self) -> &Path {
        &self.user_data_dir
    }

    /// SIGKILLs the browser (its helpers follow it; [`super::procs::kill_trees`] sweeps the rest).
    pub async fn kill(mut self) {
        drop(self.pages);
        drop(self.browser);
        let _ = self.child.kill().await;
    }
}

/// Starts `chromium` with `args` on `profile` and connects to it over CDP.
pub async fn launch(
    chromium: &Path,
    args: &[String],
    profile: &Path,
    startup_tab: bool,
) -> anyhow::Result<Launched> {
    std::fs::create_dir_all(profile)?;
    let mut cmd = Command::new(chromium);
    cmd.args(args)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--remote-debugging-port=0");
    if startup_tab {
        cmd.arg("about:blank");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ws = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(at) = line.find("ws://") {
                return Ok(line[at..].trim().to_string());
            }
        }
        anyhow::bail!("chromium exited before printing its DevTools address")
    })
    .await
    .map_err(|_| anyhow::anyhow!("chromium printed no DevTools address within 60 s"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (browser, mut handler) = Browser::connect(ws).await?;
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    Ok(Launched {
        child,
        browser,
        chromium: chromium.to_path_buf(),
        user_data_dir: profile.to_path_buf(),
        no_sandbox: args.iter().any(|a| a == "--no-sandbox"),
        pages: Vec::new(),
    })
}

/// Opens the simulator page for one more session in `launched`.
pub async fn open_page(launched: &mut Launched, url: &str, layout: Layout) -> anyhow::Result<()> {
    let page = match layout {
        Layout::StartupTab => {
            // whatsapp-web.js navigates the browser's first tab; the same end state (one tab,
            // on WhatsApp Web, in a fresh renderer after the cross-site navigation) is a new tab
            // and the startup tab closed (chromiumoxide does not reliably adopt a tab it did not
            // open).
            let page = launched.browser.new_page(url).await?;
            let targets = launched
                .browser
                .execute(GetTargetsParams::default())
                .await?;
            for t in &targets.result.target_infos {
                if t.r#type == "page" && t.target_id != *page.target_id() {
                    launched
                        .browser
                        .execute(CloseTargetParams::new(t.target_id.clone()))
                        .await?;
                }
            }
            page
        }
        Layout::NewTarget => launched.browser.new_page(url).await?,
        Layout::Contexts => {
            let context = launched
                .browser
                .create_browser_context(CreateBrowserContextParams::default())
                .await?;
            let target = CreateTargetParams::builder()
                .url(url)
                .browser_context_id(context)
                .build()
                .map_err(anyhow::Error::msg)?;
            launched.browser.new_page(target).await?
        }
        Layout::Profiles => {
            let profile = format!("p{:03}", launched.pages.len());
            return open_in_profile(launched, url, &profile).await;
        }
    };
    launched.pages.push(page);
    Ok(())
}

/// Opens `url` in profile `profile` of the running [`Layout::Profiles`] browser: a second
/// `chromium` on the same user-data-dir hands a marker page to the browser's process singleton
/// and exits; the bench finds that page's target by its marker, attaches, and navigates it.
pub async fn open_in_profile(
    launched: &mut Launched,
    url: &str,
    profile: &str,
) -> anyhow::Result<()> {
    let marker = format!("data:text/html,<title>wafleet-{profile}</title>");
    let mut second = Command::new(&launched.chromium);
    if launched.no_sandbox {
        second.arg("--no-sandbox");
    }
    let out = second
        .arg("--ozone-platform=headless")
        .arg(format!(
            "--user-data-dir={}",
            launched.user_data_dir.display()
        ))
        .arg(format!("--profile-directory={profile}"))
        .arg(&marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .map_err(|_| anyhow::anyhow!("the second chromium start did not exit within 30 s"))??;
    anyhow::ensure!(
        out.status.success(),
        "the second chromium start for {profile} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let targets = launched
            .browser
            .execute(GetTargetsParams::default())
            .await?;
        let found = targets
            .result
            .target_infos
            .iter()
            .find(|t| t.r#type == "page" && t.url.contains(&format!("wafleet-{profile}<")))
            .map(|t| t.target_id.clone());
        if let Some(id) = found
            && let Ok(page) = launched.browser.get_page(id).await
        {
            break page;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no page of profile {profile} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    page.goto(url).await?;
    launched.pages.push(page);
    Ok(())
}

/// Evaluates `expr` in the page's main frame (promises awaited) and returns its JSON value.
async fn eval(page: &Page, expr: &str) -> anyhow::Result<serde_json::Value> {
    let params = EvaluateParams::builder()
        .expression(expr)
        .await_promise(true)
        .return_by_value(true)
        .build()
        .map_err(anyhow::Error::msg)?;
    let res = page.execute(params).await?;
    if let Some(ex) = &res.result.exception_details {
        anyhow::bail!("page exception: {}", ex.text);
    }
    Ok(res.result.result.value.clone().unwrap_or_default())
}

/// The socket state, or null while WhatsApp Web's modules are not there yet.
const STATE_JS: &str = "(() => { try { const S = window.require('WAWebSocketModel').Socket; \
    const ref = window.require('WAWebConnModel').Conn.ref; return S.state + (ref ? ':ref' : ''); } \
    catch (e) { return null; } })()";

/// The QR string as whatsapp-web.js builds it: ref, noise key, identity key, ADV secret, platform.
const QR_JS: &str = "(async () => { const r = window.require; \
    const reg = await r('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo(); \
    const noise = await r('WAWebUserPrefsInfoStore').waNoiseInfo.get(); \
    const b64 = r('WABase64').encodeB64; const adv = await r('WAWebAdvSignatureApi').getADVSecretKey(); \
    return [r('WAWebConnModel').Conn.ref, b64(noise.staticKeyPair.pubKey), \
    b64(reg.identityKeyPair.pubKey), adv, r('WAWebCompanionRegClientUtils').DEVICE_PLATFORM].join(','); })()";

/// Waits until the page's state (see [`STATE_JS`]) satisfies `ok`.
async fn wait_state(page: &Page, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = eval(page, STATE_JS).await.unwrap_or_default();
        if state.as_str().is_some_and(&ok) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "page not {what} within 120 s (state {state})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a page whose login was stored comes back `CONNECTED` on its own; an error if it
/// shows a QR instead (the login was lost).
pub async fn wait_restored(page: &Page) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = eval(page, STATE_JS).await.unwrap_or_default();
        match state.as_str() {
            Some(s) if s.starts_with("CONNECTED") => return Ok(()),
            Some("UNPAIRED:ref") => anyhow::bail!("the page shows a QR: its login was lost"),
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "page not CONNECTED within 120 s (state {state})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Links the page's session to `phone` through the simulator's phone API and waits for
/// `CONNECTED`.
pub async fn link(
    page: &Page,
    http: &reqwest::Client,
    sim: &str,
    phone: &str,
) -> anyhow::Result<()> {
    wait_state(page, "showing a QR", |s| s == "UNPAIRED:ref").await?;
    let qr = eval(page, QR_JS).await?;
    let qr = qr
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no QR string: {qr}"))?;
    let res = http
        .post(format!("http://{sim}/sim/link"))
        .json(&serde_json::json!({ "qr": qr, "phone": phone }))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "/sim/link: {}",
        res.text().await?
    );
    wait_state(page, "CONNECTED", |s| s.starts_with("CONNECTED")).await
}

/// Asks every process to free what it can (CDP `Memory.simulatePressureNotification`,
/// critical) and collects the page's garbage (`HeapProfiler.collectGarbage`), which is what a
/// periodic purge would do to a live session.
pub async fn purge(page: &Page) -> anyhow::Result<()> {
    page.execute(SimulatePressureNotificationParams::new(
        PressureLevel::Critical,
    ))
    .await?;
    page.execute(CollectGarbageParams::default()).await?;
    // A purge that broke the session would be no lever at all.
    wait_state(page, "CONNECTED after the purge", |s| {
        s.starts_with("CONNECTED")
    })
    .await
}
