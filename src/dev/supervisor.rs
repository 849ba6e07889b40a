//! One supervised child process of `wafleet dev`: spawn, wait for the readiness line, report,
//! restart after a back-off when it dies, stop cleanly (SIGTERM, grace, SIGKILL) on request.
//!
//! A child's listen flags are *pinned* after its first readiness line: a child started on
//! port 0 is restarted on the port it got the first time, so the addresses in `state.json`,
//! `CONSUL_HTTP_ADDR` and the Consul catalog stay valid across restarts.
//!
//! Signals are sent with `kill(1)`: the library forbids `unsafe`, and tokio's `Child` only
//! sends SIGKILL.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::state::{HEALTHY_AFTER_SECS, restart_delay};
use crate::shutdown::{CancellationToken, TaskTracker};

/// Texts that mean "this build does not have that subcommand yet": the stubs' message, and
/// clap's answer when the stub does not know the flags yet.
pub const NOT_BUILT_MARKERS: &[&str] = &[
    "being built",
    "unexpected argument",
    "unrecognized subcommand",
];

/// How to run one child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Its name in logs, events and `state.json` (`consul`, `router`, `sim`, `worker-0`).
    pub name: String,
    /// Arguments after the binary.
    pub args: Vec<String>,
    /// Extra environment.
    pub envs: Vec<(String, String)>,
    /// `(flag, readiness key)`: after the first readiness line, the flag's value becomes that
    /// address, so restarts keep their ports.
    pub pin: Vec<(String, String)>,
    /// Its stderr log file (appended across restarts).
    pub log: PathBuf,
    /// How long to wait for the readiness line before killing and restarting it.
    pub ready_timeout: Duration,
    /// How long a SIGTERM may take before SIGKILL.
    pub stop_grace: Duration,
    /// When the subcommand answers "being built", skip it instead of restarting it.
    pub optional: bool,
}

/// What a supervisor reports.
#[derive(Debug, Clone)]
pub enum ChildEvent {
    /// The child printed its readiness line.
    Ready {
        /// Child name.
        name: String,
        /// Its pid.
        pid: u32,
        /// The readiness line.
        ready: Value,
    },
    /// The child was (re)started and has this pid (not ready yet).
    Started {
        /// Child name.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// The child exited (it will be restarted unless stopping).
    Exited {
        /// Child name.
        name: String,
        /// Exit status as text.
        status: String,
    },
    /// An optional child is not available in this build; it is not restarted.
    Skipped {
        /// Child name.
        name: String,
    },
}

/// Starts supervising `spec` through `tracker`. `stop` stops the child cleanly and ends the
/// supervision.
pub fn supervise(
    exe: PathBuf,
    spec: ChildSpec,
    events: mpsc::UnboundedSender<ChildEvent>,
    stop: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(run(exe, spec, events, stop, tracker.clone()));
}

fn pin_args(args: &mut [String], pin: &[(String, String)], ready: &Value) {
    for (flag, key) in pin {
        let Some(addr) = ready.get(key).and_then(Value::as_str) else {
            continue;
        };
        if let Some(i) = args.iter().position(|a| a == flag)
            && let Some(v) = args.get_mut(i + 1)
        {
            *v = addr.to_owned();
        }
    }
}

async fn log_since(path: &PathBuf, offset: u64) -> String {
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return String::new();
    };
    if f.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return String::new();
    }
    let mut s = String::new();
    let _ = f.read_to_string(&mut s).await;
    s
}

/// SIGTERM, wait `grace`, then SIGKILL.
pub async fn terminate(child: &mut Child, name: &str, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(_) => tracing::info!(child = name, "stopped"),
        Err(_) => {
            tracing::warn!(child = name, ?grace, "did not stop in time; SIGKILL");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

async fn run(
    exe: PathBuf,
    mut spec: ChildSpec,
    events: mpsc::UnboundedSender<ChildEvent>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let name = spec.name.clone();
    let mut first = true;
    let mut consecutive = 0u32;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let offset = tokio::fs::metadata(&spec.log)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log);
        let stderr = match log {
            Ok(f) => Stdio::from(f),
            Err(e) => {
                tracing::warn!(child = %name, error = %e, "cannot open log file; child stderr discarded");
                Stdio::null()
            }
        };
        let mut cmd = Command::new(&exe);
        cmd.args(&spec.args)
            .envs(spec.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(child = %name, error = %e, "cannot spawn");
                tokio::select! {
                    _ = tokio::time::sleep(restart_delay(consecutive)) => {}
                    _ = stop.cancelled() => return,
                }
                consecutive = consecutive.saturating_add(1);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        tracing::info!(child = %name, pid, "started");
        let _ = events.send(ChildEvent::Started {
            name: name.clone(),
            pid,
        });
        let mut lines = child.stdout.take().map(|s| BufReader::new(s).lines());

        // Wait for the readiness line (or exit, timeout, stop).
        let ready = async {
            let lines = lines.as_mut()?;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v.get("ready") == Some(&Value::Bool(true))
                {
                    return Some(v);
                }
            }
            None
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(spec.ready_timeout, ready) => Some(r),
            _ = stop.cancelled() => None,
        };
        let became_ready = match outcome {
            None => {
                terminate(&mut child, &name, spec.stop_grace).await;
                return;
            }
            Some(Ok(Some(v))) => {
                tracing::info!(child = %name, pid, ready = %v, "ready");
                if first {
                    pin_args(&mut spec.args, &spec.pin, &v);
                }
                let _ = events.send(ChildEvent::Ready {
                    name: name.clone(),
                    pid,
                    ready: v,
                });
                true
            }
            Some(Ok(None)) => false,
            Some(Err(_)) => {
                tracing::warn!(child = %name, timeout = ?spec.ready_timeout, "not ready in time; restarting it");
                let _ = child.start_kill();
                false
            }
        };
        if became_ready && let Some(mut lines) = lines.take() {
            // Keep reading stdout so the child never blocks on a full pipe.
            // It ends when the child's stdout closes, i.e. when the child exits.
            tracker.spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
        let status = tokio::select! {
            s = child.wait() => s,
            _ = stop.cancelled() => {
                terminate(&mut child, &name, spec.stop_grace).await;
                return;
            }
        };
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if !became_ready && first && spec.optional {
            let text = log_since(&spec.log, offset).await;
            if NOT_BUILT_MARKERS.iter().any(|m| text.contains(m)) {
                tracing::warn!(child = %name, "this build does not have it yet (\"being built\"); skipping");
                let _ = events.send(ChildEvent::Skipped { name });
                return;
            }
        }
        tracing::warn!(child = %name, pid, %status, "exited; restarting");
        let _ = events.send(ChildEvent::Exited {
            name: name.clone(),
            status,
        });
        if became_ready {
            first = false;
        }
        consecutive = if started.elapsed() >= Duration::from_secs(HEALTHY_AFTER_SECS) {
            0
        } else {
            consecutive.saturating_add(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(restart_delay(consecutive.saturating_sub(1))) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_replaces_listen_flags_with_bound_addresses() {
        let mut args: Vec<String> = [
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "127.0.0.1:0",
            "--shard",
            "1",
        ]
        .map(String::from)
        .to_vec();
        let pin = vec![
            ("--listen".to_owned(), "http".to_owned()),
            ("--advertise".to_owned(), "http".to_owned()),
        ];
        pin_args(
            &mut args,
            &pin,
            &serde_json::json!({"ready": true, "http": "127.0.0.1:4242"}),
        );
        assert_eq!(args[2], "127.0.0.1:4242");
        assert_eq!(args[4], "127.0.0.1:4242");
        assert_eq!(args[6], "1");
    }
}
