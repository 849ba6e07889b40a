//! PURE: per-scenario measures computed from the request outcomes (blast radius, time to
//! detect, time to recover, errors by shard) and the report document with its text table.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::check::{MessageTally, WebhookTally};
use crate::model::{InvariantResult, Outcome};

/// What one scenario measured from the request outcomes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Measures {
    /// Requests sent in the window.
    pub requests: usize,
    /// Failed requests in the window.
    pub errors: usize,
    /// Failed requests on affected workspaces.
    pub errors_affected: usize,
    /// Failed requests on unaffected workspaces (must be 0).
    pub errors_unaffected: usize,
    /// Failed requests by the workspace's owner shard (before the fault).
    pub errors_by_shard: BTreeMap<u32, usize>,
    /// Failed requests by HTTP status (`"none"` for transport errors).
    pub errors_by_status: BTreeMap<String, usize>,
    /// Successful status reads on affected workspaces showing a session not `WORKING`.
    pub degraded_affected: usize,
    /// The same on unaffected workspaces (must be 0).
    pub degraded_unaffected: usize,
    /// Workspaces that saw at least one error or degraded read.
    pub workspaces_with_errors: usize,
    /// Workspaces the fault should affect.
    pub workspaces_affected: usize,
    /// All workspaces.
    pub workspaces: usize,
    /// `workspaces_with_errors / workspaces`.
    pub blast_radius: f64,
    /// Fault → first failed or degraded request on an affected workspace (`None`: nobody saw
    /// anything).
    pub detect_ms: Option<u64>,
    /// Fault → the last affected workspace answered 200 with every session WORKING after its
    /// last error or degraded read (`Some(0)` when nothing was impaired; `None` when some never
    /// recovered).
    pub recover_ms: Option<u64>,
    /// Workspaces that were impaired and had no successful WORKING read afterwards.
    pub not_recovered: Vec<String>,
    /// Fault → first router sample reporting a targeted shard without a healthy instance
    /// (`None`: the router never did, e.g. the shard came back before its next resolve).
    pub router_detect_ms: Option<u64>,
}

/// Fault → the first sample (`(t_ms, unhealthy shards)`) in `[fault_ms, end_ms]` showing one of
/// `shards` unhealthy.
pub fn router_detect(
    samples: &[(u64, Vec<u32>)],
    shards: &[u32],
    fault_ms: u64,
    end_ms: u64,
) -> Option<u64> {
    samples
        .iter()
        .filter(|(t, _)| *t >= fault_ms && *t <= end_ms)
        .find(|(_, u)| u.iter().any(|k| shards.contains(k)))
        .map(|(t, _)| t - fault_ms)
}

/// Computes [`Measures`] over outcomes in `[fault_ms, end_ms]`.
pub fn measure(
    outcomes: &[Outcome],
    workspaces: &[String],
    owner: &BTreeMap<String, u32>,
    affected: &BTreeSet<String>,
    fault_ms: u64,
    end_ms: u64,
) -> Measures {
    let window: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.t_ms >= fault_ms && o.t_ms <= end_ms)
        .collect();
    let mut m = Measures {
        requests: window.len(),
        workspaces: workspaces.len(),
        workspaces_affected: affected.len(),
        ..Measures::default()
    };
    let mut with_errors: BTreeSet<&str> = BTreeSet::new();
    let mut last_error: BTreeMap<&str, u64> = BTreeMap::new();
    for o in window.iter().filter(|o| o.impaired()) {
        with_errors.insert(&o.ws);
        let targeted = affected.contains(&o.ws);
        if targeted {
            m.detect_ms = Some(m.detect_ms.map_or(o.t_ms, |d| d.min(o.t_ms)));
        }
        if o.degraded() {
            if targeted {
                m.degraded_affected += 1;
            } else {
                m.degraded_unaffected += 1;
            }
        } else {
            m.errors += 1;
            if targeted {
                m.errors_affected += 1;
            } else {
                m.errors_unaffected += 1;
            }
            if let Some(k) = owner.get(&o.ws) {
                *m.errors_by_shard.entry(*k).or_default() += 1;
            }
            let key = o.status.map_or("none".to_owned(), |s| s.to_string());
            *m.errors_by_status.entry(key).or_default() += 1;
        }
        let e = last_error.entry(&o.ws).or_default();
        *e = (*e).max(o.t_ms);
    }
    m.detect_ms = m.detect_ms.map(|t| t - fault_ms);
    m.workspaces_with_errors = with_errors.len();
    m.blast_radius = if workspaces.is_empty() {
        0.0
    } else {
        with_errors.len() as f64 / workspaces.len() as f64
    };
    let mut recovered_at = fault_ms;
    for (ws, last) in &last_error {
        let back = window
            .iter()
            .filter(|o| o.ws == *ws && o.t_ms > *last && o.ok_working())
            .map(|o| o.t_ms + o.latency_ms)
            .min();
        match back {
            Some(t) => recovered_at = recovered_at.max(t),
            None => m.not_recovered.push((*ws).to_owned()),
        }
    }
    m.recover_ms = m.not_recovered.is_empty().then(|| recovered_at - fault_ms);
    m
}

