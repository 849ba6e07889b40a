//! Faults at the fleet's edges: scaling out by one shard, a browser crash inside a worker, and the
//! webhook receiver going away.

use super::*;

/// scale-out: start worker N (as Nomad would), then `wafleet shards apply --count N+1`.
pub(super) async fn scale_out(ctx: &Ctx) -> Result<Fault, String> {
    let old = ctx.fleet.shard_map().await.map_err(|e| e.to_string())?;
    let n = old.shards.len() as u32;
    let old_owners = ctx.owners(&old);
    let log = ctx.log_dir.join(format!("worker-{n}.log"));
    let mut notes = vec![format!(
        "wafleet dev supervises a fixed set of workers: the suite started worker {n} itself with dev's flags (log {})",
        log.display()
    )];
    let w = ctx
        .fleet
        .start_worker(n, &log)
        .await
        .map_err(|e| format!("start worker {n}: {e}"))?;
    let from = ctx.rec.now_ms();
    let out = ctx
        .fleet
        .shards(&["apply", "--count", &(n + 1).to_string()])
        .await
        .map_err(|e| e.to_string())?;
    let new = ctx.fleet.shard_map().await.map_err(|e| e.to_string())?;
    let new_owners = ctx.owners(&new);
    let moved: BTreeSet<String> = new_owners
        .iter()
        .filter(|(ws, k)| old_owners.get(*ws) != Some(k))
        .map(|(ws, _)| ws.clone())
        .collect();
    notes.push(format!(
        "map v{} → v{}: {} of {} workspaces moved (expected about 1/{})",
        old.version,
        new.version,
        moved.len(),
        ctx.workspaces.len(),
        n + 1
    ));
    let mut violations = Vec::new();
    // Only the planned workspaces may move, and only to the new shard.
    for ws in &moved {
        if new_owners.get(ws) != Some(&n) {
            violations.push(Violation {
                invariant: names::RECOVERED.into(),
                t_ms: from,
                what: format!("workspace {ws} moved between old shards on scale-out"),
                evidence: serde_json::json!({"old": old_owners.get(ws), "new": new_owners.get(ws)}),
            });
        }
    }
    ctx.wait_healthy(ctx.rec.now_ms(), ctx.timing.recover_timeout)
        .await?;
    // After the move, every moved workspace must be served by the new shard.
    let outcomes = ctx.rec.outcomes();
    for ws in &moved {
        if let Some(last) = outcomes.iter().rev().find(|o| &o.ws == ws && o.ok())
            && last.shard != Some(n)
        {
            violations.push(Violation {
                invariant: names::RECOVERED.into(),
                t_ms: last.t_ms,
                what: format!(
                    "moved workspace {ws} answered by shard {:?}, not {n}",
                    last.shard
                ),
                evidence: serde_json::json!({"request": last}),
            });
        }
    }
    let summary = out
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if !summary.is_empty() {
        notes.push(format!("wafleet shards apply: {summary}"));
    }
    Ok(Fault {
        action: format!(
            "started worker shard {n} pid {} at {}; shards apply --count {}",
            w.pid,
            w.addr,
            n + 1
        ),
        shards: vec![n],
        windows: vec![(from, u64::MAX, moved.clone())],
        affected: moved,
        violations,
        notes,
    })
}

/// browser-crash: SIGKILL the Chromium of one session on `shard`.
pub(super) async fn browser_crash(ctx: &Ctx, shard: u32) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let ws = ctx
        .of_shards(&owners, &[shard])
        .into_iter()
        .next()
        .ok_or("no workspace on the victim shard")?;
    let profile = ctx
        .fleet
        .data
        .join("workspaces")
        .join(&ws)
        .join(&ctx.session)
        .join("profile")
        .display()
        .to_string();
    let procs = crate::observe::scan_browsers(&ctx.fleet.data);
    let p = procs
        .iter()
        .find(|p| p.profile.trim_end_matches('/') == profile)
        .ok_or_else(|| format!("no Chromium found for profile {profile}"))?;
    let from = ctx.rec.now_ms();
    fleet::signal(p.pid, "KILL")
        .await
        .map_err(|e| e.to_string())?;
    // A new browser on the same profile.
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    loop {
        let now = crate::observe::scan_browsers(&ctx.fleet.data);
        if now
            .iter()
            .any(|q| q.profile.trim_end_matches('/') == profile && q.pid != p.pid)
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("no new Chromium on {profile} within the deadline"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(single(
        format!("SIGKILL Chromium pid {} of {ws}/{}", p.pid, ctx.session),
        vec![shard],
        [ws].into(),
        from,
    ))
}

/// webhook-outage: the receiver answers 503 for a while, then comes back; no API error at all.
pub(super) async fn webhook_outage(ctx: &Ctx) -> Result<Fault, String> {
    let from = ctx.rec.now_ms();
    ctx.receiver.set_up(false);
    tokio::time::sleep(ctx.timing.webhook_outage).await;
    ctx.receiver.set_up(true);
    Ok(single(
        format!(
            "webhook receiver answered 503 for {:.0}s, then 200",
            ctx.timing.webhook_outage.as_secs_f64()
        ),
        Vec::new(),
        BTreeSet::new(),
        from,
    ))
}
