//! Network partitions: a worker cut off from its Consul agent, either in its own network namespace
//! (the real thing, needs root) or by pausing the agent's answers to it, and the checks that no
//! second session ever holds its shard.

use super::*;

/// Shard → session holding its lock.
pub(super) async fn shard_holders(ctx: &Ctx) -> Result<BTreeMap<String, String>, String> {
    ctx.fleet
        .lock_holders("wafleet/locks/shards/")
        .await
        .ok_or_else(|| "consul did not answer".to_string())
}

/// partition-worker in the selected mode; the action line starts with the mode.
pub(super) async fn partition(ctx: &Ctx, shard: u32) -> Result<Fault, String> {
    match &ctx.partition {
        Partition::Netns(link) => {
            let mut f = partition_netns(ctx, shard, link).await?;
            f.action = format!("mode netns: {}", f.action);
            Ok(f)
        }
        Partition::Agent { reason } => {
            let mut f = partition_agent(ctx, shard).await?;
            f.action = format!("mode agent: {}", f.action);
            if let Some(r) = reason {
                f.notes.push(format!(
                    "partition mode agent (the agent's drop-session fault), not netns: {r}"
                ));
            }
            Ok(f)
        }
    }
}

/// The victim's Chromium browsers (by profile) in `/proc`.
pub(super) fn browsers_of(ctx: &Ctx, workspaces: &BTreeSet<String>) -> usize {
    let profiles: BTreeSet<String> = workspaces
        .iter()
        .map(|ws| {
            ctx.fleet
                .data
                .join("workspaces")
                .join(ws)
                .join(&ctx.session)
                .join("profile")
                .display()
                .to_string()
        })
        .collect();
    crate::observe::scan_browsers(&ctx.fleet.data)
        .iter()
        .filter(|p| profiles.contains(p.profile.trim_end_matches('/')))
        .count()
}