/// One scenario in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// What it did, in one line (which worker, which pid, which session).
    pub action: String,
    /// Whether every invariant held and the fleet recovered.
    pub passed: bool,
    /// Shards the fault targets.
    pub affected_shards: Vec<u32>,
    /// Fault instant, ms since run start.
    pub fault_ms: u64,
    /// End of the observation window, ms since run start.
    pub end_ms: u64,
    /// Request measures.
    pub measures: Measures,
    /// Accepted messages (None: sends not supported).
    pub messages: Option<MessageTally>,
    /// Webhooks (None: webhooks not wired).
    pub webhooks: Option<WebhookTally>,
    /// Invariants and their results.
    pub invariants: Vec<InvariantResult>,
    /// Why a scenario was skipped (the fleet cannot run it yet).
    pub skipped: Option<String>,
    /// Extra notes (e.g. workspaces seen running with a free lock inside the fencing window).
    pub notes: Vec<String>,
}

impl ScenarioReport {
    /// A scenario that did not run, and why.
    pub fn skipped(name: &str, why: String) -> Self {
        Self {
            name: name.into(),
            action: String::new(),
            passed: true,
            affected_shards: Vec::new(),
            fault_ms: 0,
            end_ms: 0,
            measures: Measures::default(),
            messages: None,
            webhooks: None,
            invariants: Vec::new(),
            skipped: Some(why),
            notes: Vec::new(),
        }
    }
}

/// The whole report (`target/chaos/report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// UTC start time (RFC 3339-ish, seconds).
    pub started_at: String,
    /// Fleet configuration and detected capabilities.
    pub fleet: serde_json::Value,
    /// Per scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// Every scenario passed.
    pub passed: bool,
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}s", v as f64 / 1000.0))
}

