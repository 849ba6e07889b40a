//! Tracing and metrics set-up shared by every command.
//!
//! Logs go to stderr through `tracing`, as text for people or JSON for machines
//! (`--log-format json`). Metrics are recorded with the `metrics` facade and rendered in the
//! Prometheus text format by whichever HTTP surface serves `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global tracing subscriber; `RUST_LOG` filters (default `info`).
///
/// Safe to call more than once: later calls are ignored, so tests may call it freely.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Buckets for latency histograms, in seconds: 1 ms to 60 s.
pub const LATENCY_BUCKETS_SECS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
///
/// The `metrics` facade has one global recorder per process; several servers in one test
/// process share it, which is why this is a `OnceLock` rather than a constructor.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS_SECS)
            .expect("the bucket list is a non-empty constant");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); keep rendering ours.
        let _ = metrics::set_global_recorder(recorder);
        describe_metrics();
        handle
    })
}

/// Gives every router, worker and engine metric its `# HELP` text (the webhook module describes
/// its own). Operators read these in Prometheus; `promtool check metrics` wants them.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "wafleet_router_requests_total",
        "Requests the router answered, by shard and HTTP status"
    );
    describe_histogram!(
        "wafleet_router_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from request to response headers at the router, by shard"
    );
    describe_gauge!(
        "wafleet_router_table_version",
        "Version of the shard map the router routes with"
    );
    describe_histogram!(
        "wafleet_router_resolve_duration_seconds",
        metrics::Unit::Seconds,
        "Time to resolve a shard's instances through Consul DNS"
    );
    describe_gauge!(
        "wafleet_router_shard_healthy",
        "1 when the shard has at least one healthy instance, else 0"
    );
    describe_counter!(
        "wafleet_router_map_rejected_total",
        "Shard maps read from Consul and refused (bad JSON or failed validation)"
    );
    describe_gauge!(
        "wafleet_worker_ready",
        "1 while the worker holds its shard lock and serves, else 0"
    );
    describe_gauge!(
        "wafleet_worker_workspaces",
        "Workspaces the worker currently runs"
    );
    describe_counter!(
        "wafleet_worker_fenced_total",
        "Times the worker fenced itself because its Consul session could not be renewed"
    );
    describe_gauge!("wafleet_sessions", "WhatsApp sessions by status");
    describe_gauge!(
        "wafleet_session_memory_bytes",
        metrics::Unit::Bytes,
        "PSS of a session's Chromium process tree"
    );
    describe_counter!(
        "wafleet_session_restarts_total",
        "Browser relaunches by the session watchdog"
    );
    describe_histogram!(
        "wafleet_qr_latency_seconds",
        metrics::Unit::Seconds,
        "Time from session start to its first QR code"
    );
    describe_histogram!(
        "wafleet_send_latency_seconds",
        metrics::Unit::Seconds,
        "Time the engine takes to hand one message to WhatsApp Web"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_metrics_carry_help_text() {
        let handle = prometheus();
        metrics::gauge!("wafleet_router_table_version").set(3.0);
        metrics::gauge!("wafleet_worker_workspaces", "shard" => "0").set(1.0);
        let text = handle.render();
        for name in ["wafleet_router_table_version", "wafleet_worker_workspaces"] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP line:\n{text}"
            );
        }
    }
}
