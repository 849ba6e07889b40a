//! The browser guard: a small companion process that kills a worker's browsers when the worker
//! stops answering (issue 13, item 10).
//!
//! Why a separate process: a worker frozen past its TTL (SIGSTOP, a stuck process) cannot
//! stop anything itself, and its Chromium children are separate processes that keep running
//! — on a profile that a replacement on another host may open once Consul has given it the
//! lock. Every thread of the worker stops with it, so the watchdog must live outside it.
//!
//! How: the worker starts `wafleet browser-guard --parent <pid> --timeout-ms <ms>` (its own
//! executable) with a pipe on its stdin, and a dedicated thread of the worker writes one
//! heartbeat line every [`HEARTBEAT_DIVISOR`]th of the timeout, listing its live browsers as
//! `pid:starttime` pairs. The guard
//! * kills every listed browser (and every child of the worker whose command line has a
//!   `--user-data-dir=`, i.e. a browser launched after the last heartbeat) when no heartbeat
//!   came for the timeout (TTL/3: well inside the fencing deadline, so the browsers are gone
//!   long before anyone else can get the workspace locks), then keeps waiting: a worker that
//!   wakes fences by itself and starts over;
//! * kills the listed browsers that are still alive when the pipe closes (the worker died:
//!   kill -9, OOM) and exits.
//!
//! A listed pid is killed only while its start time is still the listed one, so a pid reused
//! by another process is never touched.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::owner::start_time_of;

/// Heartbeats per timeout.
pub const HEARTBEAT_DIVISOR: u32 = 5;

/// Why the guard could not be started.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// Spawning the guard process failed.
    #[error("cannot start the browser guard {exe}: {source}")]
    Spawn {
        /// The executable.
        exe: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The worker's side: the guard process and the heartbeat thread. Dropping it stops the
/// heartbeats and closes the pipe (the guard then exits).
pub struct BrowserGuard {
    child: Child,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for BrowserGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserGuard")
            .field("pid", &self.child.id())
            .finish()
    }
}

impl BrowserGuard {
    /// Starts the guard (`exe browser-guard --parent <this pid> --timeout-ms <timeout>`)
    /// and the heartbeat thread, which lists `browsers()` in every beat.
    pub fn spawn(
        exe: &std::path::Path,
        timeout: Duration,
        browsers: impl Fn() -> Vec<(u32, u64)> + Send + 'static,
    ) -> Result<BrowserGuard, GuardError> {
        let mut child = Command::new(exe)
            .arg("browser-guard")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--timeout-ms")
            .arg(timeout.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| GuardError::Spawn {
                exe: exe.display().to_string(),
                source,
            })?;
        let stdin = child.stdin.take();
        let stop = Arc::new(AtomicBool::new(false));
        let every = timeout / HEARTBEAT_DIVISOR;
        let stopped = stop.clone();
        if let Some(stdin) = stdin {
            std::thread::Builder::new()
                .name("browser-guard-heartbeat".into())
                .spawn(move || heartbeat(stdin, every, &stopped, browsers))
                .map_err(|source| GuardError::Spawn {
                    exe: "heartbeat thread".into(),
                    source,
                })?;
        }
        tracing::info!(
            guard_pid = child.id(),
            timeout_ms = timeout.as_millis() as u64,
            "browser guard started"
        );
        Ok(BrowserGuard { child, stop })
    }
}

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        // The heartbeat thread drops the pipe within one interval; the guard then exits. Reap
        // it without blocking the caller for long.
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.try_wait();
    }
}

/// One heartbeat line: `pid:start pid:start …\n` (an empty list is an empty line).
pub fn beat_line(browsers: &[(u32, u64)]) -> String {
    let mut line = browsers
        .iter()
        .map(|(p, t)| format!("{p}:{t}"))
        .collect::<Vec<_>>()
        .join(" ");
    line.push('\n');
    line
}

