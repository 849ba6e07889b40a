//! The engine's Prometheus metrics (names fixed in COMMON.md: alerts and dashboards use them).
//!
//! Recorded through the `metrics` facade; whichever HTTP surface serves `/metrics` renders them.

use std::time::Duration;

use super::state::Status;

/// Gauge of sessions by status (`status` = STOPPED/STARTING/SCAN_QR_CODE/WORKING/FAILED).
pub const SESSIONS: &str = "wafleet_sessions";
/// Gauge of a session's Chromium process tree PSS in bytes (`workspace`, `session`).
pub const SESSION_MEMORY_BYTES: &str = "wafleet_session_memory_bytes";
/// Counter of browser relaunches done by the supervisor (watchdog, crash, restart command).
pub const SESSION_RESTARTS_TOTAL: &str = "wafleet_session_restarts_total";
/// Histogram: from launch to the first QR, in seconds.
pub const QR_LATENCY_SECONDS: &str = "wafleet_qr_latency_seconds";
/// Histogram: from a send call to WhatsApp Web accepting the message, in seconds.
pub const SEND_LATENCY_SECONDS: &str = "wafleet_send_latency_seconds";

/// Gauge: 1 while WhatsApp Web lacks `module`.`member` that the adapter needs (an
/// `unsupported` report on this worker), 0 once a session reaches WORKING again.
pub const WA_SURFACE_MISSING: &str = "wafleet_wa_surface_missing";

/// The `(module, member)` pairs currently flagged missing, so that a WORKING session can reset
/// exactly those to 0 (a gauge that never goes back would keep the alert firing forever).
static MISSING: std::sync::Mutex<std::collections::BTreeSet<(String, String)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Gives the engine's own metrics their `# HELP` text (telemetry describes the older ones).
pub fn describe() {
    metrics::describe_gauge!(
        WA_SURFACE_MISSING,
        "1 while WhatsApp Web lacks a module member the page adapter needs (sessions FAIL with unsupported_wa_web)"
    );
}

/// Records the missing names of an `unsupported` report (`module.member`, split at the first
/// `.`).
pub fn surface_missing(names: &[String]) {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(describe);
    let mut set = MISSING.lock().unwrap_or_else(|e| e.into_inner());
    for name in names {
        let (module, member) = super::events::split_missing(name);
        metrics::gauge!(WA_SURFACE_MISSING, "module" => module.to_string(), "member" => member.to_string())
            .set(1.0);
        set.insert((module.to_string(), member.to_string()));
    }
}

/// A session reached WORKING: the adapter found everything it needs in the WhatsApp Web this
/// worker runs now, so every flagged name goes back to 0.
pub fn surface_complete() {
    let mut set = MISSING.lock().unwrap_or_else(|e| e.into_inner());
    for (module, member) in std::mem::take(&mut *set) {
        metrics::gauge!(WA_SURFACE_MISSING, "module" => module, "member" => member).set(0.0);
    }
}

/// Moves one session from `from` to `to` in the status gauge (`None` = not counted).
pub fn status_moved(from: Option<Status>, to: Option<Status>) {
    if from == to {
        return;
    }
    if let Some(s) = from {
        metrics::gauge!(SESSIONS, "status" => s.as_str()).decrement(1.0);
    }
    if let Some(s) = to {
        metrics::gauge!(SESSIONS, "status" => s.as_str()).increment(1.0);
    }
}

/// Records a session's memory.
pub fn session_memory(workspace: &str, session: &str, bytes: u64) {
    metrics::gauge!(SESSION_MEMORY_BYTES, "workspace" => workspace.to_string(), "session" => session.to_string())
        .set(bytes as f64);
}

/// Counts one relaunch.
pub fn restarted() {
    metrics::counter!(SESSION_RESTARTS_TOTAL).increment(1);
}

/// Records the time to the first QR.
pub fn qr_latency(elapsed: Duration) {
    metrics::histogram!(QR_LATENCY_SECONDS).record(elapsed.as_secs_f64());
}

/// Records a send's latency.
pub fn send_latency(elapsed: Duration) {
    metrics::histogram!(SEND_LATENCY_SECONDS).record(elapsed.as_secs_f64());
}
