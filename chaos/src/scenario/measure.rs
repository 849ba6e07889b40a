//! One scenario measured: traffic before, the fault injected, detection and recovery timed, the
//! unaffected shards checked, and the report it all becomes.

use super::*;

/// The common frame: healthy → snapshot → fault → healthy again → checks.
pub(super) async fn one<'a, F, Fut>(ctx: &'a Ctx, name: &str, inject: F) -> ScenarioReport
where
    F: FnOnce(&'a Ctx) -> Fut,
    Fut: std::future::Future<Output = Result<Fault, String>> + 'a,
{
    tracing::info!(scenario = name, "waiting for a healthy fleet");
    let mut rep = ScenarioReport::skipped(name, String::new());
    rep.skipped = None;
    let pre = ctx.rec.now_ms();
    if let Err(e) = ctx.wait_healthy(pre, ctx.timing.recover_timeout).await {
        rep.passed = false;
        rep.notes
            .push(format!("fleet not healthy before the fault: {e}"));
        return rep;
    }
    let before =
        traffic::session_table(&ctx.target, &ctx.workspaces, Duration::from_secs(10)).await;
    let map = match ctx.fleet.shard_map().await {
        Ok(m) => m,
        Err(e) => {
            rep.passed = false;
            rep.notes.push(format!("cannot read the shard map: {e}"));
            return rep;
        }
    };
    let owners = ctx.owners(&map);
    let fault_ms = ctx.rec.now_ms();
    rep.fault_ms = fault_ms;
    tracing::info!(scenario = name, "injecting");
    let fault = inject(ctx).await;
    let mut fault = match fault {
        Ok(f) => f,
        Err(e) => {
            rep.passed = false;
            rep.notes.push(format!("scenario did not complete: {e}"));
            rep.end_ms = ctx.rec.now_ms();
            Fault {
                action: String::new(),
                shards: Vec::new(),
                windows: vec![(fault_ms, rep.end_ms, owners.keys().cloned().collect())],
                affected: owners.keys().cloned().collect(),
                violations: Vec::new(),
                notes: Vec::new(),
            }
        }
    };
    // Healthy again: every workspace answers 200 with its sessions WORKING.
    let healed = ctx
        .wait_healthy(ctx.rec.now_ms(), ctx.timing.recover_timeout)
        .await;
    let end_ms = ctx.rec.now_ms();
    rep.end_ms = end_ms;
    rep.action = fault.action.clone();
    rep.affected_shards = fault.shards.clone();
    rep.notes.append(&mut fault.notes);
    let after = traffic::session_table(&ctx.target, &ctx.workspaces, Duration::from_secs(10)).await;
    let outcomes = ctx.rec.outcomes();
    // Detection and recovery count from the injection itself (scale-out first starts a
    // worker); the invariants keep the wider window from before the injection.
    let injected_ms = fault
        .windows
        .iter()
        .map(|w| w.0)
        .min()
        .unwrap_or(fault_ms)
        .max(fault_ms);
    rep.fault_ms = injected_ms;
    if injected_ms > fault_ms {
        // Before the injection proper (e.g. while scale-out starts a worker) nothing may fail.
        fault
            .windows
            .push((fault_ms, injected_ms.saturating_sub(1), BTreeSet::new()));
    }
    rep.measures = report::measure(
        &outcomes,
        &ctx.workspaces,
        &owners,
        &fault.affected,
        injected_ms,
        end_ms,
    );
    rep.measures.router_detect_ms = ctx
        .obs
        .router_unhealthy
        .lock()
        .ok()
        .and_then(|v| report::router_detect(&v, &fault.shards, injected_ms, end_ms));

    // Invariants.
    let mut inv = Vec::new();
    let mut unaffected = Vec::new();
    let mut checked = 0;
    // A request sent just before the injection and answered after it was hit by the fault:
    // on a workspace of the faulted shards it is the fault's, not an unaffected error.
    let mut attributed = check::attribute_in_flight(&outcomes, injected_ms, &fault.affected);
    // The same at the start of every window: in a rolling restart a request sent while shard k
    // was being checked and answered after shard k+1's SIGTERM belongs to shard k+1.
    for (from, _, affected) in &fault.windows {
        attributed = check::attribute_in_flight(&attributed, *from, affected);
    }
    for (from, to, affected) in &fault.windows {
        checked += attributed
            .iter()
            .filter(|o| o.t_ms >= *from && o.t_ms <= *to && !affected.contains(&o.ws))
            .count();
        unaffected.extend(check::unaffected_errors(&attributed, affected, *from, *to));
    }
    let failed = unaffected.len();
    unaffected.truncate(20);
    inv.push(if checked == 0 {
        InvariantResult::vacuous(
            names::UNAFFECTED_NO_ERROR,
            "the fault targets every workspace: no unaffected request to check".into(),
        )
    } else {
        InvariantResult::checked(
            names::UNAFFECTED_NO_ERROR,
            format!(
                "{checked} requests on unaffected workspaces, {failed} failed{}",
                if failed > 20 {
                    " (first 20 kept as evidence)"
                } else {
                    ""
                }
            ),
            unaffected,
        )
    });
    let (rounds, pairs, holders) = ctx.obs.rounds_between(fault_ms, end_ms);
    let mut runner_v = ctx
        .obs
        .violations_between(names::ONE_RUNNER, fault_ms, end_ms);
    runner_v.extend(
        fault
            .violations
            .iter()
            .filter(|x| x.invariant == names::ONE_RUNNER)
            .cloned(),
    );
    let detail = format!(
        "{rounds} sampling rounds: {pairs} confirmed (workspace, worker) runner observations against {holders} KV lock holders{}",
        if ctx.caps.real_sessions {
            ""
        } else {
            " (placeholder sessions count as runners)"
        }
    );
    inv.push(if pairs == 0 && runner_v.is_empty() {
        InvariantResult::vacuous(names::ONE_RUNNER, detail)
    } else {
        InvariantResult::checked(names::ONE_RUNNER, detail, runner_v)
    });
    let browsers = ctx
        .obs
        .max_browsers
        .load(std::sync::atomic::Ordering::Relaxed);
    let chromium = ctx
        .obs
        .violations_between(names::ONE_CHROMIUM, fault_ms, end_ms);
    inv.push(if browsers > 0 || !chromium.is_empty() {
        InvariantResult::checked(
            names::ONE_CHROMIUM,
            format!("/proc sampled continuously, up to {browsers} browsers seen at once"),
            chromium,
        )
    } else {
        InvariantResult::vacuous(
            names::ONE_CHROMIUM,
            "/proc sampled continuously, but no Chromium runs under the data dir (placeholder sessions)".into(),
        )
    });
    let seen: Vec<_> = outcomes
        .iter()
        .filter(|o| o.t_ms >= fault_ms && o.t_ms <= end_ms)
        .cloned()
        .collect();
    let working = before.values().filter(|s| s.status == "WORKING").count();
    let restored = check::sessions_restored(end_ms, &before, &after, &seen);
    let detail = format!(
        "{working} sessions WORKING before; {}",
        if ctx.caps.real_sessions {
            "status, phone and no new QR checked"
        } else {
            "status checked (placeholder sessions never show a QR)"
        }
    );
    inv.push(if working == 0 {
        InvariantResult::vacuous(names::SESSIONS_RESTORED, detail)
    } else {
        InvariantResult::checked(names::SESSIONS_RESTORED, detail, restored)
    });
    if ctx.caps.sends {
        let (tally, v) = ctx
            .settle_messages(fault_ms, end_ms, ctx.timing.recover_timeout)
            .await;
        inv.push(InvariantResult::checked(
            names::NO_MESSAGE_LOST,
            format!("{} messages accepted with 202", tally.accepted),
            v,
        ));
        rep.messages = Some(tally);
    } else {
        inv.push(InvariantResult::not_applicable(
            names::NO_MESSAGE_LOST,
            "the fleet does not accept sends yet (POST …/messages is not routed)".into(),
        ));
    }
    if ctx.caps.webhooks && ctx.caps.sends {
        let (tally, v) = ctx
            .settle_webhooks(fault_ms, end_ms, ctx.timing.recover_timeout)
            .await;
        inv.push(InvariantResult::checked(
            names::NO_WEBHOOK_LOST,
            format!("{} message events expected", tally.expected),
            v,
        ));
        rep.webhooks = Some(tally);
    } else {
        inv.push(InvariantResult::not_applicable(
            names::NO_WEBHOOK_LOST,
            if ctx.caps.webhooks {
                "no sends, so no message events to account for".into()
            } else {
                "no webhook reached the receiver after session creation: webhooks not wired".into()
            },
        ));
    }
    let mut rec_v: Vec<Violation> = fault
        .violations
        .iter()
        .filter(|x| x.invariant != names::ONE_RUNNER)
        .cloned()
        .collect();
    if let Err(e) = &healed {
        rec_v.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: end_ms,
            what: e.clone(),
            evidence: serde_json::json!({"not_recovered": rep.measures.not_recovered}),
        });
    }
    inv.push(InvariantResult::checked(
        names::RECOVERED,
        format!("deadline {:?}", ctx.timing.recover_timeout),
        rec_v,
    ));
    let free = ctx
        .obs
        .free_lock_runs
        .lock()
        .map(|v| {
            v.iter()
                .filter(|(t, _)| *t >= fault_ms && *t <= end_ms)
                .count()
        })
        .unwrap_or(0);
    if free > 0 {
        rep.notes.push(format!(
            "{free} sample(s) saw a workspace running with no lock holder (allowed for two sampling intervals; longer fails the run)"
        ));
    }
    rep.passed = rep.passed && inv.iter().all(InvariantResult::held);
    rep.invariants = inv;
    for i in rep.invariants.iter().filter(|i| !i.held()) {
        for v in &i.violations {
            eprintln!(
                "{} [{}] scenario {} t={}ms: {}\n  evidence: {}",
                if name == "control" {
                    "EXPECTED VIOLATION (negative control)"
                } else {
                    "VIOLATION"
                },
                i.name,
                name,
                v.t_ms,
                v.what,
                v.evidence
            );
        }
    }
    rep
}

/// A fault with one window open until the scenario ends (`u64::MAX`: the outcomes are read
/// at the end of the scenario, so nothing later is in them).
pub(super) fn single(
    action: String,
    shards: Vec<u32>,
    affected: BTreeSet<String>,
    from: u64,
) -> Fault {
    Fault {
        action,
        shards,
        windows: vec![(from, u64::MAX, affected.clone())],
        affected,
        violations: Vec::new(),
        notes: Vec::new(),
    }
}
