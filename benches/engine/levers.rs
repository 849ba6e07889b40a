//! The density levers the bench measures (docs/density-research.md §6 ranks them): the engine's
//! command line before the helper trimming plus one lever's flags, or the trimmed command line
//! plus a V8 flag, a purge, or several sessions per browser (on top of the engine's defaults):
//! in browser contexts (in memory) or in on-disk profiles (which must survive kill -9).

use super::direct::{Layout, engine_args, profiles_args};

/// Every lever, in the order they are measured.
pub const ALL: &[&str] = &[
    "untrimmed",
    "spare-off",
    "webui-off",
    "gpu-in-process",
    "network-in-process",
    "audio-in-process",
    "no-zygote",
    "trimmed",
    "trimmed-no-zygote",
    "v8-optimize-for-size",
    "v8-lite-mode",
    "v8-small-semi-space",
    "purge",
    "v8-size-purge",
    "single-process",
    "contexts",
    "profiles",
];

/// How one lever launches its sessions.
pub struct Lever {
    /// Chromium's command line.
    pub args: Vec<String>,
    /// Browsers per session.
    pub layout: Layout,
    /// Measure again after a CDP purge of every page.
    pub purge: bool,
}

/// The lever called `name` (one of [`ALL`]).
pub fn lever(name: &str) -> Lever {
    // One lever on the command line of before the trimming.
    let alone = |flag: &str| (vec![flag.to_string()], false);
    // The engine's default (trimmed) command line, plus `flags`.
    let trimmed = |flags: &[&str]| (flags.iter().map(|s| s.to_string()).collect(), true);
    let (layout, purge) = match name {
        "contexts" => (Layout::Contexts, false),
        "profiles" => (Layout::Profiles, false),
        "purge" | "v8-size-purge" => (Layout::NewTarget, true),
        _ => (Layout::NewTarget, false),
    };
    let (extra, trim): (Vec<String>, bool) = match name {
        "untrimmed" => (Vec::new(), false),
        "spare-off" => alone("--disable-features=SpareRendererForSitePerProcess"),
        "webui-off" => {
            alone("--disable-features=WebUIReloadButton,WebUIOmniboxPopup,WebUIOmniboxAimPopup")
        }
        "gpu-in-process" => alone("--in-process-gpu"),
        "network-in-process" => alone("--enable-features=NetworkServiceInProcess2"),
        "audio-in-process" => alone("--disable-features=AudioServiceOutOfProcess"),
        // Chromium refuses --no-zygote with the sandbox on; the bench runs without it as root.
        "no-zygote" => alone("--no-zygote"),
        "trimmed" | "purge" => trimmed(&[]),
        // The engine's defaults (trimmed, --optimize-for-size; the periodic purge with "purge").
        "v8-size-purge" | "contexts" | "profiles" => trimmed(&["--js-flags=--optimize-for-size"]),
        "trimmed-no-zygote" => trimmed(&["--no-zygote"]),
        "v8-optimize-for-size" => trimmed(&["--js-flags=--optimize-for-size"]),
        "v8-lite-mode" => trimmed(&["--js-flags=--lite-mode"]),
        "v8-small-semi-space" => trimmed(&["--js-flags=--max-semi-space-size=1"]),
        "single-process" => trimmed(&["--single-process"]),
        other => unreachable!("unknown lever {other} (checked against ALL)"),
    };
    let args = engine_args(&extra, trim);
    Lever {
        args: if layout == Layout::Profiles {
            profiles_args(&args)
        } else {
            args
        },
        layout,
        purge,
    }
}