/// The human-readable table (Markdown, so docs/chaos.md can show it as is).
pub fn table(r: &Report) -> String {
    let mut s = String::from(
        "| scenario | result | blast radius | detect (client / router) | recover | errors affected / unaffected | not-WORKING reads affected / unaffected | requests | messages delayed/lost | webhooks delayed/lost | invariants checked / vacuous or n.a. |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for sc in &r.scenarios {
        if let Some(why) = &sc.skipped {
            s.push_str(&format!(
                "| {} | skipped | - | - | - | - | - | - | - | - | {} |\n",
                sc.name,
                why.replace('|', "/")
            ));
            continue;
        }
        let m = &sc.measures;
        let checked = sc
            .invariants
            .iter()
            .filter(|i| i.status == crate::model::CheckStatus::Checked)
            .count();
        let na = sc.invariants.len() - checked;
        let msgs = sc.messages.as_ref().map_or("n/a".into(), |t| {
            format!("{}/{} of {}", t.delayed, t.lost, t.accepted)
        });
        let hooks = sc.webhooks.as_ref().map_or("n/a".into(), |t| {
            format!("{}/{} of {}", t.delayed, t.lost, t.expected)
        });
        s.push_str(&format!(
            "| {} | {} | {:.0}% ({}/{}, targeted {}) | {} / {} | {} | {} / {} | {} / {} | {} | {} | {} | {} / {} |\n",
            sc.name,
            if sc.passed { "PASS" } else { "FAIL" },
            m.blast_radius * 100.0,
            m.workspaces_with_errors,
            m.workspaces,
            m.workspaces_affected,
            ms(m.detect_ms),
            ms(m.router_detect_ms),
            ms(m.recover_ms),
            m.errors_affected,
            m.errors_unaffected,
            m.degraded_affected,
            m.degraded_unaffected,
            m.requests,
            msgs,
            hooks,
            checked,
            na
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn o(t: u64, ws: &str, status: Option<u16>) -> Outcome {
        Outcome {
            t_ms: t,
            latency_ms: 2,
            ws: ws.into(),
            kind: Kind::Status,
            status,
            error: None,
            shard: None,
            sessions: vec![("default".into(), "WORKING".into())],
        }
    }

    fn setup() -> (Vec<String>, BTreeMap<String, u32>, BTreeSet<String>) {
        let ws: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| (*s).into()).collect();
        let owner: BTreeMap<String, u32> = [("a", 0), ("b", 0), ("c", 1), ("d", 2)]
            .iter()
            .map(|(w, k)| ((*w).into(), *k))
            .collect();
        let affected: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
        (ws, owner, affected)
    }

    #[test]
    fn blast_radius_detect_and_recover() {
        let (ws, owner, affected) = setup();
        let out = vec![
            o(900, "a", Some(503)), // before the fault: ignored
            o(1000, "c", Some(200)),
            o(1100, "a", Some(503)),
            o(1200, "b", None),
            o(1300, "a", Some(200)),
            o(1400, "b", Some(503)),
            o(1500, "a", Some(200)),
            o(1900, "b", Some(200)),
            o(2000, "d", Some(200)),
        ];
        let m = measure(&out, &ws, &owner, &affected, 1000, 3000);
        assert_eq!(m.requests, 8);
        assert_eq!(m.errors, 3);
        assert_eq!((m.errors_affected, m.errors_unaffected), (3, 0));
        assert_eq!(m.workspaces_with_errors, 2);
        assert!((m.blast_radius - 0.5).abs() < 1e-9);
        assert_eq!(m.detect_ms, Some(100));
        // b's last error at 1400, back at 1900 (+2 ms latency).
        assert_eq!(m.recover_ms, Some(902));
        assert_eq!(m.errors_by_shard[&0], 3);
        assert_eq!(m.errors_by_status["none"], 1);
        assert_eq!(m.errors_by_status["503"], 2);
    }

    #[test]
    fn no_errors_means_zero_recovery_and_no_detection() {
        let (ws, owner, affected) = setup();
        let out = vec![o(1000, "a", Some(200)), o(1100, "c", Some(200))];
        let m = measure(&out, &ws, &owner, &affected, 1000, 3000);
        assert_eq!(m.detect_ms, None);
        assert_eq!(m.recover_ms, Some(0));
        assert_eq!(m.blast_radius, 0.0);
    }

    #[test]
    fn never_recovered_and_not_working_reads_do_not_count_as_recovery() {
        let (ws, owner, affected) = setup();
        let mut starting = o(1500, "a", Some(200));
        starting.sessions = vec![("default".into(), "STARTING".into())];
        let out = vec![o(1100, "a", Some(503)), starting, o(1200, "c", Some(500))];
        let m = measure(&out, &ws, &owner, &affected, 1000, 3000);
        assert_eq!(m.recover_ms, None);
        assert_eq!(m.not_recovered, ["a".to_owned(), "c".to_owned()]);
        assert_eq!(m.errors_unaffected, 1);
    }

    #[test]
    fn a_session_out_of_working_is_detected_and_recovered_like_an_error() {
        // A crashed browser: the API keeps answering 200, the session is STARTING a while.
        let (ws, owner, affected) = setup();
        let degraded = |t, w: &str, st: &str| {
            let mut x = o(t, w, Some(200));
            x.sessions = vec![("default".into(), st.into())];
            x
        };
        let out = vec![
            o(1100, "a", Some(200)),
            degraded(1300, "a", "STARTING"),
            degraded(1600, "a", "STARTING"),
            o(2100, "a", Some(200)),
            degraded(2200, "c", "FAILED"),
            o(2500, "c", Some(200)),
        ];
        let m = measure(&out, &ws, &owner, &affected, 1000, 3000);
        assert_eq!(
            (m.errors, m.degraded_affected, m.degraded_unaffected),
            (0, 2, 1)
        );
        assert_eq!(m.detect_ms, Some(300));
        assert_eq!(m.workspaces_with_errors, 2);
        // c (unaffected) was last impaired at 2200 and back at 2500 (+2 ms).
        assert_eq!(m.recover_ms, Some(1502));
        assert!(m.errors_by_status.is_empty());
    }

    #[test]
    fn router_detection_is_the_first_unhealthy_sample_of_a_target() {
        let s = vec![
            (900, vec![1]),
            (1000, vec![]),
            (1300, vec![2]),
            (1500, vec![1, 2]),
            (9000, vec![1]),
        ];
        assert_eq!(router_detect(&s, &[1], 1000, 5000), Some(500));
        assert_eq!(router_detect(&s, &[2], 1000, 5000), Some(300));
        assert_eq!(router_detect(&s, &[0], 1000, 5000), None);
        assert_eq!(router_detect(&s, &[], 1000, 5000), None);
    }

    #[test]
    fn table_has_a_row_per_scenario() {
        let (ws, owner, affected) = setup();
        let m = measure(
            &[o(1100, "a", Some(503)), o(1200, "a", Some(200))],
            &ws,
            &owner,
            &affected,
            1000,
            2000,
        );
        let mut sc = ScenarioReport::skipped("x", String::new());
        sc.skipped = None;
        sc.name = "kill-worker".into();
        sc.measures = m;
        let r = Report {
            command: "c".into(),
            started_at: "t".into(),
            fleet: serde_json::json!({}),
            scenarios: vec![
                sc,
                ScenarioReport::skipped("browser-crash", "no Chromium".into()),
            ],
            passed: true,
        };
        let t = table(&r);
        assert!(
            t.contains(
                "| kill-worker | PASS | 25% (1/4, targeted 2) | 0.10s / - | 0.20s | 1 / 0 | 0 / 0 |"
            ),
            "{t}"
        );
        assert!(t.contains("| browser-crash | skipped |"));
        assert_eq!(t.lines().count(), 4);
    }
}
