//! PURE: the invariant checkers. Each takes observations (already collected, with their
//! instants) and returns the violations with evidence. No I/O and no clock.
//!
//! Observations taken one after another are not one atomic instant, so the checkers that
//! compare several sources only report a violation that a *confirming* observation taken
//! afterwards still shows (see [`runners`] and [`duplicate_browsers`]); a race between two reads
//! can therefore not fail a run, while a real overlap that lasts longer than one sampling round
//! always does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::model::{Accepted, BrowserProc, Outcome, Received, SessionTable, Violation, WorkerSnap};

/// Invariant names (stable: they appear in the JSON report).
pub mod names {
    /// No error of any kind on workspaces the fault should not touch.
    pub const UNAFFECTED_NO_ERROR: &str = "unaffected_shards_see_no_error";
    /// At most one process runs a workspace, and only while holding its lock.
    pub const ONE_RUNNER: &str = "one_runner_and_lock_holder_per_workspace";
    /// At most one Chromium per profile directory.
    pub const ONE_CHROMIUM: &str = "one_chromium_per_profile";
    /// Every WORKING session is WORKING again, same phone, no QR shown.
    pub const SESSIONS_RESTORED: &str = "sessions_working_again_without_qr";
    /// Every 202-accepted message reaches the simulator or ends failed.
    pub const NO_MESSAGE_LOST: &str = "no_accepted_message_lost";
    /// Every webhook event is delivered at least once.
    pub const NO_WEBHOOK_LOST: &str = "no_webhook_lost";
    /// The fleet healed: every affected workspace answered 200 again before the deadline.
    pub const RECOVERED: &str = "recovered_before_deadline";
}

/// Requests on workspaces outside `affected`, within `[from_ms, to_ms]`, that did not succeed
/// or that showed a session out of `WORKING` (an unaffected session must keep working, not
/// only keep answering).
pub fn unaffected_errors(
    outcomes: &[Outcome],
    affected: &BTreeSet<String>,
    from_ms: u64,
    to_ms: u64,
) -> Vec<Violation> {
    outcomes
        .iter()
        .filter(|o| o.t_ms >= from_ms && o.t_ms <= to_ms)
        .filter(|o| !affected.contains(&o.ws) && o.impaired())
        .map(|o| Violation {
            invariant: names::UNAFFECTED_NO_ERROR.into(),
            t_ms: o.t_ms,
            what: if o.degraded() {
                format!(
                    "status read on unaffected workspace {} shows sessions {:?}",
                    o.ws, o.sessions
                )
            } else {
                format!(
                    "{:?} on unaffected workspace {} answered {} ({})",
                    o.kind,
                    o.ws,
                    o.status.map_or("no answer".into(), |s| s.to_string()),
                    o.error.as_deref().unwrap_or("-")
                )
            },
            evidence: json!({"request": o}),
        })
        .collect()
}

/// The outcomes without the requests that were in flight at `fault_ms` (sent before it,
/// answered at or after it) on a workspace of the faulted shards (`faulted`): the fault hit
/// those, so they belong to the faulted shard even though they were sent before the fault
/// window opened. Requests on other workspaces stay, whenever they were sent.
pub fn attribute_in_flight(
    outcomes: &[Outcome],
    fault_ms: u64,
    faulted: &BTreeSet<String>,
) -> Vec<Outcome> {
    outcomes
        .iter()
        .filter(|o| {
            let in_flight = o.t_ms < fault_ms && o.t_ms.saturating_add(o.latency_ms) >= fault_ms;
            !(in_flight && faulted.contains(&o.ws))
        })
        .cloned()
        .collect()
}

