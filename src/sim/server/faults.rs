//! `POST /sim/faults` and `GET /sim/faults`: validated, then applied all at once.

use super::*;
use crate::sim::state::media::DownloadFault;

/// The current fault settings; the optional ones appear only while set.
pub(super) fn fault_settings(shared: &Shared) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    out.insert("slow_load_ms".into(), (*lock(&shared.slow_load_ms)).into());
    out.insert(
        "held_loads".into(),
        shared.held_loads.load(Ordering::SeqCst).into(),
    );
    let missing = lock(&shared.missing).clone();
    if !missing.modules.is_empty() {
        out.insert("missing_modules".into(), missing.modules.into());
    }
    if !missing.members.is_empty() {
        out.insert("missing_members".into(), missing.members.into());
    }
    if missing.legacy {
        out.insert("legacy_build".into(), true.into());
    }
    let (sync, upload_fail, passkey, usync_error) = shared.with(|sim, _| {
        (
            sim.sync_delay_override(),
            sim.upload_fail(),
            sim.passkey_fault(),
            sim.usync_error(),
        )
    });
    if let Some(code) = usync_error {
        out.insert("usync_error".into(), code.into());
    }
    if let Some(f) = shared.with(|sim, _| sim.download_fault()) {
        let name = match f {
            DownloadFault::Fail => "fail",
            DownloadFault::Expired => "expired",
        };
        out.insert("media_download".into(), name.into());
    }
    if let Some(ms) = sync {
        out.insert("sync_delay_ms".into(), ms.into());
    }
    if upload_fail {
        out.insert("upload_fail".into(), true.into());
    }
    if let Some(p) = passkey {
        let name = match p {
            PasskeyFault::Linking => "linking",
            PasskeyFault::Checkpoint => "checkpoint",
        };
        out.insert("passkey".into(), name.into());
    }
    out
}

