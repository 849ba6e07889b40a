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