/// Compares two rounds of worker snapshots (`first`, then the KV locks `locks` read after it,
/// then `second` read after that) and reports:
/// * a workspace that two different worker processes may run in *both* rounds;
/// * a workspace a worker may run in both rounds (same session) while the lock read in between
///   is held by a *different* session.
///
/// `locks` maps a workspace to the session holding its lock (absent = free). A free lock under
/// a running workspace is not a violation here (the lock delay still protects it); see
/// [`runs_without_lock`].
pub fn runners(
    t_ms: u64,
    first: &[WorkerSnap],
    locks: &BTreeMap<String, String>,
    second: &[WorkerSnap],
) -> Vec<Violation> {
    let confirmed = confirmed_runners(first, second);
    let mut out = Vec::new();
    for (ws, procs) in &confirmed {
        if procs.len() > 1 {
            out.push(Violation {
                invariant: names::ONE_RUNNER.into(),
                t_ms,
                what: format!(
                    "workspace {ws} runs in {} worker processes at once (pids {:?})",
                    procs.len(),
                    procs.iter().map(|w| w.pid).collect::<Vec<_>>()
                ),
                evidence: json!({"workspace": ws, "workers": procs, "lock_holder": locks.get(ws)}),
            });
        }
        for w in procs {
            if let (Some(holder), Some(mine)) = (locks.get(ws), w.session.as_ref())
                && holder != mine
            {
                out.push(Violation {
                    invariant: names::ONE_RUNNER.into(),
                    t_ms,
                    what: format!(
                        "worker pid {} (shard {}) runs workspace {ws} while its lock is held by session {holder}",
                        w.pid, w.shard
                    ),
                    evidence: json!({"workspace": ws, "worker": w, "lock_holder": holder}),
                });
            }
        }
    }
    out
}

/// Workspaces confirmed running (in both rounds) without their lock held by anyone: allowed
/// only inside the fencing window, so it is counted and reported, not failed.
pub fn runs_without_lock(
    first: &[WorkerSnap],
    locks: &BTreeMap<String, String>,
    second: &[WorkerSnap],
) -> Vec<String> {
    confirmed_runners(first, second)
        .into_keys()
        .filter(|ws| !locks.contains_key(ws))
        .collect()
}

/// A workspace confirmed running with no lock holder for at least `grace`: the worker kept it
/// past its fencing deadline (a correct worker stops before its session can expire; a worker
/// that wakes up after its locks expired, e.g. after a freeze, must stop at once). Measured in
/// time, not in rounds: a round whose worker read hung (a frozen worker) is followed at once
/// by the next, so two rounds can be milliseconds apart. `since` keeps, per workspace, when it
/// was first seen so (continuously); each episode is reported once.
pub fn free_lock_too_long(
    t_ms: u64,
    grace_ms: u64,
    since: &mut BTreeMap<String, (u64, bool)>,
    now: &[String],
    workers: &[WorkerSnap],
) -> Vec<Violation> {
    since.retain(|ws, _| now.contains(ws));
    let mut out = Vec::new();
    for ws in now {
        let (first, reported) = since.entry(ws.clone()).or_insert((t_ms, false));
        if !*reported && t_ms.saturating_sub(*first) >= grace_ms {
            *reported = true;
            out.push(Violation {
                invariant: names::ONE_RUNNER.into(),
                t_ms,
                what: format!(
                    "workspace {ws} still runs with no lock holder {:.1}s after it was first seen so",
                    (t_ms - *first) as f64 / 1e3
                ),
                evidence: json!({
                    "workspace": ws,
                    "first_seen_ms": *first,
                    "workers": workers.iter().filter(|w| w.may_run.contains(ws)).collect::<Vec<_>>(),
                }),
            });
        }
    }
    out
}

/// How many (workspace, worker) pairs are confirmed running in both rounds: what the
/// runner checks actually looked at (0 = nothing to check).
pub fn runner_pairs(first: &[WorkerSnap], second: &[WorkerSnap]) -> usize {
    confirmed_runners(first, second)
        .values()
        .map(Vec::len)
        .sum()
}

/// Workspace → workers (from `second`) that may run it in both rounds with the same pid and
/// session.
fn confirmed_runners<'a>(
    first: &[WorkerSnap],
    second: &'a [WorkerSnap],
) -> BTreeMap<String, Vec<&'a WorkerSnap>> {
    let mut out: BTreeMap<String, Vec<&WorkerSnap>> = BTreeMap::new();
    for w2 in second {
        let Some(w1) = first
            .iter()
            .find(|w| w.pid == w2.pid && w.session == w2.session)
        else {
            continue;
        };
        for ws in &w2.may_run {
            if w1.may_run.contains(ws) {
                out.entry(ws.clone()).or_default().push(w2);
            }
        }
    }
    out
}