/// Text appended to `path` since byte `offset`.
pub(super) fn log_since(path: &std::path::Path, offset: u64) -> String {
    use std::io::{Read, Seek};
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(std::io::SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// The workspaces `shard` owns now and the Consul session holding its shard lock: what a
/// partition cuts off and what must be replaced.
pub(super) async fn shard_and_holder(
    ctx: &Ctx,
    shard: u32,
) -> Result<(BTreeSet<String>, String), String> {
    let owners = current_owners(ctx).await?;
    let affected = ctx.of_shards(&owners, &[shard]);
    let holders = ctx
        .fleet
        .lock_holders("wafleet/locks/shards/")
        .await
        .ok_or("consul did not answer")?;
    let session = holders
        .get(&shard.to_string())
        .cloned()
        .ok_or_else(|| format!("shard {shard}'s lock has no holder"))?;
    Ok((affected, session))
}

/// The partition's recovery failed: the shard never got a lock holder other than `session`.
pub(super) fn no_new_session(t_ms: u64, shard: u32, session: &str) -> Violation {
    Violation {
        invariant: names::RECOVERED.into(),
        t_ms,
        what: format!(
            "shard {shard} never re-acquired its lock with a new session after the partition"
        ),
        evidence: serde_json::json!({"old_session": session}),
    }
}

/// partition-worker, netns mode: the victim runs inside the namespace; its link goes down.
/// Expected: (a) it cannot renew, fences itself (seen from the host: its Chromium browsers
/// leave `/proc`, its log says `FENCED`) and its old session is invalidated after the TTL, so
/// the shard lock is free; (b) only then the link comes back (the fault outlasts the fencing
/// deadline); (c) it re-acquires the shard lock with a new session and restores every
/// session (the frame checks WORKING without a QR).
pub(super) async fn partition_netns(
    ctx: &Ctx,
    shard: u32,
    link: &crate::netns::Link,
) -> Result<Fault, String> {
    let (affected, session) = shard_and_holder(ctx, shard).await?;
    let worker = ctx
        .fleet
        .workers()
        .into_iter()
        .find(|w| w.shard == shard)
        .ok_or_else(|| format!("no worker for shard {shard}"))?;
    if !worker.addr.starts_with(&format!("{}:", link.ns_ip)) {
        return Err(format!(
            "shard {shard}'s worker listens on {}, not inside namespace {} ({}): the victim must start there",
            worker.addr, link.name, link.ns_ip
        ));
    }
    let log = ctx
        .fleet
        .data
        .join("dev")
        .join("logs")
        .join(format!("worker-{shard}.log"));
    let log_offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let browsers_before = browsers_of(ctx, &affected);
    let from = ctx.rec.now_ms();
    let cut_at = Instant::now();
    link.cut().map_err(|e| e.to_string())?;
    // Whatever ends this scenario (an error, the run's cut-off dropping it), the link comes back.
    let guard = HealOnDrop(Some(link));
    tracing::info!(shard, namespace = %link.name, "link cut");
    let deadline = cut_at + ctx.timing.recover_timeout;
    let mut violations = Vec::new();
    let mut notes = Vec::new();

    // (a) The old session must go: the shard lock is released when the agent invalidates it.
    let mut browsers_gone_ms = None;
    let mut released_ms = None;
    let mut browsers_at_release = None;
    while Instant::now() < deadline {
        let n = browsers_of(ctx, &affected);
        if n == 0 && browsers_gone_ms.is_none() {
            browsers_gone_ms = Some(ctx.rec.now_ms());
        }
        let h = ctx.fleet.lock_holders("wafleet/locks/shards/").await;
        if let Some(h) = h
            && h.get(&shard.to_string()) != Some(&session)
        {
            released_ms = Some(ctx.rec.now_ms());
            browsers_at_release = Some(browsers_of(ctx, &affected));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fenced_logged = log_since(&log, log_offset).contains("FENCED");
    // (b) Heal, whatever happened: the link must not stay down.
    let healed = guard.heal();
    let heal_ms = ctx.rec.now_ms();
    let cut_secs = cut_at.elapsed().as_secs_f64();
    if let Err(e) = healed {
        return Err(format!("heal ({}): {e}", link.host_if));
    }
    tracing::info!(shard, secs = cut_secs, "link healed");
    // The namespace side answers again (any HTTP answer: it may still be not ready).
    let reach_deadline = Instant::now() + Duration::from_secs(30).min(ctx.timing.recover_timeout);
    let reachable = loop {
        let ok = ctx
            .fleet
            .http
            .get(format!("http://{}/healthz", worker.addr))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok();
        if ok || Instant::now() >= reach_deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !reachable {
        violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: format!(
                "the namespaced worker {} did not answer /healthz within 30 s of the link coming back",
                worker.addr
            ),
            evidence: serde_json::json!({"namespace": link.name, "host_if": link.host_if}),
        });
    }
    // (c) A new session holds the shard lock.
    let acquire_deadline = Instant::now() + ctx.timing.recover_timeout;
    let new_session = loop {
        let h = ctx.fleet.lock_holders("wafleet/locks/shards/").await;
        if let Some(s) = h.as_ref().and_then(|h| h.get(&shard.to_string()))
            && *s != session
        {
            break Some(s.clone());
        }
        if Instant::now() >= acquire_deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match released_ms {
        Some(t) => notes.push(format!(
            "old session {session} released the shard lock {:.1}s after the cut; link down {cut_secs:.1}s",
            (t - from) as f64 / 1000.0
        )),
        None => violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: heal_ms,
            what: format!(
                "shard {shard}'s old session {session} still held the shard lock {cut_secs:.0}s after the cut"
            ),
            evidence: serde_json::json!({"old_session": session}),
        }),
    }
    if new_session.is_none() {
        violations.push(no_new_session(ctx.rec.now_ms(), shard, &session));
    }
    // Its lock passes on at the release: a browser of it still running then could overlap
    // with the next holder's.
    if let Some(n) = browsers_at_release.filter(|n| *n > 0) {
        violations.push(Violation {
            invariant: names::ONE_RUNNER.into(),
            t_ms: released_ms.unwrap_or(heal_ms),
            what: format!(
                "{n} Chromium browser(s) of the partitioned shard {shard} still ran when its old session released the shard lock"
            ),
            evidence: serde_json::json!({"old_session": session, "browsers_before": browsers_before}),
        });
    }
    // Fenced before the lock could pass: its browsers were gone when the lock was released
    // (with real sessions), or its log says so.
    let fenced = fenced_logged || (browsers_before > 0 && browsers_at_release == Some(0));
    if fenced {
        notes.push(format!(
            "the partitioned worker fenced itself: log FENCED {fenced_logged}; its Chromium browsers {browsers_before} before the cut, {} when the lock was released (all gone {:.1}s after the cut)",
            browsers_at_release.map_or("-".to_owned(), |n| n.to_string()),
            browsers_gone_ms.map_or(f64::NAN, |t| (t - from) as f64 / 1000.0)
        ));
    } else {
        violations.push(Violation {
            invariant: names::ONE_RUNNER.into(),
            t_ms: heal_ms,
            what: format!(
                "worker of shard {shard} was never seen fenced while cut off (no FENCED in its log, browsers {browsers_before} → {browsers_at_release:?})"
            ),
            evidence: serde_json::json!({"old_session": session, "log": log.display().to_string()}),
        });
    }
    let mut f = single(
        format!(
            "link {} of namespace {} down for {cut_secs:.1}s (worker shard {shard} pid {} at {}, {} workspaces); old session {session}, new session {}",
            link.host_if,
            link.name,
            worker.pid,
            worker.addr,
            affected.len(),
            new_session.as_deref().unwrap_or("none")
        ),
        vec![shard],
        affected,
        from,
    );
    f.violations = violations;
    f.notes = notes;
    Ok(f)
}

/// Heals the link when dropped before [`HealOnDrop::heal`].
pub(super) struct HealOnDrop<'a>(Option<&'a crate::netns::Link>);

impl HealOnDrop<'_> {
    pub(super) fn heal(mut self) -> Result<(), crate::netns::NetnsError> {
        self.0.take().map_or(Ok(()), |l| l.heal())
    }
}