fn dedup(mut list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    list.retain(|n| seen.insert(n.clone()));
    list
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultsReq {
    #[serde(default)]
    slow_load_ms: Option<u64>,
    #[serde(default)]
    drop_socket: Option<String>,
    #[serde(default)]
    refuse_ms: Option<u64>,
    #[serde(default)]
    crash: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    clear: Option<bool>,
    #[serde(default)]
    missing_modules: Option<Vec<String>>,
    #[serde(default)]
    missing_members: Option<Vec<String>>,
    #[serde(default)]
    sync_delay_ms: Option<u64>,
    #[serde(default)]
    rotate_adv: Option<bool>,
    #[serde(default)]
    legacy_build: Option<bool>,
    #[serde(default)]
    upload_fail: Option<bool>,
    #[serde(default)]
    passkey: Option<String>,
    #[serde(default)]
    usync_error: Option<u16>,
    /// `"fail"` (500), `"expired"` (410) or `"off"`: how media downloads fail.
    #[serde(default)]
    media_download: Option<String>,
}

/// Most names a `missing_*` fault takes.
pub const MAX_MISSING_NAMES: usize = 100;
/// Upper bound of the sync-delay fault.
pub const MAX_SYNC_DELAY_MS: u64 = 3_600_000;

/// A module name as WhatsApp Web spells them: a letter, then letters, digits or `_`, ≤ 100.
fn valid_module_name(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `Module.member[.member…]`, members being JS identifiers, ≤ 200 characters.
fn valid_member_path(s: &str) -> bool {
    let mut parts = s.split('.');
    let module_ok = parts.next().is_some_and(valid_module_name);
    let members: Vec<&str> = parts.collect();
    s.len() <= 200
        && module_ok
        && !members.is_empty()
        && members.iter().all(|m| {
            !m.is_empty()
                && !m.as_bytes()[0].is_ascii_digit()
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        })
}

pub(super) fn apply_faults(req: FaultsReq, shared: &Shared) -> warp::reply::Response {
    // Validate everything before applying anything, so a 400 changes nothing.
    if req.slow_load_ms.is_some_and(|ms| ms > MAX_SLOW_LOAD_MS) {
        return ApiError::bad_request(
            "invalid_fault",
            format!("slow_load_ms is at most {MAX_SLOW_LOAD_MS}"),
        )
        .into_response();
    }
    if req.refuse_ms.is_some_and(|ms| ms > MAX_REFUSE_MS) {
        return ApiError::bad_request(
            "invalid_fault",
            format!("refuse_ms is at most {MAX_REFUSE_MS}"),
        )
        .into_response();
    }
    if req.refuse_ms.is_some() && req.drop_socket.is_none() {
        return ApiError::bad_request("invalid_fault", "refuse_ms goes with drop_socket")
            .into_response();
    }
    if req.mode.is_some() && req.crash.is_none() {
        return ApiError::bad_request("invalid_fault", "mode goes with crash").into_response();
    }
    if req.sync_delay_ms.is_some_and(|ms| ms > MAX_SYNC_DELAY_MS) {
        return ApiError::bad_request(
            "invalid_fault",
            format!("sync_delay_ms is at most {MAX_SYNC_DELAY_MS}"),
        )
        .into_response();
    }
    for (list, valid, what) in [
        (
            &req.missing_modules,
            valid_module_name as fn(&str) -> bool,
            "missing_modules takes module names like WAWebCmd",
        ),
        (
            &req.missing_members,
            valid_member_path as fn(&str) -> bool,
            "missing_members takes names like WAWebCmd.Cmd or WAWebCmd.Cmd.refreshQR",
        ),
    ] {
        if let Some(list) = list
            && (list.len() > MAX_MISSING_NAMES || !list.iter().all(|n| valid(n)))
        {
            {
                return ApiError::bad_request(
                    "invalid_fault",
                    format!("{what} (at most {MAX_MISSING_NAMES})"),
                )
                .into_response();
            }
        }
    }
    let passkey = match req.passkey.as_deref() {
        None => None,
        Some("linking") => Some(Some(PasskeyFault::Linking)),
        Some("checkpoint") => Some(Some(PasskeyFault::Checkpoint)),
        Some("off") => Some(None),
        Some(_) => {
            return ApiError::bad_request(
                "invalid_fault",
                "passkey is \"linking\", \"checkpoint\" or \"off\"",
            )
            .into_response();
        }
    };
    let media_download = match req.media_download.as_deref() {
        None => None,
        Some("fail") => Some(Some(DownloadFault::Fail)),
        Some("expired") => Some(Some(DownloadFault::Expired)),
        Some("off") => Some(None),
        Some(_) => {
            return ApiError::bad_request(
                "invalid_fault",
                "media_download is \"fail\", \"expired\" or \"off\"",
            )
            .into_response();
        }
    };
    if req
        .usync_error
        .is_some_and(|c| c != 0 && !(400..=599).contains(&c))
    {
        return ApiError::bad_request(
            "invalid_fault",
            "usync_error is a status code from 400 to 599, or 0 for off",
        )
        .into_response();
    }
    if req.slow_load_ms.is_none()
        && req.usync_error.is_none()
        && req.drop_socket.is_none()
        && req.legacy_build.is_none()
        && req.upload_fail.is_none()
        && media_download.is_none()
        && passkey.is_none()
        && req.crash.is_none()
        && req.missing_modules.is_none()
        && req.missing_members.is_none()
        && req.sync_delay_ms.is_none()
        && req.rotate_adv != Some(true)
        && req.clear != Some(true)
    {
        return ApiError::bad_request(
            "invalid_fault",
            "give slow_load_ms, drop_socket, crash, missing_modules, missing_members, \
             sync_delay_ms, rotate_adv, legacy_build, upload_fail, media_download, passkey, usync_error or clear",
        )
        .into_response();
    }
    for phone in [&req.drop_socket, &req.crash].into_iter().flatten() {
        if !crate::sim::state::valid_phone(phone) {
            return ApiError::bad_request("invalid_phone", "phone must be 5 to 20 digits")
                .into_response();
        }
    }
    if req.clear == Some(true) {
        *lock(&shared.slow_load_ms) = 0;
        *lock(&shared.missing) = MissingSurface::default();
        shared.with(|sim, _| {
            sim.clear_refusals();
            sim.set_sync_delay_override(None);
            sim.set_upload_fail(false);
            sim.set_passkey_fault(None);
            sim.set_usync_error(None);
            sim.set_download_fault(None);
        });
        shared.release_loads.notify_waiters();
    }
    if let Some(list) = req.missing_modules {
        lock(&shared.missing).modules = dedup(list);
    }
    if let Some(list) = req.missing_members {
        lock(&shared.missing).members = dedup(list);
    }
    if let Some(ms) = req.sync_delay_ms {
        shared.with(|sim, _| sim.set_sync_delay_override(Some(ms)));
    }
    if let Some(on) = req.legacy_build {
        lock(&shared.missing).legacy = on;
    }
    if let Some(on) = req.upload_fail {
        shared.with(|sim, _| sim.set_upload_fail(on));
    }
    if let Some(f) = media_download {
        shared.with(|sim, _| sim.set_download_fault(f));
    }
    if let Some(f) = passkey {
        shared.with(|sim, _| sim.set_passkey_fault(f));
    }
    if let Some(code) = req.usync_error {
        shared.with(|sim, _| sim.set_usync_error((code != 0).then_some(code)));
    }
    if let Some(ms) = req.slow_load_ms {
        let mut current = lock(&shared.slow_load_ms);
        let lowered = ms < *current;
        *current = ms;
        drop(current);
        if lowered {
            shared.release_loads.notify_waiters();
        }
    }
    let mut out = fault_settings(shared);
    if req.rotate_adv == Some(true) {
        let n = shared.with(|sim, now| sim.rotate_adv_secrets(now));
        out.insert("rotated".into(), n.into());
    }
    if let Some(phone) = &req.drop_socket {
        let refuse = req.refuse_ms.unwrap_or(0);
        match shared.with(|sim, now| sim.drop_socket(phone, refuse, now)) {
            Ok(n) => {
                out.insert("dropped".into(), n.into());
            }
            Err(e) => return phone_error(e).into_response(),
        }
    }
    if let Some(phone) = &req.crash {
        let mode = req.mode.as_deref().unwrap_or("hang");
        match shared.with(|sim, _| sim.crash(phone, mode)) {
            Ok(n) => {
                out.insert("crashed".into(), n.into());
            }
            Err(e) => return phone_error(e).into_response(),
        }
    }
    warp::reply::json(&out).into_response()
}
