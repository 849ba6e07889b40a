//! Consul faults: the whole agent paused (short of fencing and beyond it) and the agent restarted
//! under a running fleet.

use super::*;

/// consul-outage: the agent hangs every request for `pause`, then resumes.
pub(super) async fn consul_outage(
    ctx: &Ctx,
    pause: Duration,
    beyond_fencing: bool,
) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let from = ctx.rec.now_ms();
    ctx.fleet
        .consul_fault("pause", serde_json::json!({"mode": "hang"}))
        .await
        .map_err(|e| e.to_string())?;
    let paused_at = Instant::now();
    // Prove the fault took effect: a KV read must not be answered while paused.
    let probe = ctx
        .fleet
        .http
        .get(format!(
            "{}/v1/kv/wafleet/shardmap",
            ctx.fleet.consul().map_err(|e| e.to_string())?
        ))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    let verified = probe.is_err();
    // The outage length is the scenario's parameter, not a synchronisation.
    tokio::time::sleep(pause.saturating_sub(paused_at.elapsed())).await;
    let resumed = ctx
        .fleet
        .consul_fault("resume", serde_json::json!({}))
        .await;
    if let Err(e) = resumed {
        // Make sure the agent does not stay paused whatever happened.
        let _ = ctx.fleet.consul_fault("clear", serde_json::json!({})).await;
        return Err(format!("resume: {e}"));
    }
    let (affected, shards) = if beyond_fencing {
        let mut all: Vec<u32> = owners.values().copied().collect();
        all.sort_unstable();
        all.dedup();
        (owners.keys().cloned().collect(), all)
    } else {
        (BTreeSet::new(), Vec::new())
    };
    let mut f = single(
        format!(
            "built-in Consul agent paused (hang) for {:.1}s ({} the fencing deadline {:.1}s), then resumed",
            pause.as_secs_f64(),
            if beyond_fencing {
                "longer than"
            } else {
                "shorter than"
            },
            (ctx.timing.session_ttl * 2 / 3).as_secs_f64()
        ),
        shards,
        affected,
        from,
    );
    if verified {
        f.notes
            .push("fault verified: a KV read during the pause got no answer".into());
    } else {
        f.violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: "the agent answered a KV read while paused: the fault did not take effect, the scenario proves nothing".into(),
            evidence: serde_json::json!({"probe": format!("{probe:?}")}),
        });
    }
    Ok(f)
}