impl Drop for HealOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.0.take()
            && let Err(e) = l.heal()
        {
            tracing::error!(error = %e, "cannot bring the partitioned link back up");
        }
    }
}

/// partition-worker, agent mode: the agent drops every request carrying the worker's session
/// id, so its renewals fail; it must fence, then come back with a new session.
pub(super) async fn partition_agent(ctx: &Ctx, shard: u32) -> Result<Fault, String> {
    let (affected, session) = shard_and_holder(ctx, shard).await?;
    let from = ctx.rec.now_ms();
    ctx.fleet
        .consul_fault("drop", serde_json::json!({"session": session}))
        .await
        .map_err(|e| e.to_string())?;
    // The worker must leave its session behind: a new session holds the shard lock.
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    let mut violations = Vec::new();
    let mut saw_fenced = false;
    let new_session = loop {
        let h = ctx.fleet.lock_holders("wafleet/locks/shards/").await;
        if let Some(s) = h.as_ref().and_then(|h| h.get(&shard.to_string()))
            && *s != session
        {
            break Some(s.clone());
        }
        if let Some(w) = ctx.fleet.workers().into_iter().find(|w| w.shard == shard)
            && let Some(snap) = ctx.fleet.worker_snap(&w).await
        {
            saw_fenced |= snap.fenced || !snap.ready;
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cleared = ctx.fleet.consul_fault("clear", serde_json::json!({})).await;
    if new_session.is_none() {
        violations.push(no_new_session(ctx.rec.now_ms(), shard, &session));
    }
    cleared.map_err(|e| e.to_string())?;
    let mut f = single(
        format!(
            "agent drops shard {shard}'s session {session} ({} workspaces); new session {}",
            affected.len(),
            new_session.as_deref().unwrap_or("none")
        ),
        vec![shard],
        affected,
        from,
    );
    if saw_fenced {
        f.notes
            .push("the partitioned worker was seen fenced / not ready, as it must".into());
    } else {
        violations.push(Violation {
            invariant: names::ONE_RUNNER.into(),
            t_ms: ctx.rec.now_ms(),
            what: format!(
                "worker of shard {shard} was never seen fenced while its session {session} could not be renewed"
            ),
            evidence: serde_json::json!({"old_session": session, "new_session": new_session}),
        });
    }
    f.violations = violations;
    Ok(f)
}