/// Worker processes whose own overlap counter grew between two snapshots.
pub fn overlap_growth(t_ms: u64, before: &[WorkerSnap], after: &[WorkerSnap]) -> Vec<Violation> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.pid == a.pid)?;
            (a.overlaps > b.overlaps).then(|| Violation {
                invariant: names::ONE_RUNNER.into(),
                t_ms,
                what: format!(
                    "worker pid {} (shard {}) detected another live process running one of its workspaces ({} → {} overlaps)",
                    a.pid, a.shard, b.overlaps, a.overlaps
                ),
                evidence: json!({"before": b, "after": a}),
            })
        })
        .collect()
}

/// Profiles with more than one browser main process in one `/proc` scan.
pub fn duplicate_browsers(procs: &[BrowserProc]) -> BTreeMap<String, Vec<BrowserProc>> {
    let mut by: BTreeMap<String, Vec<BrowserProc>> = BTreeMap::new();
    for p in procs {
        by.entry(normalise_profile(&p.profile))
            .or_default()
            .push(p.clone());
    }
    by.retain(|_, v| v.len() > 1);
    by
}

/// Duplicates present in two consecutive scans with at least two of the same processes (pid
/// and start time): two browsers that coexisted for a whole sampling interval.
pub fn persistent_duplicates(
    previous: &BTreeMap<String, Vec<BrowserProc>>,
    now: &BTreeMap<String, Vec<BrowserProc>>,
) -> BTreeMap<String, Vec<BrowserProc>> {
    now.iter()
        .filter_map(|(profile, procs)| {
            let before = previous.get(profile)?;
            let same: Vec<BrowserProc> = procs
                .iter()
                .filter(|p| before.contains(p))
                .cloned()
                .collect();
            (same.len() > 1).then(|| (profile.clone(), same))
        })
        .collect()
}

/// Turns confirmed duplicates (every process still alive, same start time, after the scan)
/// into violations.
pub fn browser_violations(
    t_ms: u64,
    confirmed: &BTreeMap<String, Vec<BrowserProc>>,
) -> Vec<Violation> {
    confirmed
        .iter()
        .map(|(profile, procs)| Violation {
            invariant: names::ONE_CHROMIUM.into(),
            t_ms,
            what: format!(
                "{} Chromium browser processes on profile {profile} (pids {:?})",
                procs.len(),
                procs.iter().map(|p| p.pid).collect::<Vec<_>>()
            ),
            evidence: json!({"profile": profile, "processes": procs}),
        })
        .collect()
}

