//! Engine configuration and the Chromium command line.
//!
//! The flag list is chosen for density and safety (docs/engine.md explains each): no
//! background networking, component updates, sync, crash reporting or GPU; `/tmp` instead of
//! `/dev/shm`; never `--disable-web-security`; `--no-sandbox` only when running as root, because
//! Chromium's sandbox refuses to start as root and a worker in a container often is root.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The real WhatsApp Web; tests and `wafleet dev` point at the simulator instead.
pub const DEFAULT_WA_URL: &str = "https://web.whatsapp.com/";

/// V8 flags every renderer gets unless configured otherwise: `--optimize-for-size` took 17–21 %
/// off a heap-heavy page's PSS per session and nothing measurable off the plain one
/// (docs/engine.md §9).
pub const DEFAULT_JS_FLAGS: &[&str] = &["--optimize-for-size"];

/// How often a `WORKING` session is purged by default ([`EngineConfig::purge_interval`]).
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(300);

/// How the engine launches and talks to Chromium.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The Chromium executable (`WAFLEET_CHROMIUM`, default `chromium` on `PATH`).
    pub chromium: PathBuf,
    /// The WhatsApp Web URL every session opens.
    pub wa_url: String,
    /// How long Chromium may take to print its DevTools address.
    pub launch_timeout: Duration,
    /// How long one CDP command may take (a hung renderer turns into a timeout, not a hang).
    pub request_timeout: Duration,
    /// How long a clean close (`Browser.close` then exit) may take before the process is killed.
    pub close_timeout: Duration,
    /// How often the page's liveness is probed (a renderer stuck in a loop answers nothing);
    /// `None` disables the probe.
    pub heartbeat_interval: Option<Duration>,
    /// The user agent; `None` uses Chromium's own with `HeadlessChrome` replaced by `Chrome`
    /// (WhatsApp Web refuses headless user agents).
    pub user_agent: Option<String>,
    /// V8 old-generation heap cap per renderer in MiB (`--js-flags=--max-old-space-size`):
    /// bounds the long tail of multi-GB sessions; the renderer is killed (and the session
    /// relaunched) when it is exceeded.
    pub max_old_space_mb: Option<u32>,
    /// Where Chromium's HTTP cache goes; `None` keeps it inside the profile. Pointing it at a
    /// local disk keeps cache churn off shared storage.
    pub disk_cache_dir: Option<PathBuf>,
    /// `Some(true)`/`Some(false)` forces the sandbox choice; `None` disables the sandbox only
    /// when the process runs as root.
    pub no_sandbox: Option<bool>,
    /// Fewer helper processes per browser (docs/engine.md "Density"): no spare renderer, no
    /// renderer for the (invisible) browser UI's WebUI, the GPU, network and audio services as
    /// browser threads. On by default; off restores Chromium's own process layout.
    pub trim_helpers: bool,
    /// Further V8 flags (`--js-flags`), merged with the heap cap into one switch (default
    /// [`DEFAULT_JS_FLAGS`]).
    pub js_flags: Vec<String>,
    /// How often a `WORKING` session's browser is asked to free memory (a critical
    /// memory-pressure notification and a full GC, [`crate::engine::BrowserSession::purge_memory`]);
    /// `None` never. Checked at the supervisor's memory samples, so it is never more frequent.
    pub purge_interval: Option<Duration>,
    /// A session whose browser tree grows past this PSS (MiB) while `WORKING` is restarted
    /// cleanly (its profile stays, so no QR); `None` never. Checked at every memory sample.
    pub memory_budget_mb: Option<u64>,
    /// Further flags, appended last (`--disable-features=`, `--enable-features=` and
    /// `--js-flags=` are merged into the engine's own).
    pub extra_args: Vec<String>,
    /// A cached WhatsApp Web `index.html` to serve instead of the live one, which pins the
    /// WhatsApp Web version (as whatsapp-web.js's `webVersionCache` does). `None` loads live.
    pub pinned_index_html: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            chromium: PathBuf::from("chromium"),
            wa_url: DEFAULT_WA_URL.to_string(),
            launch_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(10),
            heartbeat_interval: Some(Duration::from_secs(30)),
            user_agent: None,
            max_old_space_mb: None,
            disk_cache_dir: None,
            no_sandbox: None,
            trim_helpers: true,
            js_flags: DEFAULT_JS_FLAGS.iter().map(|s| s.to_string()).collect(),
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
            memory_budget_mb: None,
            extra_args: Vec::new(),
            pinned_index_html: None,
        }
    }
}

