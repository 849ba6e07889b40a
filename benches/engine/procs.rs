//! Processes of the engine bench: the `wafleet` children it starts (simulator, `wafleet dev`),
//! and the Chromium process trees it measures and cleans up, found through `/proc`.
//!
//! A session's browser is found by its profile: the *root* of a tree is a process whose command
//! line names a path under the bench's temporary directory (`--user-data-dir=…`, or the crash
//! handler's `--database=…`) while its parent's does not. Its PSS is the sum over the root and
//! every descendant ([`wafleet::engine::memory::process_tree_pss`]), never RSS.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wafleet::engine::memory::{process_tree, process_tree_pss};

/// The `wafleet` binary built with this bench.
pub fn wafleet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wafleet")
}

/// A `wafleet` child that printed its JSON readiness line; SIGKILLed when dropped unless
/// [`Wafleet::stop`] ended it first.
pub struct Wafleet {
    child: Child,
    /// The readiness line.
    pub ready: serde_json::Value,
}

impl Wafleet {
    /// Starts `wafleet <args>` (stderr to `log`) and waits up to `timeout` for a stdout line
    /// with `"ready": true`.
    pub async fn spawn(
        args: &[String],
        envs: &[(&str, &str)],
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Wafleet> {
        let file = std::fs::File::create(log)?;
        let mut cmd = Command::new(wafleet_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .env("RUST_LOG", "warn");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["ready"] == true
                {
                    return Ok(v);
                }
            }
            anyhow::bail!("exited before its readiness line (see {})", log.display())
        })
        .await
        .map_err(|_| anyhow::anyhow!("not ready within {timeout:?} (see {})", log.display()))??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Wafleet { child, ready })
    }

    /// A string field of the readiness line.
    pub fn field(&self, key: &str) -> anyhow::Result<String> {
        self.ready[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("readiness line has no {key}: {}", self.ready))
    }

    /// SIGTERM, then up to `grace` for a clean exit (a worker closes its browsers), then SIGKILL.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Every process's command line, NUL-separated arguments joined by spaces.
fn cmdlines() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| wafleet::engine::memory::parse_stat_ppid(&s))
        else {
            continue;
        };
        let line = raw
            .split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        out.push((pid, ppid, line));
    }
    out
}

/// Roots of the process trees whose command lines mention `marker` (a temporary directory):
/// processes that mention it with a parent that does not.
pub fn roots(marker: &str) -> Vec<u32> {
    // The bench's own `wafleet` children mention the directory too (`--data …`) but are not
    // browsers: a browser whose parent is the worker is a root.
    let marked: std::collections::HashMap<u32, u32> = cmdlines()
        .into_iter()
        .filter(|(_, _, line)| line.contains(marker) && !line.contains(wafleet_bin()))
        .map(|(pid, ppid, _)| (pid, ppid))
        .collect();
    let mut roots: Vec<u32> = marked
        .iter()
        .filter(|(_, ppid)| !marked.contains_key(ppid))
        .map(|(pid, _)| *pid)
        .collect();
    roots.sort_unstable();
    roots
}

/// What the trees under `marker` use right now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// PSS in bytes, summed over every process of every tree.
    pub pss: u64,
    /// Processes in all trees.
    pub processes: usize,
    /// Trees (browsers, plus any crash handler that left its browser's tree).
    pub trees: usize,
}

/// Sums PSS and processes over the trees under `marker`.
pub fn usage(marker: &str) -> Usage {
    let mut u = Usage::default();
    for root in roots(marker) {
        if let Ok(Some(pss)) = process_tree_pss(root) {
            u.pss += pss;
            u.processes += process_tree(root).map(|t| t.len()).unwrap_or(0);
            u.trees += 1;
        }
    }
    u
}

/// Waits until the PSS under `marker` is steady (the spread of the last three samples, 0.5 s
/// apart, within 1 %) or `timeout` passes, and returns the median of those samples. Pages keep
/// allocating for a moment after login (sync, GC), so a single sample would be arbitrary.
pub async fn settled_usage(marker: &str, timeout: Duration) -> Usage {
    let deadline = Instant::now() + timeout;
    let mut last: Vec<Usage> = Vec::new();
    loop {
        let m = marker.to_owned();
        let u = tokio::task::spawn_blocking(move || usage(&m))
            .await
            .unwrap_or_default();
        last.push(u);
        if last.len() > 3 {
            last.remove(0);
        }
        if last.len() == 3 {
            let lo = last.iter().map(|u| u.pss).min().unwrap_or(0);
            let hi = last.iter().map(|u| u.pss).max().unwrap_or(0);
            if hi > 0 && (hi - lo) * 100 <= hi || Instant::now() >= deadline {
                let mut sorted = last.clone();
                sorted.sort_by_key(|u| u.pss);
                return sorted[1];
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SIGKILLs every tree under `marker` (the bench's own browsers and leftovers of a stopped
/// fleet) and waits up to 10 s until none is left.
pub async fn kill_trees(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let roots = roots(marker);
        if roots.is_empty() {
            return;
        }
        let mut pids = Vec::new();
        for root in roots {
            pids.extend(process_tree(root).unwrap_or_default());
        }
        let args: Vec<String> = pids
            .iter()
            .filter(|p| **p > 1)
            .map(u32::to_string)
            .collect();
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .args(&args)
            .stderr(Stdio::null())
            .status();
        if Instant::now() >= deadline {
            eprintln!("warning: processes under {marker} survived kill -9: {args:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line per process under `marker`: its `--type=` (or `browser`) and its PSS, for
/// `WAFLEET_BENCH_DETAIL=1` (where a session's memory goes).
pub fn detail(marker: &str) -> String {
    let mut out = String::new();
    for root in roots(marker) {
        for pid in process_tree(root).unwrap_or_default() {
            let line = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .unwrap_or_default();
            let kind = line
                .split_whitespace()
                .find_map(|a| a.strip_prefix("--type="))
                .map(|t| {
                    let sub = line
                        .split_whitespace()
                        .find_map(|a| a.strip_prefix("--utility-sub-type="))
                        .unwrap_or("");
                    // Renderers that are not a page's: extensions, WebUI, PDF.
                    let tags: Vec<&str> = line
                        .split_whitespace()
                        .filter(|a| {
                            [
                                "--extension-process",
                                "--top-chrome-webui",
                                "--pdf-renderer",
                                "--renderer-sub-type",
                            ]
                            .iter()
                            .any(|m| a.starts_with(m))
                        })
                        .collect();
                    format!("{t} {sub} {}", tags.join(" "))
                })
                .unwrap_or_else(|| line.split_whitespace().next().unwrap_or("?").to_string());
            let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|t| wafleet::engine::memory::parse_smaps_rollup_pss(&t))
                .unwrap_or(0);
            out.push_str(&format!(
                "    {pid:>7} {:>7.1} MiB  {kind}\n",
                pss as f64 / 1048576.0
            ));
        }
    }
    out
}