/// consul-agent-restart: the local Consul agent restarts without leaving the cluster
/// (`leave_on_terminate = false`): every connection to it is refused for longer than the
/// workers' fencing deadline but shorter than the session TTL. The workers' sessions are
/// TTL-only and they renew through the agent's remote listener (another agent of the
/// datacenter, `WAFLEET_CONSUL_FALLBACK_ADDRS`), so none is fenced: every sample during the
/// outage shows every worker ready, unfenced, in the same term; no browser stops (the same
/// Chromium processes before and after); the same session holds every shard lock before and
/// after. During the outage no workspace may see an error (the routers keep their last table,
/// the workers serve). Once the agent is back, a worker whose TTL check lapsed during the
/// outage is unhealthy in the catalog until its next check pass, so requests after that point
/// may meet a short unavailability (the affected window).
pub(super) async fn consul_agent_restart(ctx: &Ctx) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let before = shard_holders(ctx).await?;
    let terms: BTreeMap<u32, (u64, Option<String>)> = ctx
        .fleet
        .worker_snaps()
        .await
        .into_iter()
        .map(|s| (s.shard, (s.term, s.session)))
        .collect();
    let browsers_before: BTreeSet<(u32, u64, String)> =
        crate::observe::scan_browsers(&ctx.fleet.data)
            .into_iter()
            .map(|b| (b.pid, b.start_time, b.profile))
            .collect();
    let ttl = ctx.timing.session_ttl;
    let fence = ttl * 2 / 3;
    let outage = fence + (ttl - fence) / 2;
    let from = ctx.rec.now_ms();
    ctx.fleet
        .consul_fault(
            "agent-restart",
            serde_json::json!({"ms": u64::try_from(outage.as_millis()).unwrap_or(u64::MAX), "leave": false}),
        )
        .await
        .map_err(|e| e.to_string())?;
    let down_at = Instant::now();
    let consul = ctx.fleet.consul().map_err(|e| e.to_string())?;
    let kv_answers = || async {
        ctx.fleet
            .http
            .get(format!("{consul}/v1/kv/wafleet/shardmap"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
    };
    // Prove the fault took effect: a request during the restart gets no answer.
    let probe = kv_answers().await;
    let verified = probe.is_err();
    let mut violations = Vec::new();
    let mut flagged: BTreeSet<(u32, &'static str)> = BTreeSet::new();
    let mut samples = 0u64;
    // Sample the workers until the agent answers again (with a deadline).
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    loop {
        let snaps = ctx.fleet.worker_snaps().await;
        samples += 1;
        for s in &snaps {
            let t_ms = ctx.rec.now_ms();
            let before = terms.get(&s.shard);
            let problems: [(bool, &'static str); 3] = [
                (s.fenced, "fenced"),
                (!s.ready, "not ready"),
                (
                    before.is_some_and(|(term, session)| *term != s.term || *session != s.session),
                    "in a new term",
                ),
            ];
            for (bad, what) in problems {
                if bad && flagged.insert((s.shard, what)) {
                    violations.push(Violation {
                        invariant: names::RECOVERED.into(),
                        t_ms,
                        what: format!(
                            "worker of shard {} was {what} during the agent restart",
                            s.shard
                        ),
                        evidence: serde_json::json!({"snap": s, "before": before}),
                    });
                }
            }
        }
        if down_at.elapsed() > outage && kv_answers().await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent did not answer again within {:?} of its restart",
                ctx.timing.recover_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let back = ctx.rec.now_ms();
    // Every shard lock held, by ready workers (with a deadline).
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    let after = loop {
        if let Ok(now) = shard_holders(ctx).await
            && now.len() >= before.len()
        {
            let snaps = ctx.fleet.worker_snaps().await;
            if snaps.len() >= ctx.fleet.workers().len()
                && snaps.iter().all(|s| s.ready && !s.fenced)
            {
                break now;
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the shard locks were not all held by ready workers {:?} after the agent restart",
                ctx.timing.recover_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let browsers_after: BTreeSet<(u32, u64, String)> =
        crate::observe::scan_browsers(&ctx.fleet.data)
            .into_iter()
            .map(|b| (b.pid, b.start_time, b.profile))
            .collect();
    let stopped: Vec<&String> = browsers_before
        .difference(&browsers_after)
        .map(|(_, _, profile)| profile)
        .collect();
    if !stopped.is_empty() {
        violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: format!(
                "{} browser(s) stopped across the agent restart",
                stopped.len()
            ),
            evidence: serde_json::json!({"profiles": stopped}),
        });
    }
    let mut all: Vec<u32> = owners.values().copied().collect();
    all.sort_unstable();
    all.dedup();
    let everyone: BTreeSet<String> = owners.keys().cloned().collect();
    let mut f = single(
        format!(
            "built-in Consul agent restarted without leaving: connections refused for {:.1}s (longer than the fencing deadline {:.1}s, shorter than the TTL {:.1}s); workers renew through the remote listener",
            outage.as_secs_f64(),
            fence.as_secs_f64(),
            ttl.as_secs_f64()
        ),
        all,
        everyone.clone(),
        from,
    );
    // No error during the outage; after it, the catalog may briefly hold a lapsed TTL check.
    f.windows = vec![(from, back, BTreeSet::new()), (back, u64::MAX, everyone)];
    f.violations = violations;
    if verified {
        f.notes
            .push("fault verified: a KV read during the restart got no answer".into());
    } else {
        f.violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: "the agent answered during its restart: the fault did not take effect".into(),
            evidence: serde_json::json!({"probe": format!("{probe:?}")}),
        });
    }
    for (shard, session) in &before {
        match after.get(shard) {
            Some(s) if s == session => {}
            other => f.violations.push(Violation {
                invariant: names::RECOVERED.into(),
                t_ms: ctx.rec.now_ms(),
                what: format!("shard {shard} did not keep its session across the agent restart"),
                evidence: serde_json::json!({"before": before.get(shard), "after": other}),
            }),
        }
    }
    if f.violations.is_empty() {
        f.notes.push(format!(
            "no worker fenced in {samples} samples during the outage, {} browser(s) kept, every shard kept its session: {}",
            browsers_after.len(),
            serde_json::json!(after)
        ));
    }
    Ok(f)
}