impl EngineConfig {
    /// Reads `WAFLEET_CHROMIUM` through `lookup` (a bare name is searched on `PATH`, also read
    /// through `lookup`); everything else keeps its default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut config = EngineConfig::default();
        if let Some(path) = lookup("WAFLEET_CHROMIUM").filter(|p| !p.trim().is_empty()) {
            config.chromium = PathBuf::from(path.trim());
        }
        if let Some(found) = resolve_executable(&config.chromium, lookup("PATH").as_deref()) {
            config.chromium = found;
        }
        config
    }

    /// Sets the WhatsApp Web URL.
    pub fn with_wa_url(mut self, url: impl Into<String>) -> Self {
        self.wa_url = url.into();
        self
    }
}

/// What one launch adds to the engine-wide flags.
#[derive(Debug, Clone, Default)]
pub struct LaunchFlags {
    /// `--user-agent=<ua>`: the browser, its workers and service workers all announce it (the
    /// page-level override alone would leave `HeadlessChrome` in workers).
    pub user_agent: Option<String>,
    /// A pinned document from a local or private-network WhatsApp Web URL: a document
    /// fulfilled through interception has no address, so Chromium's local network access checks
    /// would block its websocket to the simulator (not needed for the public WhatsApp Web).
    pub pinned_local: bool,
}

/// The Chromium flags for one session (without `--user-data-dir`, `--remote-debugging-port`,
/// `--headless` and `--disable-extensions`, which chromiumoxide adds from its own config).
pub fn chromium_args(config: &EngineConfig, no_sandbox: bool) -> Vec<String> {
    chromium_args_with(config, no_sandbox, &LaunchFlags::default())
}