/// `a/b/../b/` and `a/b` name the same profile.
fn normalise_profile(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Parses the NUL-separated `/proc/<pid>/cmdline` of a Chromium *browser* process (not a
/// renderer, GPU or utility child, which carry `--type=`) and returns its `--user-data-dir`.
pub fn browser_profile(cmdline: &[u8]) -> Option<String> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if args.iter().any(|a| a.starts_with(b"--type=")) {
        return None;
    }
    args.iter().find_map(|a| {
        a.strip_prefix(b"--user-data-dir=")
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Every session WORKING in `before` must be WORKING in `after` with the same `me`; and no
/// status read in `seen` may show such a session in `SCAN_QR_CODE` (a new QR).
pub fn sessions_restored(
    t_ms: u64,
    before: &SessionTable,
    after: &SessionTable,
    seen: &[Outcome],
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, b) in before.iter().filter(|(_, b)| b.status == "WORKING") {
        match after.get(key) {
            Some(a) if a.status == "WORKING" && a.me == b.me => {}
            other => out.push(Violation {
                invariant: names::SESSIONS_RESTORED.into(),
                t_ms,
                what: format!(
                    "session {}/{} was WORKING ({:?}) and is now {:?}",
                    key.0, key.1, b.me, other
                ),
                evidence: json!({"workspace": key.0, "session": key.1, "before": b, "after": other}),
            }),
        }
        if let Some(o) = seen.iter().find(|o| {
            o.ws == key.0
                && o.sessions
                    .iter()
                    .any(|(s, st)| s == &key.1 && st == "SCAN_QR_CODE")
        }) {
            out.push(Violation {
                invariant: names::SESSIONS_RESTORED.into(),
                t_ms: o.t_ms,
                what: format!(
                    "session {}/{} was WORKING and showed a new QR (SCAN_QR_CODE)",
                    key.0, key.1
                ),
                evidence: json!({"request": o}),
            });
        }
    }
    out
}

/// The fate of accepted messages.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct MessageTally {
    /// Accepted with 202.
    pub accepted: usize,
    /// Reached the simulator.
    pub delivered: usize,
    /// Reached the simulator more than `delay_ms` after acceptance.
    pub delayed: usize,
    /// Ended `failed` (with a reason) without reaching the simulator.
    pub failed: usize,
    /// Neither: lost.
    pub lost: usize,
}

/// Classifies accepted messages: `delivered_at` maps the unique text to when the simulator
/// first listed it; `failed` holds the ids whose status is `failed`.
pub fn messages(
    t_ms: u64,
    accepted: &[Accepted],
    delivered_at: &BTreeMap<String, u64>,
    failed: &BTreeSet<String>,
    delay_ms: u64,
) -> (MessageTally, Vec<Violation>) {
    let mut tally = MessageTally {
        accepted: accepted.len(),
        ..MessageTally::default()
    };
    let mut out = Vec::new();
    for a in accepted {
        if let Some(at) = delivered_at.get(&a.text) {
            tally.delivered += 1;
            if at.saturating_sub(a.t_ms) > delay_ms {
                tally.delayed += 1;
            }
        } else if failed.contains(&a.id) {
            tally.failed += 1;
        } else {
            tally.lost += 1;
            out.push(Violation {
                invariant: names::NO_MESSAGE_LOST.into(),
                t_ms,
                what: format!(
                    "message {} accepted at t={}ms on {}/{} never reached the simulator and is not failed",
                    a.id, a.t_ms, a.ws, a.session
                ),
                evidence: json!({"accepted": a}),
            });
        }
    }
    (tally, out)
}

/// The fate of expected webhook events.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct WebhookTally {
    /// Events expected.
    pub expected: usize,
    /// Delivered at least once.
    pub delivered: usize,
    /// Delivered, but only after the receiver came back (or after more than `delay_ms`).
    pub delayed: usize,
    /// Delivered more than once (allowed: at-least-once).
    pub duplicated: usize,
    /// Never delivered.
    pub lost: usize,
}

/// For every accepted message, a `message.sent`/`message.ack`/`message.failed` webhook must
/// arrive (matched by message id in the payload).
pub fn webhooks(
    t_ms: u64,
    accepted: &[Accepted],
    received: &[Received],
    delay_ms: u64,
) -> (WebhookTally, Vec<Violation>) {
    let mut tally = WebhookTally {
        expected: accepted.len(),
        ..WebhookTally::default()
    };
    let mut out = Vec::new();
    for a in accepted {
        let got: Vec<&Received> = received
            .iter()
            .filter(|r| r.message_id.as_deref() == Some(a.id.as_str()))
            .collect();
        match got.iter().map(|r| r.t_ms).min() {
            Some(first) => {
                tally.delivered += 1;
                if first.saturating_sub(a.t_ms) > delay_ms {
                    tally.delayed += 1;
                }
                if got.iter().any(|r| r.deliveries > 1) {
                    tally.duplicated += 1;
                }
            }
            None => {
                tally.lost += 1;
                out.push(Violation {
                    invariant: names::NO_WEBHOOK_LOST.into(),
                    t_ms,
                    what: format!(
                        "no message webhook ever arrived for message {} ({}/{})",
                        a.id, a.ws, a.session
                    ),
                    evidence: json!({"accepted": a}),
                });
            }
        }
    }
    (tally, out)
}

#[cfg(test)]
mod tests;
