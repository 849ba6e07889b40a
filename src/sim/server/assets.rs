//! The page's files: index.html and the WhatsApp-Web-like bundles, each served for one web
//! version (its placeholders filled: version, missing modules and members, legacy build), with
//! the slow-load fault holding a bundle back.
//!
//! Apart from `server.rs` because it is what the page downloads, not what it says.

use super::*;

pub(super) const INDEX_HTML: &str = include_str!("../../../assets/sim/index.html");
pub(super) const PHONE_HTML: &str = include_str!("../../../assets/sim/phone.html");
pub(super) const RUNTIME_JS: &str = include_str!("../../../assets/sim/wa-runtime.js");
pub(super) const MODELS_JS: &str = include_str!("../../../assets/sim/wa-models.js");
pub(super) const MODULES_JS: &str = include_str!("../../../assets/sim/wa-modules.js");
pub(super) const CHAT_JS: &str = include_str!("../../../assets/sim/wa-chat.js");
pub(super) const MEDIA_JS: &str = include_str!("../../../assets/sim/wa-media.js");
pub(super) const CHATS_JS: &str = include_str!("../../../assets/sim/wa-chats.js");
pub(super) const ACTIONS_JS: &str = include_str!("../../../assets/sim/wa-actions.js");
pub(super) const EVENTS_JS: &str = include_str!("../../../assets/sim/wa-events.js");
pub(super) const GROUPS_JS: &str = include_str!("../../../assets/sim/wa-groups.js");
pub(super) const APP_JS: &str = include_str!("../../../assets/sim/wa-app.js");
/// Stands for the web version in the assets; replaced when they are served.
pub(super) const VERSION_PLACEHOLDER: &str = "__SIM_WEB_VERSION__";
/// Stand for the JSON lists of the `missing_modules` / `missing_members` faults in the runtime.
pub(super) const MISSING_MODULES_PLACEHOLDER: &str = "__SIM_MISSING_MODULES__";
pub(super) const MISSING_MEMBERS_PLACEHOLDER: &str = "__SIM_MISSING_MEMBERS__";
/// Stands for whether the runtime is a July-2025 build (fault `legacy_build`).
pub(super) const LEGACY_PLACEHOLDER: &str = "__SIM_LEGACY_BUILD__";

/// The text of an asset as served for one web version: every bundle of a version carries that
/// version (the page's `Debug.VERSION`, the URLs index.html references). `version` is
/// validated (digits, dots, a lower-case tag), so it is safe in HTML, JS and URLs.
pub(super) fn for_version(template: &str, version: &str) -> String {
    template.replace(VERSION_PLACEHOLDER, version)
}

pub(super) fn asset(body: impl Into<String>, content_type: &'static str) -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(body.into().into());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    // Every load must reach the server so the slow-load fault and new builds always apply.
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

pub(super) async fn static_chunk(
    name: String,
    query: HashMap<String, String>,
    shared: Arc<Shared>,
) -> Result<warp::reply::Response, Rejection> {
    // `?v=<version>` picks the bundles of that version (any version ever served); without it,
    // the live one.
    let version = shared.with(|sim, _| match query.get("v") {
        Some(v) => sim.web_versions().is_known(v).then(|| v.clone()),
        None => Some(sim.web_versions().live.clone()),
    });
    let Some(version) = version else {
        return Err(warp::reject::not_found());
    };
    let runtime = || {
        let missing = lock(&shared.missing).clone();
        for_version(RUNTIME_JS, &version)
            .replace(
                MISSING_MODULES_PLACEHOLDER,
                &serde_json::to_string(&missing.modules).unwrap_or_else(|_| "[]".into()),
            )
            .replace(
                MISSING_MEMBERS_PLACEHOLDER,
                &serde_json::to_string(&missing.members).unwrap_or_else(|_| "[]".into()),
            )
            .replace(
                LEGACY_PLACEHOLDER,
                if missing.legacy { "true" } else { "false" },
            )
    };
    let body: String = match name.as_str() {
        "wa-config.js" => shared.page_config.clone(),
        "wa-runtime.js" => runtime(),
        "wa-models.js" => for_version(MODELS_JS, &version),
        "wa-modules.js" => for_version(MODULES_JS, &version),
        "wa-chat.js" => for_version(CHAT_JS, &version),
        "wa-media.js" => for_version(MEDIA_JS, &version),
        "wa-chats.js" => for_version(CHATS_JS, &version),
        "wa-actions.js" => for_version(ACTIONS_JS, &version),
        "wa-events.js" => for_version(EVENTS_JS, &version),
        "wa-groups.js" => for_version(GROUPS_JS, &version),
        "wa-app.js" => for_version(APP_JS, &version),
        _ => return Err(warp::reject::not_found()),
    };
    // Registered before reading the setting, so a clear that lands in between still wakes us.
    let released = shared.release_loads.notified();
    let delay = *lock(&shared.slow_load_ms);
    if delay > 0 {
        // The fault itself: hold the chunk back so the page's modules appear late. Lowering or
        // clearing the fault releases the requests already held.
        let _held = HeldLoad::new(&shared.held_loads);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
            _ = released => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    Ok(asset(body, "text/javascript; charset=utf-8"))
}

/// Counts a held chunk request for as long as it lives.
struct HeldLoad<'a>(&'a AtomicUsize);

impl<'a> HeldLoad<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        HeldLoad(counter)
    }
}

impl Drop for HeldLoad<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