/// [`chromium_args`] plus the flags of one launch.
pub fn chromium_args_with(
    config: &EngineConfig,
    no_sandbox: bool,
    launch: &LaunchFlags,
) -> Vec<String> {
    let mut args: Vec<String> = [
        // Nothing talks to Google's services: no update checks, field trials, safe-browsing
        // list downloads, component updates, sync, crash uploads or translation.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--disable-client-side-phishing-detection",
        "--disable-component-extensions-with-background-pages",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--metrics-recording-only",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-pings",
        "--password-store=basic",
        "--use-mock-keychain",
        // Density: no GPU process work (SwiftShader), /tmp instead of a small /dev/shm, no
        // audio, fewer features that start helper work.
        "--disable-gpu",
        "--disable-dev-shm-usage",
        // WhatsApp Web must keep its websocket and timers running although no one looks at it.
        "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows",
        "--disable-renderer-backgrounding",
        // whatsapp-web.js does the same: navigator.webdriver stays false.
        "--disable-blink-features=AutomationControlled",
        "--lang=en-US",
        // No default about:blank tab (a renderer for nothing): the engine opens its one page.
        "--no-startup-window",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if no_sandbox {
        // Only as root: Chromium refuses to start its sandbox as root (see docs/engine.md).
        args.push("--no-sandbox".to_string());
    }
    if let Some(dir) = &config.disk_cache_dir {
        args.push(format!("--disk-cache-dir={}", dir.display()));
    }
    if let Some(ua) = &launch.user_agent {
        args.push(format!("--user-agent={ua}"));
    }
    // Chromium honours only one --disable-features, --enable-features and --js-flags switch
    // (the last): merge the caller's lists into ours.
    let mut disabled: Vec<String> = DISABLED_FEATURES.iter().map(|s| s.to_string()).collect();
    let mut enabled: Vec<String> = Vec::new();
    let mut js: Vec<String> = Vec::new();
    if let Some(mb) = config.max_old_space_mb {
        js.push(format!("--max-old-space-size={mb}"));
    }
    js.extend(config.js_flags.iter().cloned());
    if config.trim_helpers {
        disabled.extend(TRIM_DISABLED_FEATURES.map(String::from));
        enabled.extend(TRIM_ENABLED_FEATURES.map(String::from));
        args.push("--in-process-gpu".to_string());
    }
    if launch.pinned_local {
        disabled
            .extend(["LocalNetworkAccessChecks", "PrivateNetworkAccessChecks"].map(String::from));
    }
    let list = |l: &str| {
        l.split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for arg in &config.extra_args {
        if let Some(l) = arg.strip_prefix("--disable-features=") {
            disabled.extend(list(l));
        } else if let Some(l) = arg.strip_prefix("--enable-features=") {
            enabled.extend(list(l));
        } else if let Some(flags) = arg.strip_prefix("--js-flags=") {
            js.extend(flags.split_whitespace().map(str::to_string));
        } else {
            args.push(arg.clone());
        }
    }
    args.push(format!("--disable-features={}", disabled.join(",")));
    if !enabled.is_empty() {
        args.push(format!("--enable-features={}", enabled.join(",")));
    }
    if !js.is_empty() {
        args.push(format!("--js-flags={}", js.join(" ")));
    }
    args
}

/// Features [`EngineConfig::trim_helpers`] switches off: the warm spare renderer (a second
/// renderer kept for a navigation that one WhatsApp page never makes), the audio service's own
/// process, and the browser UI's WebUI pieces, which headless Chromium otherwise renders in a
/// renderer of their own (`--top-chrome-webui`, ~45–75 MiB PSS; puppeteer disables them too).
const TRIM_DISABLED_FEATURES: [&str; 5] = [
    "SpareRendererForSitePerProcess",
    "AudioServiceOutOfProcess",
    "WebUIReloadButton",
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
];

/// Features [`EngineConfig::trim_helpers`] switches on: the network service as a browser thread.
const TRIM_ENABLED_FEATURES: [&str; 1] = ["NetworkServiceInProcess2"];

/// Features switched off for density (fewer background services and helper work).
const DISABLED_FEATURES: &[&str] = &[
    "Translate",
    "MediaRouter",
    "OptimizationHints",
    "AutofillServerCommunication",
    "InterestFeedContentSuggestions",
    "CalculateNativeWinOcclusion",
];

/// Finds `name` on `path_var` (a `PATH` value) when it is a bare name; a name with a `/` is
/// returned as is. `None` when a bare name is on no `PATH` entry.
pub fn resolve_executable(name: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.components().count() != 1 || name.is_absolute() {
        return Some(name.to_path_buf());
    }
    path_var?
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Whether this process runs as root (effective uid 0), read from `/proc/self/status` so no
/// `unsafe` libc call is needed.
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s))
        .is_some_and(|uid| uid == 0)
}

/// The effective uid from the text of `/proc/<pid>/status` (`Uid: real effective saved fs`).
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
}

/// Whether the sandbox must be disabled for this configuration.
pub fn resolve_no_sandbox(config: &EngineConfig) -> bool {
    config.no_sandbox.unwrap_or_else(running_as_root)
}