/// Parses a heartbeat line; malformed pairs are skipped.
pub fn parse_beat(line: &str) -> Vec<(u32, u64)> {
    line.split_whitespace()
        .filter_map(|pair| {
            let (p, t) = pair.split_once(':')?;
            Some((p.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

fn heartbeat(
    mut stdin: ChildStdin,
    every: Duration,
    stop: &AtomicBool,
    browsers: impl Fn() -> Vec<(u32, u64)>,
) {
    let mut failed = false;
    while !stop.load(Ordering::Relaxed) {
        let line = beat_line(&browsers());
        match stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            Ok(()) => failed = false,
            Err(e) => {
                if !failed {
                    tracing::error!(error = %e, "browser guard heartbeat failed (guard gone?); browsers are no longer guarded against a freeze");
                    failed = true;
                }
            }
        }
        std::thread::sleep(every);
    }
}

/// Arguments of the hidden `wafleet browser-guard` (started by the worker, not by people).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The worker's pid (its browsers are its children).
    #[arg(long)]
    pub parent: u32,
    /// Kill the browsers after this long without a heartbeat, milliseconds.
    #[arg(long)]
    pub timeout_ms: u64,
}

/// `wafleet browser-guard`: runs the guard on a blocking thread until the worker's pipe closes.
pub async fn run(args: Args) -> Result<(), std::io::Error> {
    let timeout = Duration::from_millis(args.timeout_ms.max(100));
    tokio::task::spawn_blocking(move || run_guard(args.parent, timeout))
        .await
        .map_err(std::io::Error::other)
}

/// The guard process: runs until the worker's pipe closes. See the module docs.
pub fn run_guard(parent: u32, timeout: Duration) {
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    let mut listed: Vec<(u32, u64)> = Vec::new();
    let mut fired = false;
    loop {
        match rx.recv_timeout(timeout) {
            Ok(Some(line)) => {
                if fired {
                    tracing::warn!(
                        worker_pid = parent,
                        "worker heartbeats again after a freeze"
                    );
                    fired = false;
                }
                listed = parse_beat(&line);
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let n = kill_listed(&listed);
                if n > 0 {
                    tracing::warn!(
                        worker_pid = parent,
                        killed = n,
                        "worker gone; killed the browsers it left"
                    );
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if fired {
                    continue;
                }
                fired = true;
                let mut n = kill_listed(&listed);
                for pid in browser_children(parent) {
                    super::engine_host::kill_tree(pid);
                    n += 1;
                }
                listed.clear();
                tracing::error!(
                    worker_pid = parent,
                    timeout_ms = timeout.as_millis() as u64,
                    killed = n,
                    "GUARD: no heartbeat from the worker (frozen?); killed its browsers"
                );
            }
        }
    }
}

/// Kills the listed browsers whose pid still has the listed start time; how many.
fn kill_listed(listed: &[(u32, u64)]) -> usize {
    let mut n = 0;
    for (pid, start) in listed {
        if start_time_of(*pid) == Some(*start) {
            super::engine_host::kill_tree(*pid);
            n += 1;
        }
    }
    n
}

/// Children of `parent` whose command line has a `--user-data-dir=` argument (browsers).
pub fn browser_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline
            .split(|b| *b == 0)
            .any(|a| a.starts_with(b"--user-data-dir="))
        {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_round_trip_and_skip_garbage() {
        let list = vec![(10, 200), (11, 300)];
        assert_eq!(beat_line(&list), "10:200 11:300\n");
        assert_eq!(parse_beat(&beat_line(&list)), list);
        assert_eq!(parse_beat("\n"), vec![]);
        assert_eq!(parse_beat("x:1 5:y 7:8"), vec![(7, 8)]);
    }

    #[test]
    fn only_a_pid_with_its_listed_start_time_is_killed() {
        // A live process listed with the wrong start time (a reused pid) is left alone.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let start = start_time_of(pid).unwrap();
        assert_eq!(kill_listed(&[(pid, start + 1)]), 0);
        assert!(child.try_wait().unwrap().is_none());
        assert_eq!(kill_listed(&[(pid, start)]), 1);
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
