//! The engine bench's figures and their Markdown tables (what docs/benchmarks.md quotes).

use std::fmt::Write;
use std::time::Duration;

use super::procs::Usage;

const MIB: f64 = 1024.0 * 1024.0;

/// One memory measurement: `sessions` linked sessions of one side or lever.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    /// Side or lever.
    pub name: String,
    /// Simulator page ballast in MiB.
    pub ballast: u32,
    /// Linked sessions.
    pub sessions: usize,
    /// Their browsers' usage.
    pub usage: Usage,
}

impl MemoryRow {
    /// A row.
    pub fn new(name: &str, ballast: u32, sessions: usize, usage: Usage) -> MemoryRow {
        MemoryRow {
            name: name.to_owned(),
            ballast,
            sessions,
            usage,
        }
    }

    /// PSS per session in MiB.
    pub fn per_session_mib(&self) -> f64 {
        self.usage.pss as f64 / MIB / self.sessions.max(1) as f64
    }

    fn processes_per_session(&self) -> f64 {
        self.usage.processes as f64 / self.sessions.max(1) as f64
    }
}

/// A one-line summary for the progress log.
pub fn describe(u: Usage, sessions: usize) -> String {
    format!(
        "{:.1} MiB PSS per session, {} processes in {} trees",
        u.pss as f64 / MIB / sessions.max(1) as f64,
        u.processes,
        u.trees
    )
}

/// Latency samples of one page run.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Create→QR available through the router.
    pub qr: Vec<Duration>,
    /// Send through the router→the simulator's receipt.
    pub send: Vec<Duration>,
}

/// The nearest-rank percentile `q` (0..=1) of `samples`, in milliseconds.
pub fn percentile_ms(samples: &[Duration], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1].as_secs_f64() * 1e3)
}

/// Everything one bench run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// The wafleet worker and the baseline at every count.
    pub memory: Vec<MemoryRow>,
    /// The levers at the lever count.
    pub levers: Vec<MemoryRow>,
    /// Latency per page ballast.
    pub latency: Vec<(u32, Latency)>,
    /// Levers that could not be measured, and why.
    pub failures: Vec<String>,
}

const BASELINE: &str = "whatsapp-web.js baseline";

impl Report {
    fn baseline(&self, ballast: u32, sessions: usize) -> Option<f64> {
        self.memory
            .iter()
            .find(|r| r.name == BASELINE && r.ballast == ballast && r.sessions == sessions)
            .map(MemoryRow::per_session_mib)
    }

    /// The Markdown tables.
    pub fn markdown(&self, counts: &[usize], lever_sessions: usize) -> String {
        let mut s = String::new();
        if !self.latency.is_empty() {
            let _ = writeln!(s, "### Latency through the router\n");
            let _ = writeln!(s, "| page | what | samples | p50 | p99 |");
            let _ = writeln!(s, "|---|---|---:|---:|---:|");
            for (ballast, l) in &self.latency {
                for (what, samples) in [("create → QR", &l.qr), ("send → receipt", &l.send)] {
                    let p = |q| {
                        percentile_ms(samples, q).map_or("–".into(), |v| format!("{v:.0} ms"))
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {what} | {} | {} | {} |",
                        page(*ballast),
                        samples.len(),
                        p(0.5),
                        p(0.99)
                    );
                }
            }
            s.push('\n');
        }
        if !self.memory.is_empty() {
            let _ = writeln!(s, "### PSS per linked session\n");
            let _ = writeln!(
                s,
                "| page | side | sessions | PSS / session | processes / session | vs baseline |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
            let mut rows = self.memory.clone();
            rows.sort_by(|a, b| {
                (a.ballast, a.sessions, a.name != BASELINE).cmp(&(
                    b.ballast,
                    b.sessions,
                    b.name != BASELINE,
                ))
            });
            for r in rows.iter().filter(|r| counts.contains(&r.sessions)) {
                self.row(&mut s, r);
            }
            s.push('\n');
        }
        if !self.levers.is_empty() {
            let _ = writeln!(s, "### Density levers at {lever_sessions} sessions\n");
            let _ = writeln!(
                s,
                "| page | lever | sessions | PSS / session | processes / session | vs baseline |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
            for r in &self.levers {
                self.row(&mut s, r);
            }
        }
        for f in &self.failures {
            let _ = writeln!(s, "\nNot measured: {f}");
        }
        s
    }

    fn row(&self, s: &mut String, r: &MemoryRow) {
        let ratio = self
            .baseline(r.ballast, r.sessions)
            .map_or("–".into(), |b| format!("{:.2}×", r.per_session_mib() / b));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} MiB | {:.1} | {} |",
            page(r.ballast),
            r.name,
            r.sessions,
            r.per_session_mib(),
            r.processes_per_session(),
            ratio
        );
    }
}

fn page(ballast: u32) -> String {
    if ballast == 0 {
        "plain".into()
    } else {
        format!("{ballast} MiB ballast")
    }
}