/// The profile directory of a session: `<data>/workspaces/<ws>/<session>/profile` (DESIGN §5).
pub fn profile_dir(
    data: &Path,
    workspace: &crate::ids::WorkspaceId,
    session: &crate::ids::SessionId,
) -> PathBuf {
    data.join("workspaces")
        .join(workspace.as_str())
        .join(session.as_str())
        .join("profile")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_safe_and_dense() {
        let config = EngineConfig {
            max_old_space_mb: Some(512),
            ..EngineConfig::default()
        };
        let args = chromium_args(&config, false);
        assert!(!args.iter().any(|a| a.contains("disable-web-security")));
        assert!(!args.iter().any(|a| a == "--no-sandbox"));
        for needed in [
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ] {
            assert!(args.iter().any(|a| a == needed), "{needed} missing");
        }
        assert!(
            args.contains(&"--js-flags=--max-old-space-size=512 --optimize-for-size".to_string())
        );
        assert!(chromium_args(&config, true).contains(&"--no-sandbox".to_string()));
        let config = EngineConfig {
            extra_args: vec!["--disable-features=Foo".into(), "--bar".into()],
            ..EngineConfig::default()
        };
        let args = chromium_args(&config, false);
        let features: Vec<_> = args
            .iter()
            .filter(|a| a.starts_with("--disable-features="))
            .collect();
        assert_eq!(features.len(), 1, "{args:?}");
        assert!(features[0].contains("Translate") && features[0].ends_with(",Foo"));
        assert!(args.contains(&"--bar".to_string()));
        let args = chromium_args_with(
            &config,
            false,
            &LaunchFlags {
                user_agent: Some("Mozilla/5.0 Chrome/131.0.0.0".into()),
                pinned_local: true,
            },
        );
        assert!(args.contains(&"--user-agent=Mozilla/5.0 Chrome/131.0.0.0".to_string()));
        let features: Vec<_> = args
            .iter()
            .filter(|a| a.starts_with("--disable-features="))
            .collect();
        assert_eq!(features.len(), 1, "{args:?}");
        assert!(features[0].contains("LocalNetworkAccessChecks,PrivateNetworkAccessChecks"));
    }

    #[test]
    fn trims_helpers_by_default_and_merges_every_list_switch() {
        let config = EngineConfig {
            max_old_space_mb: Some(512),
            js_flags: vec!["--optimize-for-size".into()],
            extra_args: vec![
                "--enable-features=Foo".into(),
                "--js-flags=--lite-mode".into(),
            ],
            ..EngineConfig::default()
        };
        let args = chromium_args(&config, true);
        let only = |prefix: &str| {
            let found: Vec<&String> = args.iter().filter(|a| a.starts_with(prefix)).collect();
            assert_eq!(found.len(), 1, "{prefix} in {args:?}");
            found[0].clone()
        };
        assert_eq!(
            only("--enable-features="),
            "--enable-features=NetworkServiceInProcess2,Foo"
        );
        assert_eq!(
            only("--js-flags="),
            "--js-flags=--max-old-space-size=512 --optimize-for-size --lite-mode"
        );
        let disabled = only("--disable-features=");
        assert!(disabled.contains("SpareRendererForSitePerProcess,AudioServiceOutOfProcess"));
        assert!(disabled.contains("WebUIReloadButton,WebUIOmniboxPopup,WebUIOmniboxAimPopup"));
        assert!(args.contains(&"--in-process-gpu".to_string()));
        // Measured a loser (renderers no longer share the zygote's pages): never added.
        assert!(!args.contains(&"--no-zygote".to_string()));

        let untrimmed = EngineConfig {
            trim_helpers: false,
            js_flags: Vec::new(),
            ..EngineConfig::default()
        };
        let args = chromium_args(&untrimmed, true);
        assert!(!args.iter().any(|a| a == "--in-process-gpu"
            || a.contains("WebUI")
            || a.starts_with("--enable-features=")
            || a.starts_with("--js-flags=")
            || a.contains("SpareRenderer")));
    }

    #[test]
    fn reads_chromium_from_lookup() {
        let config = EngineConfig::from_lookup(|k| {
            (k == "WAFLEET_CHROMIUM").then(|| "/opt/chromium".to_string())
        });
        assert_eq!(config.chromium, PathBuf::from("/opt/chromium"));
        assert_eq!(
            EngineConfig::from_lookup(|_| None).chromium,
            PathBuf::from("chromium")
        );
    }

    #[test]
    fn resolves_bare_names_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("mybrowser");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(
            resolve_executable(Path::new("mybrowser"), Some(&path)),
            Some(exe)
        );
        assert_eq!(resolve_executable(Path::new("other"), Some(&path)), None);
        assert_eq!(
            resolve_executable(Path::new("/opt/x"), None),
            Some(PathBuf::from("/opt/x"))
        );
    }

    #[test]
    fn parses_effective_uid() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name: x\n"), None);
    }
}
